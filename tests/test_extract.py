import spacy
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.cli.extract import read_texts
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


def test_read_texts(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("First doc.\n\nSecond doc.\n")
    assert read_texts(txt, by_line=False) == [("a", "First doc.\n\nSecond doc.\n")]
    assert [t for _, t in read_texts(txt, by_line=True)] == ["First doc.", "Second doc."]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "Hello there.", "id": 7}\n{"nope": 1}\n')
    result = runner.invoke(app, ["extract", str(tmp_path), str(jsonl)])
    assert result.exit_code == 1 and "document 1" in result.output and "'text'" in result.output


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
    assert result.stdout == ""  # entities but no relation component: no relation lines
    assert "0 relations in 2 document(s), 3 entities" in result.output
    assert "Ada Lovelace" in html.read_text()
