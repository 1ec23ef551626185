"""Extraction over a corpus: documents per second in one process, with ``--n-process`` workers
and on a local Ray runtime with the same number of actors, and whether all three write the same
records.

The documents are the last ``--docs`` of a DocRED file, given as DocRED documents (the pipeline
uses their entities: LMRC on gold entities) or, with ``--text``, as plain text (a raw-text
pipeline finds its own). Every run starts from an empty output, and every time includes loading
the pipeline (once in process, where nlp.pipe forks its workers from the loaded pipeline; in
every actor on Ray) and, for Ray, starting the local runtime.

    python bench/bench_extract.py training/lmrc assets/redocred/dev_revised.json --docs 20 \
        --workers 2 --out metrics/bench_extract.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from spacy.vocab import Vocab  # noqa: E402

from spacy_lmrc.corpus.io import load_json_records  # noqa: E402
from spacy_lmrc.extraction import (  # noqa: E402
    DocumentSource,
    ResumableJsonl,
    extract,
    load_pipeline,
)


def write_corpus(docred: Path, n_docs: int, text: bool, folder: Path) -> Path:
    """The last ``n_docs`` documents of ``docred`` as a DocRED list, or as ``{"id", "title",
    "text"}`` JSONL (tokens joined by spaces)."""
    records = load_json_records(docred)[-n_docs:]
    if not text:
        path = folder / "corpus.json"
        path.write_text(json.dumps(records))
        return path
    path = folder / "corpus.jsonl"
    with path.open("w") as handle:
        for i, record in enumerate(records):
            words = " ".join(token for sent in record["sents"] for token in sent)
            handle.write(json.dumps({"id": str(i), "title": record["title"], "text": words})
                         + "\n")
    return path


def run_in_process(pipeline: str, corpus: Path, output: Path, n_process: int,
                   batch_size: int) -> float:
    """Seconds for ``extract`` over ``corpus`` with ``n_process`` processes, loading the
    pipeline included."""
    start = time.perf_counter()
    nlp = load_pipeline(pipeline)
    writer = ResumableJsonl(output)
    for _ in extract(nlp, DocumentSource(corpus, nlp.vocab), writer.write, batch_size=batch_size,
                     n_process=n_process, progress=False):
        pass
    writer.close()
    return time.perf_counter() - start


def run_on_ray(pipeline: str, corpus: Path, output: Path, actors: int, batch_size: int,
               shard_size: int) -> float:
    """Seconds for ``extract_on_ray`` on a local runtime of ``actors`` CPUs, its start and
    every actor's loading of the pipeline included."""
    import ray

    from spacy_lmrc.ray_extraction import extract_on_ray

    start = time.perf_counter()
    ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False)
    try:
        extract_on_ray(pipeline, DocumentSource(corpus, Vocab()), output, actors=actors,
                       batch_size=batch_size, shard_size=shard_size)
    finally:
        ray.shutdown()
    return time.perf_counter() - start


def records(path: Path) -> list[str]:
    """The sorted lines of a JSONL file or of a folder's shards."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return sorted(line for file in files for line in file.read_text().splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("docred", type=Path)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--text", action="store_true", help="plain text, not DocRED documents")
    parser.add_argument("--workers", type=int, default=2, help="processes, and Ray actors")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = write_corpus(args.docred, args.docs, args.text, folder)
        runs: dict[str, Any] = {}
        outputs = {"one process": folder / "one.jsonl",
                   f"{args.workers} processes": folder / "many.jsonl",
                   f"ray, {args.workers} actors": folder / "shards"}
        for name, output in outputs.items():
            if name == "one process":
                seconds = run_in_process(args.pipeline, corpus, output, 1, args.batch_size)
            elif name.startswith("ray"):
                seconds = run_on_ray(args.pipeline, corpus, output, args.workers,
                                     args.batch_size, -(-args.docs // args.workers))
            else:
                seconds = run_in_process(args.pipeline, corpus, output, args.workers,
                                         args.batch_size)
            runs[name] = {"seconds": round(seconds, 2), "docs_per_s": round(args.docs / seconds, 3)}
            print(f"{name:>20}: {seconds:7.1f} s, {args.docs / seconds:.3f} docs/s", flush=True)
        reference = records(outputs["one process"])
        same = {name: records(output) == reference for name, output in outputs.items()}
        print(f"same records as one process: {same}")
    result = {"pipeline": args.pipeline, "corpus": f"{args.docred}, last {args.docs}",
              "input": "text" if args.text else "docred", "batch_size": args.batch_size,
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                          "torch_threads": torch.get_num_threads()},
              "runs": runs, "same_records": same}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
