"""``spacy-lmrc evaluate --from-text``: a raw-text pipeline (rule-based NER, the grouper, the
tiny random proposer, a scripted LLM) on the plain text of the toy document, with the figures
worked out by hand."""

from __future__ import annotations

import json

import pytest
import spacy
from typer.testing import CliRunner

from spacy_lmrc.cli import app

runner = CliRunner()
LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}
# the NER finds Ada Lovelace, She (a pronoun: dropped), London twice and Charles Babbage, types
# the second Babbage ORG (so it is an entity of its own: Charles Babbage is split) and misses
# the Analytical Engine
PATTERNS = [{"label": label, "pattern": pattern} for label, pattern in (
    ("PERSON", "Ada Lovelace"), ("GPE", "London"), ("PERSON", "Charles Babbage"),
    ("PERSON", "She"), ("ORG", "Babbage"))]
ANSWER = "(Ada Lovelace| place of birth| London)\n(Ada Lovelace| partner in business or sport| " \
         "Babbage)"


def front_end() -> spacy.Language:
    """Sentences and rule-based NER: what `spacy train configs/ner.cfg` gives, made by hand."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    return nlp


@pytest.fixture
def gold_file(tmp_path, toy_record):
    path = tmp_path / "gold.json"
    path.write_text(json.dumps([toy_record]))
    return path


def test_the_raw_text_pipeline_end_to_end(tmp_path, gold_file, tiny_encoder_dir):
    nlp = front_end()
    nlp.add_pipe("lmrc_entity_grouper")
    nlp.add_pipe("lmrc_candidate_proposer", config={
        "model": str(tiny_encoder_dir), "allow_untrained": True, "threshold": 0.0})
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"labels": LABELS}, "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1",
                                                "default": ANSWER}})
    nlp.to_disk(tmp_path / "raw_text")
    out, preds = tmp_path / "scores.json", tmp_path / "result.json"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "raw_text"), str(gold_file),
                                 "--from-text", "-o", str(out), "--predictions", str(preds)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    # NER: 7 gold mentions; 5 found (She dropped), 4 with the right type (Babbage is ORG)
    assert scores["ner"]["counts"] == {"gold": 7, "predicted": 5, "correct": 4}
    assert scores["ner"]["untyped"]["precision"] == 1.0
    assert scores["component_stats"]["lmrc_entity_grouper"] == {"pronoun mentions dropped": 1}
    assert scores["grouping"]["predicted_mentions"]["bcubed"]["recall"] == pytest.approx(0.8)
    assert scores["entities"]["counts"] == {
        "gold mapped": 3, "gold missed": 1, "gold split": 1, "predicted mapped": 3,
        "predicted unmapped": 1}
    # relations: Ada Lovelace - London found; the partner relation went to the split part
    assert (scores["precision"], scores["recall"]) == (0.5, pytest.approx(1 / 3))
    assert {k: v["count"] for k, v in scores["losses"].items()} == {
        "entity missed": 1, "entities merged": 0, "entity split": 1, "pair not proposed": 0,
        "relation wrong": 0, "found": 1}
    assert scores["evaluated"]["documents"] == 1 and scores["evaluated"]["added"] == []
    assert list(scores["stages"]) == ["tokenizer", "sentencizer", "entity_ruler",
                                      "lmrc_entity_grouper", "lmrc_candidate_proposer",
                                      "llm_relation_classifier"]
    assert json.loads(preds.read_text()) == [
        {"title": "Ada Lovelace", "h_idx": 0, "t_idx": 1, "r": "P19", "evidence": []},
        {"title": "Ada Lovelace", "h_idx": 0, "t_idx": 7, "r": "P1327", "evidence": []}]
    rows = {line.split("  ")[0]: line.split() for line in result.stdout.splitlines()}
    assert rows["typed"] == ["typed", "80.00", "57.14", "66.67", "7"]
    assert rows["relations"][:4] == ["relations", "50.00", "33.33", "40.00"]
    assert rows["entity split"] == ["entity", "split", "1", "33.33"]
    # the figures sit beside the gold-entity run in `spacy-lmrc compare`
    compared = runner.invoke(app, ["compare", str(out), "--names", "from-text"])
    assert compared.exit_code == 0 and "50.00" in compared.stdout


def test_a_ner_only_pipeline_is_evaluated_as_a_front_end(tmp_path, gold_file):
    front_end().to_disk(tmp_path / "ner")
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "ner"), str(gold_file), "--from-text",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "added lmrc_entity_grouper" in result.output and "relations" not in result.stdout
    scores = json.loads(out.read_text())
    assert scores["ner"]["f1"] == pytest.approx(2 * 0.8 * 4 / 7 / (0.8 + 4 / 7))
    assert "losses" not in scores and "precision" not in scores
    refused = runner.invoke(app, ["evaluate", str(tmp_path / "ner"), str(gold_file),
                                  "--from-text", "--predictions", str(tmp_path / "r.json")])
    assert refused.exit_code == 1 and "extracts no relations" in refused.output


def test_from_text_refuses_what_it_cannot_score(tmp_path, gold_file):
    blank = spacy.blank("en")
    blank.add_pipe("sentencizer")
    blank.to_disk(tmp_path / "blank")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "blank"), str(gold_file),
                                 "--from-text"])
    assert result.exit_code == 1 and "finds entities in text" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "blank"), str(gold_file),
                                 "--from-text", "--gold-pairs"])
    assert result.exit_code == 1 and "cannot be combined with --gold-pairs" in result.output
