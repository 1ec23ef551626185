"""The retrieved examples' vote fused with the generator's answer, at several weights.

A RAG4RE pipeline (``rag4re_retriever`` + ``llm_relation_classifier`` with
``spacy_lmrc.SentenceRETask.v3``) is run once over the dev sentences: the retriever gives each
sentence its k examples (the largest of ``--k``), the generator every label of at least the
task's ``label_floor`` probability. Each number of voting examples (the first k of them) and
each weight then rerank those answers (:mod:`spacy_lmrc.tasks.sentence.vote`) without
decoding again. The k and the weight are
chosen by SemEval macro-F1 on the first ``--tune`` sentences and reported on the rest (and on
all, for the record), so the chosen row is not tuned on the sentences it is scored on.

    python bench/bench_vote.py training/rag4re/semeval_vote corpus/semeval_dev.spacy \\
        --k 3 5 10 --weights 0 0.25 0.5 1 1.5 2 --tune 500 --out metrics/rag4re/vote.json

The pipeline is assembled from ``configs/rag4re.cfg`` (or ``rag4re_simple.cfg`` with the
retriever added) with a ``label_floor`` (its default) and ``shown_examples`` as the generator
was trained (the retriever's k is replaced by ``--k``'s
largest).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import spacy  # noqa: E402
from spacy.tokens import Doc  # noqa: E402

import spacy_lmrc  # noqa: E402,F401
from spacy_lmrc.cli._util import load_docs  # noqa: E402
from spacy_lmrc.corpus import sentence_label  # noqa: E402
from spacy_lmrc.corpus.readers import input_copy  # noqa: E402
from spacy_lmrc.llm.requests import Answer  # noqa: E402
from spacy_lmrc.metrics.sentence import score_labels  # noqa: E402
from spacy_lmrc.tasks.base import ParseStats  # noqa: E402

RETRIEVER, CLASSIFIER = "rag4re_retriever", "llm_relation_classifier"


def decode_once(nlp: spacy.Language, gold: list[Doc], k: int
                ) -> tuple[list[Doc], list[list[tuple[int, int]]], list[list[Answer]], float]:
    """The Docs with their ``k`` retrieved examples, their pairs and the generator's answers
    (every label of at least the task's floor), and the seconds it took."""
    task = nlp.get_pipe(CLASSIFIER).task
    if task.label_floor is None:
        raise SystemExit("the pipeline's task has label_floor null: the generator would give "
                         "only its greedy label; assemble it with a label_floor (e.g. 0.01)")
    nlp.get_pipe(RETRIEVER).cfg["k"] = k
    start = time.perf_counter()
    docs = list(nlp.get_pipe(RETRIEVER).pipe([input_copy(doc) for doc in gold],
                                             batch_size=nlp.batch_size))
    built = [task.build_request(doc) for doc in docs]
    backend = nlp.get_pipe(CLASSIFIER).backend
    requests = [request for request, _ in built]
    answers: list[list[Answer]] = []
    for start_at in range(0, len(requests), nlp.batch_size):
        answers += backend.answer(requests[start_at:start_at + nlp.batch_size],
                                  task.prompt_format, ParseStats())
    return docs, [pairs for _, pairs in built], answers, time.perf_counter() - start


def labels_at(k: int, weight: float, nlp: spacy.Language, docs: list[Doc],
              pairs: list[list[tuple[int, int]]], answers: list[list[Answer]]
              ) -> tuple[list[str], dict[str, int]]:
    """The labels of the answers reranked by the first ``k`` examples' vote at ``weight``,
    and the counts of reading them."""
    task = nlp.get_pipe(CLASSIFIER).task
    task.vote_weight = weight
    stats = ParseStats()
    predicted = []
    for doc, doc_pairs, doc_answers in zip(docs, pairs, answers):
        out = doc.copy()
        out._.rag_examples = doc._.rag_examples[:k]
        out._.relations = task.relations_from_answers(out, doc_pairs, doc_answers, stats)
        predicted.append(sentence_label(out, task.negative_label))
    return predicted, stats.to_dict()


def row(scores: dict[str, Any]) -> dict[str, float]:
    return {"micro_p": round(100 * scores["precision"], 2),
            "micro_r": round(100 * scores["recall"], 2),
            "micro_f1": round(100 * scores["f1"], 2),
            "semeval_macro_f1": round(100 * scores["semeval_macro_f1"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline", help="assembled RAG4RE pipeline with a voting task")
    parser.add_argument("corpus", type=Path, help="dev sentences (.spacy or SemEval JSON)")
    parser.add_argument("--k", type=int, nargs="+", default=[5],
                        help="numbers of voting examples (the first k retrieved)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.5, 1, 1.5, 2])
    parser.add_argument("--tune", type=int, default=500,
                        help="k and the weight are chosen on the first TUNE sentences")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results")
    args = parser.parse_args()

    nlp = spacy.load(args.pipeline)
    gold_docs, _ = load_docs(args.corpus, nlp)
    task = nlp.get_pipe(CLASSIFIER).task
    gold = [sentence_label(doc, task.negative_label) for doc in gold_docs]
    docs, pairs, answers, seconds = decode_once(nlp, gold_docs, max(args.k))
    tune, held = slice(0, args.tune), slice(args.tune, None)
    results = []
    for k in args.k:
        for weight in args.weights:
            predicted, counts = labels_at(k, weight, nlp, docs, pairs, answers)
            parts = {name: row(score_labels(gold[part], predicted[part], task.negative_label,
                                            semeval=True))
                     for name, part in (("all", slice(None)), ("tune", tune),
                                        ("held_out", held))}
            results.append({"k": k, "weight": weight, **parts, "counts": counts})
            print(f"k {k:2d} weight {weight:5.2f}: macro-F1 all "
                  f"{parts['all']['semeval_macro_f1']:6.2f}  "
                  f"tune {parts['tune']['semeval_macro_f1']:6.2f}  "
                  f"held-out {parts['held_out']['semeval_macro_f1']:6.2f}  "
                  f"changed {counts.get('vote_changed', 0)}")
    chosen = max(results, key=lambda r: r["tune"]["semeval_macro_f1"])
    print(f"chosen on the first {args.tune}: k {chosen['k']}, weight {chosen['weight']}, "
          f"held-out macro-F1 {chosen['held_out']['semeval_macro_f1']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "pipeline": args.pipeline, "corpus": str(args.corpus), "sentences": len(gold),
        "tune_sentences": args.tune, "shown_examples": task.shown_examples,
        "floor": task.label_floor, "decode_seconds": round(seconds, 1), "results": results,
        "chosen": {"k": chosen["k"], "weight": chosen["weight"]}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
