import json

import pytest
import spacy
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.errors import InputError
from spacy_lmrc.extraction import DocumentSource
from spacy_lmrc.pipeline import entity_grouper  # noqa: F401  (registers the factory)
from spacy_lmrc.render import format_table, relation_records, render_html

runner = CliRunner()


def _doc_with_relation(nlp):
    doc = nlp.make_doc("Ada Lovelace was born in London .")
    doc._.title = "ada"
    doc._.entities = [
        {"name": "Ada Lovelace", "type": "PER", "mentions": [{"start": 0, "end": 2, "sent": 0,
                                                               "name": "Ada Lovelace"}]},
        {"name": "London", "type": "LOC", "mentions": [{"start": 5, "end": 6, "sent": 0,
                                                         "name": "London"}]},
    ]
    doc._.relations = [{"head": 0, "tail": 1, "label": "P19", "score": 0.9}]
    return doc


def test_records_table_and_html(nlp):
    doc = _doc_with_relation(nlp)
    records = relation_records(doc, 0, {"P19": "place of birth"})
    assert records == [{"doc": "ada", "head": "Ada Lovelace", "head_type": "PER", "head_idx": 0,
                        "relation": "place of birth", "label": "P19", "tail": "London",
                        "tail_type": "LOC", "tail_idx": 1, "score": 0.9}]
    table = format_table(records)
    assert "Ada Lovelace (PER)" in table and "place of birth" in table
    html = render_html([doc], {"P19": "place of birth"})
    assert html.startswith("<!DOCTYPE html>") and "place of birth" in html and "London" in html


def test_document_source_ids_and_texts(tmp_path, nlp):
    txt = tmp_path / "a.txt"
    txt.write_text("First doc.\n\nSecond doc.\n")
    assert [(d.id, d.title, d.content) for d in DocumentSource(txt, nlp.vocab)] == \
        [("a.txt", "a", "First doc.\n\nSecond doc.\n")]
    by_line = DocumentSource(txt, nlp.vocab, lines=True)
    assert [(d.id, d.content) for d in by_line] == [("0", "First doc."), ("1", "Second doc.")]
    assert by_line.size() == 2
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "Hello there.", "id": 7}\n{"nope": 1}\n')
    with pytest.raises(InputError, match=r"b.jsonl, document 1, field 'text': expected a non-"):
        list(DocumentSource(jsonl, nlp.vocab))


def test_extract_cli_on_a_saved_pipeline(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Ada Lovelace"},
                        {"label": "GPE", "pattern": "London"}])
    nlp.add_pipe("lmrc_entity_grouper")
    nlp.to_disk(tmp_path / "pipeline")
    text = tmp_path / "in.txt"
    text.write_text("Ada Lovelace was born in London.\nLondon is big.\n")
    html = tmp_path / "view.html"
    result = runner.invoke(app, ["extract", str(tmp_path / "pipeline"), str(text), "--lines",
                                 "--html", str(html)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["relations"]) for r in records] == [("0", []), ("1", [])]
    assert "0 relations in 2 document(s), 3 entities" in result.output
    assert "Ada Lovelace" in html.read_text()


def _saved_pipeline(path, tiny_encoder_dir, *, threshold=0.0, answer=""):
    """Rule-based NER, the grouper, the tiny random proposer and a scripted LLM, on disk."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Ada Lovelace"},
                                               {"label": "GPE", "pattern": "London"}])
    nlp.add_pipe("lmrc_entity_grouper")
    nlp.add_pipe("lmrc_candidate_proposer", config={
        "model": str(tiny_encoder_dir), "allow_untrained": True, "threshold": threshold})
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"labels": {"P19": "place of birth"}},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": answer}})
    nlp.to_disk(path)
    return path


def test_explain_names_the_stage_that_emptied_the_stream(nlp):
    from spacy_lmrc.extraction import Stages, explain, explanation_line

    doc = _doc_with_relation(nlp)
    full = Stages("lmrc_entity_grouper", proposer=None, classifier=None)
    assert explain(doc, full)["why"] is None
    assert explanation_line("ada", explain(doc, full)) == \
        "ada: 2 mentions, 2 entities, 2 pairs, 1 relations"
    doc._.relations = []
    assert explain(doc, full)["why"] == "the pipeline has no relation classifier"
    doc._.entities = doc._.entities[:1]
    assert explain(doc, full)["why"] == "1 entity: no pair of entities to relate"
    doc._.entities = []
    assert explain(doc, full)["why"] == "0 entities: the NER found no mention in the text"
    assert "finds no entities" in explain(doc, Stages(None, None, None))["why"]


def test_extract_says_why_for_every_document(tmp_path, tiny_encoder_dir):
    text = tmp_path / "in.txt"
    text.write_text("Ada Lovelace was born in London.\nAda Lovelace wrote.\nIt rained.\n")
    named = _saved_pipeline(tmp_path / "named", tiny_encoder_dir,
                            answer="(Ada Lovelace| place of birth| London)")
    result = runner.invoke(app, ["extract", str(named), str(text), "--lines"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout.splitlines()[0])
    assert first["relations"][0]["relation"] == "place of birth"
    assert first["counts"] == {"mentions": 2, "entities": 2, "pairs": 2, "candidates": 2,
                               "relations": 1, "classified": 2, "why": None}
    lines = result.output.splitlines()
    assert "document 0: 2 mentions, 2 entities, 2 pairs, 2 proposed, 1 relations" in lines
    assert "document 1: 1 mentions, 1 entities, 0 pairs, 0 proposed, 0 relations: 1 entity: " \
           "no pair of entities to relate" in lines
    assert "document 2: 0 mentions, 0 entities, 0 pairs, 0 proposed, 0 relations: 0 entities: " \
           "the NER found no mention in the text" in lines

    silent = _saved_pipeline(tmp_path / "silent", tiny_encoder_dir)
    result = runner.invoke(app, ["extract", str(silent), str(text), "--lines"])
    assert "document 0: 2 mentions, 2 entities, 2 pairs, 2 proposed, 0 relations: the relation " \
           "classifier named no relation for the 2 pairs it was given" in result.output
    strict = _saved_pipeline(tmp_path / "strict", tiny_encoder_dir, threshold=1.0)
    result = runner.invoke(app, ["extract", str(strict), str(text), "--lines"])
    assert "0 proposed, 0 relations: the proposer kept none of the 2 entity pairs at " \
           "threshold 1" in result.output


def test_extract_on_a_text_without_entities_and_on_an_empty_file(tmp_path, tiny_encoder_dir):
    pipeline = _saved_pipeline(tmp_path / "pipeline", tiny_encoder_dir)
    plain = tmp_path / "plain.txt"
    plain.write_text("It rained all day and nobody went out.\n")
    html = tmp_path / "plain.html"
    result = runner.invoke(app, ["extract", str(pipeline), str(plain), "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert "plain: 0 mentions, 0 entities, 0 pairs, 0 proposed, 0 relations: 0 entities" \
        in result.output
    assert json.loads(result.stdout)["relations"] == []
    assert "It rained all day" in html.read_text()
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = runner.invoke(app, ["extract", str(pipeline), str(empty), "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert "no documents (no text): 0 documents, 0 relations" in result.output
    assert "0 relations in 0 document(s), 0 entities" in result.output
    assert "no documents" in html.read_text()
