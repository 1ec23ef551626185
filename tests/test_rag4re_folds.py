"""Cross-fitted retrieval for the generator's training prompts: folds by text, retrievers
trained with one fold held out, and RetrievedSentenceCorpus.v2 serving each training sentence
from the retriever that never saw it. Tiny models, hand-written sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import srsly
from spacy.util import registry
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.rag4re import EmbeddingIndex, SentenceEmbedder, identity_text
from spacy_lmrc.rag4re.folds import fold_of, held_out_fold, order_by_fold
from spacy_lmrc.rag4re.training import EmbedderSettings

PAIRS = [("fire", "cigarette"), ("flood", "rain"), ("burst", "pressure"), ("crash", "ice"),
         ("rash", "allergy"), ("delay", "storm")]
PARTS = [("engine", "car"), ("wheel", "bicycle"), ("keyboard", "laptop"), ("wing", "plane"),
         ("handle", "door"), ("lens", "camera")]
OTHER = [("ear", "tail"), ("company", "town"), ("child", "park"), ("song", "night"),
         ("bird", "roof"), ("letter", "desk")]
ROWS = ([(f"The <e1>{a}</e1> was caused by the <e2>{b}</e2>.", "Cause-Effect(e2,e1)")
         for a, b in PAIRS]
        + [(f"The <e1>{a}</e1> is part of the <e2>{b}</e2>.", "Component-Whole(e1,e2)")
           for a, b in PARTS]
        + [(f"The <e1>{a}</e1> was near the <e2>{b}</e2>.", "Other") for a, b in OTHER])


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cross_fitted(tmp_path_factory, tiny_encoder_dir) -> dict[str, Path]:
    """Two retrievers, each trained (2 steps) with one of 2 folds held out, and their indexes
    over all the sentences; plus an index of an embedder trained on all of them."""
    folder = tmp_path_factory.mktemp("folds")
    data = folder / "train.json"
    data.write_text(json.dumps([{"sentence": s, "relation": r} for s, r in ROWS]))
    paths = {"data": data}
    for fold in (0, 1, None):
        name = "all" if fold is None else f"fold{fold}"
        args = ["--folds", "2", "--held-out-fold", str(fold)] if fold is not None else []
        result = invoke("train-retriever", data, folder / f"embedder_{name}", "--base-model",
                        tiny_encoder_dir, "--max-steps", "2", "--batch-size", "4", *args)
        assert result.exit_code == 0, result.output
        result = invoke("build-index", data, folder / f"index_{name}", "--embedder",
                        folder / f"embedder_{name}")
        assert result.exit_code == 0, result.output
        paths[name] = folder / f"index_{name}"
    return paths


def test_a_sentences_fold_depends_on_its_text_only():
    sentence = "The <e1>fire</e1> was caused by a <e2>cigarette</e2>."
    duplicate = "The  fire was caused by a <e1>cigarette</e1>  <e2>x</e2>."
    assert identity_text(sentence) != identity_text(duplicate)
    assert fold_of(sentence, 5) == fold_of("The  <e1>fire</e1>  was caused by a "
                                           "<e2>cigarette</e2>.", 5)
    assert {fold_of(text, 3) for text, _ in ROWS} == {0, 1, 2}
    assert all(fold_of(text, 1) == 0 for text, _ in ROWS)
    with pytest.raises(ValueError, match="at least 1"):
        fold_of(sentence, 0)


def test_fold_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="held_out_fold 2"):
        EmbedderSettings(folds=2, held_out_fold=2).check()
    with pytest.raises(ValueError, match="name the fold"):
        EmbedderSettings(folds=3).check()
    result = invoke("train-retriever", tmp_path / "x.json", tmp_path / "out", "--folds", "2",
                    "--held-out-fold", "5")
    assert result.exit_code != 0 and "held_out_fold 5" in result.output


def test_a_held_out_fold_is_left_out_of_training_and_recorded(cross_fitted):
    for fold in (0, 1):
        index = EmbeddingIndex.from_disk(cross_fitted[f"fold{fold}"])
        record = srsly.read_json(Path(index.embedder) / "rag4re_embedder.json")
        held = sum(fold_of(text, 2) == fold for text, _ in ROWS)
        assert record["held_out_fold"] == fold and record["folds"] == 2
        assert record["held_out_sentences"] == held
        assert record["sentences"] == len(ROWS) - held
        assert held_out_fold(index) == (fold, 2)
        assert len(index) == len(ROWS)  # the index holds every training sentence
    assert held_out_fold(EmbeddingIndex.from_disk(cross_fitted["all"])) is None


def test_each_training_sentence_retrieves_from_the_retriever_that_never_saw_it(cross_fitted,
                                                                                nlp):
    reader = registry.readers.get("spacy_lmrc.RetrievedSentenceCorpus.v2")(
        path=cross_fitted["data"], index_paths=[cross_fitted["fold1"], cross_fitted["fold0"]],
        k=2)
    examples = list(reader(nlp))
    assert len(examples) == len(ROWS)
    indexes = [EmbeddingIndex.from_disk(cross_fitted[f"fold{fold}"]) for fold in (0, 1)]
    for eg in examples:
        doc = eg.reference
        index = indexes[fold_of(doc.text, 2)]
        embedder = SentenceEmbedder(index.embedder)
        ids, _ = index.search(embedder.encode([index.representation(doc)]), k=2,
                              exclude=[index.ids_with_text(doc.text)])
        assert [ex["text"] for ex in doc._.rag_examples] == [
            index.records[int(i)]["text"] for i in ids[0]]
        assert all(identity_text(ex["text"]) != identity_text(doc.text)
                   for ex in doc._.rag_examples)


def test_v2_with_one_index_is_v1(cross_fitted, nlp):
    v1 = registry.readers.get("spacy_lmrc.RetrievedSentenceCorpus.v1")(
        path=cross_fitted["data"], index_path=cross_fitted["all"])
    v2 = registry.readers.get("spacy_lmrc.RetrievedSentenceCorpus.v2")(
        path=cross_fitted["data"], index_paths=[cross_fitted["all"]])
    assert ([eg.reference._.rag_examples for eg in v1(nlp)]
            == [eg.reference._.rag_examples for eg in v2(nlp)])


def test_an_incomplete_or_mixed_cross_fitted_set_is_refused(cross_fitted, nlp):
    reader = registry.readers.get("spacy_lmrc.RetrievedSentenceCorpus.v2")
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\] have no index"):
        order_by_fold([EmbeddingIndex.from_disk(cross_fitted["fold0"])], ["fold0"])
    with pytest.raises(ValueError, match="trained on every training sentence"):
        list(reader(path=cross_fitted["data"],
                    index_paths=[cross_fitted["fold0"], cross_fitted["all"]])(nlp))
    with pytest.raises(ValueError, match="held out by another index"):
        list(reader(path=cross_fitted["data"],
                    index_paths=[cross_fitted["fold0"], cross_fitted["fold0"]])(nlp))
    with pytest.raises(ValueError, match="index_paths is empty"):
        reader(path=cross_fitted["data"], index_paths=[])

