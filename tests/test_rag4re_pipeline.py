"""RAG4RE end to end: rag4re_retriever + llm_relation_classifier with the sentence task.

The LLM is the scripted backend, so these tests check the wiring (retrieval into prompts,
answers into doc._.relations, saving, loading, the predict command), not a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.training import Example
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.corpus import read_tacred, sentence_label
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.pipeline import relation_classifier  # noqa: F401

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TACRED_LABELS = ["org:founded_by", "per:employee_of", "per:city_of_birth", "no_relation"]


def tacred(tokens: str, subj: tuple[int, int], obj: tuple[int, int], relation: str,
           rid: str) -> dict:
    return {"id": rid, "token": tokens.split(), "subj_start": subj[0], "subj_end": subj[1],
            "obj_start": obj[0], "obj_end": obj[1], "subj_type": "PERSON",
            "obj_type": "ORGANIZATION", "relation": relation}


TRAIN = [
    tacred("Microsoft was founded by Bill Gates in 1975 .", (0, 0), (4, 5), "org:founded_by",
           "tr1"),
    tacred("Anna works for the Red Cross in Geneva .", (0, 0), (4, 5), "per:employee_of", "tr2"),
    tacred("Paul was born in Liverpool in 1942 .", (0, 0), (4, 4), "per:city_of_birth", "tr3"),
    tacred("Tom met Mary at the station .", (0, 0), (2, 2), "no_relation", "tr4"),
]
TEST = [
    tacred("Maria works for the World Bank in Washington .", (0, 0), (4, 5), "per:employee_of",
           "te1"),
    tacred("Apple was founded by Steve Jobs in 1976 .", (0, 0), (4, 5), "org:founded_by", "te2"),
    tacred("Jim saw Ann at the market .", (0, 0), (2, 2), "no_relation", "te3"),
]
# answers keyed by words of the query sentence (config keys cannot hold ":"): the scripted LLM
# answers "correctly", once with noise
RULES = {
    "Maria works": "per:employee_of",
    "Apple was": "Answer: org founded by.",
    "Jim saw": "I do not know",
}


@pytest.fixture
def files(tmp_path):
    train, test = tmp_path / "train.json", tmp_path / "test.json"
    train.write_text(json.dumps(TRAIN))
    test.write_text(json.dumps(TEST))
    return train, test


def rag_pipeline(nlp, train_path: Path, rules: dict[str, str] = RULES):
    nlp.add_pipe("rag4re_retriever", config={"negative_label": "no_relation"})
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1", "labels": TACRED_LABELS,
                 "use_examples": True, "negative_label": "no_relation"},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "rules": rules},
        "scorer": {"@scorers": "spacy_lmrc.sentence_scorer.v1",
                   "negative_label": "no_relation"},
    })
    train_docs = list(read_tacred(train_path, nlp))
    nlp.initialize(lambda: [Example(input_copy(d), d) for d in train_docs])
    return nlp


def test_tacred_end_to_end_with_scripted_backend(nlp, files):
    train, test = files
    rag_pipeline(nlp, train)
    gold = list(read_tacred(test, nlp))
    docs = list(nlp.pipe([input_copy(d) for d in gold]))
    assert [sentence_label(d, "no_relation") for d in docs] == [
        "per:employee_of", "org:founded_by", "no_relation"]
    # the nearest training sentence was put into each prompt, without its label
    prompts = nlp.get_pipe("llm_relation_classifier").backend.model.prompts
    assert "Example Sentence: Anna works for the Red Cross in Geneva ." in prompts[0]
    assert "Example Sentence: Microsoft was founded by Bill Gates in 1975 ." in prompts[1]
    assert all("Example relation" not in p and "{" not in p for p in prompts)
    assert docs[1]._.rag_examples[0]["label"] == "org:founded_by"
    stats = nlp.get_pipe("llm_relation_classifier").stats.to_dict()
    # how each answer was read (the fallback: no label, so no relation), then what became of it
    assert stats == {"exact": 1, "normalised": 1, "fallback_negative": 1, "pairs": 3,
                     "relations": 2, "unanswered": 1}
    scores = nlp.evaluate([Example(d, g) for d, g in zip(docs, gold)])
    assert scores["sent_micro_f1"] == pytest.approx(1.0)


def test_saved_pipeline_and_predict_command(nlp, files, tmp_path):
    train, test = files
    rag_pipeline(nlp, train)
    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert len(loaded.get_pipe("rag4re_retriever").index) == len(TRAIN)
    out = tmp_path / "pred.jsonl"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "pipe"), str(test), str(out),
                                      "--score"])
    assert result.exit_code == 0, result.output
    records = list(srsly.read_jsonl(out))
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["id"] for r in records] == ["te1", "te2", "te3"]
    assert [r["relation"] for r in records] == [
        "per:employee_of", "org:founded_by", "no_relation"]
    assert '"f1": 1.0' in result.output


def test_simple_query_needs_no_retriever(nlp, files):
    _, test = files
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1", "labels": TACRED_LABELS,
                 "use_examples": False, "negative_label": "no_relation"},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1",
                    "rules": {"Maria works": "per:employee_of"}, "default": "no_relation"},
    })
    docs = list(nlp.pipe([input_copy(d) for d in read_tacred(test, nlp)]))
    assert [sentence_label(d, "no_relation") for d in docs] == [
        "per:employee_of", "no_relation", "no_relation"]
    prompts = nlp.get_pipe("llm_relation_classifier").backend.model.prompts
    assert "Example Sentence" not in prompts[0]


def test_rag_template_without_retriever_fails_clearly(nlp, files):
    _, test = files
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.SentenceRETask.v1", "labels": TACRED_LABELS,
                 "negative_label": "no_relation"},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1"},
    })
    with pytest.raises(ValueError, match="rag4re_retriever"):
        nlp(input_copy(next(read_tacred(test, nlp))))


@pytest.mark.parametrize("name", ["rag4re.cfg", "rag4re_simple.cfg"])
def test_packaged_configs_assemble(name, files, tmp_path):
    """The configs build a pipeline (scripted backend instead of the LLM, a tiny index)."""
    from spacy.util import load_config, load_model_from_config

    train, _ = files
    result = CliRunner().invoke(app, ["build-index", str(train), str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    overrides = {"components.llm_relation_classifier.backend": {
        "@misc": "spacy_lmrc.ScriptedBackend.v1", "default": "Other"}}
    if name == "rag4re.cfg":
        overrides["paths.index"] = str(tmp_path / "idx")
    config = load_config(CONFIGS / name, overrides=overrides, interpolate=False)
    nlp = load_model_from_config(config, auto_fill=True)
    nlp.initialize()
    doc = nlp(input_copy(next(read_tacred(files[1], nlp))))
    assert doc._.relations == []
    assert bool(doc._.rag_examples) == (name == "rag4re.cfg")


@pytest.mark.integration
def test_semeval_train_index_retrieval(shared_data, tmp_path):
    """SemEval: a training sentence retrieves itself only with the leakage guard off."""
    from spacy_lmrc.corpus import read_semeval

    data = shared_data / "semeval2010"
    nlp = spacy.blank("en")
    docs = list(read_semeval(data / "train_sentences.json", nlp,
                             relations_path=data / "train_relations.json",
                             label_names_path=data / "relations.json", first=300))
    retriever = nlp.add_pipe("rag4re_retriever")
    retriever.initialize(lambda: [Example(input_copy(d), d) for d in docs])
    queries = [input_copy(d) for d in docs[:20]]
    retriever.retrieve(queries, exclude_identical=False)
    assert [q._.rag_examples[0]["text"] for q in queries] == [d.text for d in docs[:20]]
    retriever.retrieve(queries)  # the guard is the default
    assert all(q._.rag_examples[0]["text"] != d.text for q, d in zip(queries, docs))
    assert all(-1.0 <= q._.rag_examples[0]["similarity"] <= 1.0 for q in queries)


SEMEVAL_LABELS = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e1,e2)",
                  "Component-Whole(e2,e1)", "Other"]
SEMEVAL_TRAIN = [
    ("The <e1>burst</e1> has been caused by water hammer <e2>pressure</e2>.",
     "Cause-Effect(e2,e1)"),
    ("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", "Cause-Effect(e2,e1)"),
    ("The <e1>virus</e1> caused the <e2>fever</e2>.", "Cause-Effect(e1,e2)"),
    ("The <e1>engine</e1> is part of the <e2>car</e2>.", "Component-Whole(e1,e2)"),
    ("The <e1>car</e1> has a big <e2>engine</e2>.", "Component-Whole(e2,e1)"),
    ("The <e1>ear</e1> of the rabbit was longer than its <e2>tail</e2>.", "Other"),
    ("A <e1>company</e1> of soldiers marched into the <e2>town</e2>.", "Other"),
]


@pytest.mark.parametrize("finetune_config,inference_config", [
    ("rag4re_finetune.cfg", "rag4re_simple.cfg"),  # row "fine-tuning"
    ("rag4re_finetune.cfg", "rag4re.cfg"),  # row "RAG4RE + fine-tuning" (the paper's design)
    ("rag4re_finetune_rag.cfg", "rag4re.cfg"),  # the variant trained on RAG4RE prompts
])
def test_finetune_configs_train_what_the_inference_configs_load(
        tiny_llama, tmp_path, finetune_config, inference_config):
    """The packaged fine-tuning configs train the structured sentence task (a tiny model, one
    step); the inference configs load the result, check its format and answer only labels."""
    from spacy.util import load_config, load_model_from_config

    from spacy_lmrc.classifier.training import finetune, settings_from_config
    from spacy_lmrc.llm import SentenceFormat

    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"sentence": s, "relation": r} for s, r in SEMEVAL_TRAIN]))
    labels = tmp_path / "relations.json"
    labels.write_text(json.dumps({"relation": {"names": SEMEVAL_LABELS}}))
    result = CliRunner().invoke(app, ["build-index", str(train), str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    paths = {"paths.train": str(train), "paths.relations": None, "paths.labels": str(labels),
             "corpora.train.first": None}
    if finetune_config == "rag4re_finetune_rag.cfg":
        paths["paths.index"] = str(tmp_path / "idx")
    task, docs, settings, _, _ = settings_from_config(CONFIGS / finetune_config, {
        **paths, "finetune.base_model": tiny_llama, "finetune.max_steps": 1,
        "finetune.warmup_steps": 0})
    assert isinstance(task.prompt_format, SentenceFormat)
    assert (settings.method, settings.batch_size, task.negative_ratio) == ("full", 16, 2.0)
    assert len(docs) == len(SEMEVAL_TRAIN)
    if finetune_config == "rag4re_finetune_rag.cfg":  # never its own sentence as the example
        assert all(d._.rag_examples and d._.rag_examples[0]["text"] != d.text for d in docs)
    summary = finetune(task, docs, tmp_path / "model", settings)
    assert summary["steps"] == 1

    overrides = {"paths.labels": str(labels), "paths.classifier": str(tmp_path / "model"),
                 "components.llm_relation_classifier.backend.model": tiny_llama}
    if inference_config == "rag4re.cfg":
        overrides["paths.index"] = str(tmp_path / "idx")
    nlp = load_model_from_config(load_config(CONFIGS / inference_config, overrides=overrides,
                                             interpolate=False), auto_fill=True)
    nlp.initialize()
    gold = [eg.reference for eg in
            spacy.registry.readers.get("spacy_lmrc.SentenceCorpus.v1")(
                path=train, label_names_path=labels)(nlp)]
    docs = list(nlp.pipe([input_copy(d) for d in gold]))
    rc = nlp.get_pipe("llm_relation_classifier")
    assert rc.stats.counts["pairs"] == len(gold)
    assert rc.stats.counts["relations"] + rc.stats.counts["negative"] == len(gold)
    assert all(r["label"] in SEMEVAL_LABELS[:-1] and 0 < r["score"] <= 1
               for d in docs for r in d._.relations)
