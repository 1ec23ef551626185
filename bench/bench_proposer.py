"""Benchmark of the LMRC candidate proposer (RCP) on redocred-small.

Two steps, each in its own process so peak memory is measured per step:

    # train (train = first 400 docs of dev_revised.json, dev = last 100), keep the best epoch,
    # choose the threshold on dev; writes <output>/model-best, metrics.json, bench_train.json
    python bench/bench_proposer.py train --output ../models/proposer-minilm-run \\
        --training.epochs 3 --training.encoder_lr 5e-5

    # inference through the spaCy component on the dev docs; prints the BENCHMARKS.md rows
    python bench/bench_proposer.py predict --model ../models/proposer-minilm-run/model-best

    # the markdown tables of BENCHMARKS.md from the two JSON files
    python bench/bench_proposer.py report \
        --train ../models/proposer-minilm-run/bench_train.json \
        --predict ../models/proposer-minilm-run/bench_predict.json

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
        "batch_size": batch_size,
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


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['threshold']:.3f} | {100 * m['precision']:.2f} | "
            f"{100 * m['recall']:.2f} | {100 * m['f1']:.2f} | {m['kept']:,} | "
            f"{100 * m['kept_fraction']:.2f} |")


def report(train_json: Path, predict_json: Path) -> str:
    """Markdown tables: dev pair metrics, recall vs kept fraction, cost."""
    train = json.loads(train_json.read_text())
    pred = json.loads(predict_json.read_text())
    m = train["metrics"]
    head = ("| | threshold | pair P | pair R | pair F1 | pairs kept | kept % of space |\n"
            "|---|---|---|---|---|---|---|")
    lines = [f"Dev: {m['dev_docs']} docs, {m['dev_pairs']:,} candidate pairs, "
             f"{m['dev_relation_pairs']:,} relation pairs; best epoch {m['best_epoch']} of "
             f"{train['epochs_run']}.", "", head,
             _row("P(relation) > 0.5 (LMRC)", m["at_0.5"]),
             _row("threshold chosen on dev", m["at_threshold"]), "",
             "Recall against the fraction of the candidate space kept (dev):", "", head]
    lines += [_row("", r) for r in m["recall_vs_kept"]]
    epochs = ", ".join(f"{s:.0f}" for s in train["train_seconds_per_epoch"])
    history = "; ".join(f"epoch {h['epoch']}: loss {h['loss']:.4f}, "
                        f"dev F1@0.5 {100 * h['dev_f1']:.2f}" for h in m["history"])
    s05, st = pred["scores_at_0.5"], pred["scores_at_threshold"]
    lines += ["", "| cost | value |", "|---|---|",
              f"| training seconds per epoch (400 docs) | {epochs} |",
              f"| dev evaluation seconds per epoch (100 docs) | "
              f"{', '.join(f'{s:.0f}' for s in train['dev_eval_seconds'])} |",
              f"| training wall clock, total | {train['wall_seconds'] / 60:.1f} min |",
              f"| peak memory, training process | {train['peak_rss_mb'] / 1024:.2f} GB |",
              f"| inference (component, nlp.pipe, batch {pred['batch_size']}) | "
              f"{pred['docs_per_second']:.2f} docs/s |",
              f"| peak memory, inference process | {pred['peak_rss_mb'] / 1024:.2f} GB |",
              "", f"Component check (spacy_lmrc.candidate_scorer.v1 on the same 100 docs): "
              f"at the stored threshold P {100 * st['cand_p']:.2f} R {100 * st['cand_r']:.2f} "
              f"F1 {100 * st['cand_f1']:.2f}, kept {100 * st['cand_kept_fraction']:.2f}%; at 0.5 "
              f"P {100 * s05['cand_p']:.2f} R {100 * s05['cand_r']:.2f} "
              f"F1 {100 * s05['cand_f1']:.2f}.", "", f"History: {history}.",
              "", f"Machine: {train['machine']}."]
    return "\n".join(lines)


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
    rep = sub.add_parser("report")
    rep.add_argument("--train", type=Path, required=True)
    rep.add_argument("--predict", type=Path, required=True)
    args, rest = parser.parse_known_args()
    if args.step == "report":
        print(report(args.train, args.predict))
        return
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
