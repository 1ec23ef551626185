"""Benchmark of the LMRC candidate proposer (RCP) on redocred-small.

Two steps, each in its own process so peak memory is measured per step:

    # train (train = first 400 docs of dev_revised.json, dev = last 100), keep the best epoch,
    # choose the threshold on dev; writes <output>/model-best, metrics.json, bench_train.json
    python bench/bench_proposer.py train --output /work/models/proposer-minilm-run \\
        --training.epochs 3 --training.encoder_lr 5e-5

    # inference through the spaCy component on the dev docs; prints the BENCHMARKS.md rows
    python bench/bench_proposer.py predict --model /work/models/proposer-minilm-run/model-best

Any ``--section.key value`` after ``train --output X`` overrides configs/proposer.cfg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

# on a CPU shared with other jobs, spinning OpenMP threads slow every job several times over
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "redocred" / "dev_revised.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch threads {__import__('torch').get_num_threads()}")


def run_train(output: Path, overrides: list[str]) -> dict:
    from spacy.cli._util import parse_config_overrides

    from spacy_lmrc.proposer.training import load_config, train_proposer

    parsed = parse_config_overrides(overrides)
    config = load_config(ROOT / "configs" / "proposer.cfg", parsed)
    started = time.perf_counter()
    metrics = train_proposer(config, output)
    wall = time.perf_counter() - started
    history = metrics["history"]
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": machine(),
        "overrides": parsed,
        "wall_seconds": wall,
        "epochs_run": len(history),
        "train_seconds_per_epoch": [h["train_seconds"] for h in history],
        "dev_eval_seconds": [h["eval_seconds"] for h in history],
        "peak_rss_mb": peak_rss_mb(),
        "metrics": metrics,
    }
    (output / "bench_train.json").write_text(json.dumps(result, indent=2))
    return result


def run_predict(model: Path, batch_size: int, out: Path | None) -> dict:
    import spacy
    from spacy.training import Example

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.corpus.readers import input_copy
    from spacy_lmrc.metrics.scorers import score_candidates

    nlp = spacy.blank("en")
    refs = list(read_docred(DATA, nlp.vocab, last=100))
    started = time.perf_counter()
    nlp.add_pipe("lmrc_candidate_proposer", config={"model": str(model), "batch_size": batch_size})
    proposer = nlp.get_pipe("lmrc_candidate_proposer")
    threshold = proposer.threshold  # loads the model now, so loading is timed apart
    load_seconds = time.perf_counter() - started
    docs = [input_copy(d) for d in refs]
    started = time.perf_counter()
    docs = list(nlp.pipe(docs))
    seconds = time.perf_counter() - started
    scores = score_candidates([Example(d, r) for d, r in zip(docs, refs)])
    proposer.threshold_override = 0.5
    docs05 = list(proposer.pipe([input_copy(d) for d in refs]))
    scores05 = score_candidates([Example(d, r) for d, r in zip(docs05, refs)])
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": machine(),
        "dev_docs": len(refs),
        "threshold": threshold,
        "load_seconds": load_seconds,
        "predict_seconds": seconds,
        "docs_per_second": len(refs) / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "scores_at_threshold": scores,
        "scores_at_0.5": scores05,
    }
    if out:
        out.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    train = sub.add_parser("train")
    train.add_argument("--output", type=Path, required=True)
    predict = sub.add_parser("predict")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--out", type=Path, default=None)
    args, rest = parser.parse_known_args()
    if args.step == "train":
        result = run_train(args.output, rest)
        result.pop("metrics")
    else:
        if rest:
            parser.error(f"unknown arguments {rest}")
        result = run_predict(args.model, args.batch_size, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
