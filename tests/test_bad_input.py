"""Issue 11: every bad input is one clear line or a counted warning, and no valid document is
lost. One test (or parametrized family) per case of the issue, on small files written here."""

import copy
import json
import os

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.corpus import read_docred, read_semeval
from spacy_lmrc.corpus.docred import docred_record_to_doc
from spacy_lmrc.errors import InputError, SkipReport
from spacy_lmrc.metrics import gold_from_record, score_docred

runner = CliRunner()


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def _docs(toy_record, n=3):
    return [dict(copy.deepcopy(toy_record), title=f"doc {i}") for i in range(n)]


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _fails_in_one_line(result, *expected):
    """Exit 1 through the CLI's error handler, one ``error:`` line holding ``expected``."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _pred(title, h, t, r, evidence=()):
    return {"title": title, "h_idx": h, "t_idx": t, "r": r, "evidence": list(evidence)}


# 1. format detection by the whole file; --skip-invalid keeps every valid document


@pytest.mark.parametrize("bad", [0, 1, 2])
def test_case1_docred_without_vertexset_anywhere_is_docred(tmp_path, toy_record, bad):
    records = _docs(toy_record)
    del records[bad]["vertexSet"]
    src = _write(tmp_path / "docs.json", records)
    _fails_in_one_line(_run("stats", src), "docs.json", f"document {bad} ('doc {bad}')",
                       "'vertexSet'")
    out = tmp_path / "out.spacy"
    result = _ok(_run("convert", src, out, "--skip-invalid"))
    assert "relation" not in result.output  # not read as SemEval
    docs = list(DocBin().from_disk(out).get_docs(spacy.blank("en").vocab))
    assert [d._.title for d in docs] == [f"doc {i}" for i in range(3) if i != bad]


def test_case1_mixed_formats_is_a_clear_error(tmp_path, toy_record):
    records = _docs(toy_record, 2) + [{"sentence": "A <e1>b</e1> c <e2>d</e2>.",
                                       "relation": "Other"}]
    src = _write(tmp_path / "mixed.json", records)
    _fails_in_one_line(_run("convert", src, tmp_path / "o.spacy"), "mixed.json",
                       "mixes formats", "2 DocRED", "1 SemEval (first: document 2)", "--format")
    result = _ok(_run("stats", src, "--format", "docred", "--skip-invalid", "--json"))
    assert json.loads(result.stdout)["docs"] == 2
    assert "document 2" in result.output


# 2. duplicate titles


def test_case2_duplicate_gold_titles(tmp_path, toy_record):
    records = _docs(toy_record)
    records[2]["title"] = "doc 0"
    records[2]["labels"] = [{"h": 1, "t": 0, "r": "P17", "evidence": []}]
    gold = _write(tmp_path / "gold.json", records)
    pred = _write(tmp_path / "pred.json", [_pred("doc 0", 1, 0, "P17")])
    expected = ("gold.json", "document 2 ('doc 0')", "'title'", "duplicate title",
                "document 0")
    _fails_in_one_line(_run("score", "--gold", gold, "--pred", pred), *expected)
    _fails_in_one_line(_run("score", "--gold", gold, "--pred", pred, "--train", gold), *expected)
    result = _ok(_run("stats", gold, "--json"))
    assert json.loads(result.stdout)["docs"] == 3
    assert "warning: file" in result.output and "1 documents with a title already used" in (
        result.output) and "2 ('doc 0')" in result.output
    assert "title already used" in _ok(_run("convert", gold, tmp_path / "o.spacy")).output
    with pytest.raises(InputError, match="duplicate gold title"):
        score_docred([gold_from_record(r) for r in records], [])


# 3. SemEval labels: digit strings are ids, floats and unknown names are errors


def _semeval(tmp_path, labels, names=("Other", "Cause-Effect(e1,e2)")):
    sents = _write(tmp_path / "s.json", ["The <e1>a</e1> caused <e2>b</e2>."] * len(labels))
    rels = _write(tmp_path / "l.json", labels)
    names_path = _write(tmp_path / "n.json", {"relation": {"names": list(names)}})
    return sents, rels, names_path


def test_case3_digit_string_labels_use_label_names(tmp_path, nlp):
    sents, rels, names = _semeval(tmp_path, ["0", "1", 1])
    docs = list(read_semeval(sents, nlp, relations_path=rels, label_names_path=names))
    assert [d._.relations for d in docs][0] == []  # "0" is Other: no relation
    assert docs[1]._.relations[0]["label"] == docs[2]._.relations[0]["label"] == (
        "Cause-Effect(e1,e2)")


@pytest.mark.parametrize("label,message", [
    (3.0, "expected a label name or an integer label id, got 3.0"),
    ("3.0", "expected a label name or an integer label id"),
    (True, "expected a label name or an integer label id"),
    ("Made-Up(e1,e2)", "not one of the 2 label names"),
    ("7", "label id 7 is outside the 2 names"),
])
def test_case3_bad_semeval_labels(tmp_path, label, message):
    sents, rels, names = _semeval(tmp_path, ["1", label])
    _fails_in_one_line(_run("stats", sents, "--relations", rels, "--label-names", names),
                       "s.json", "document 1", "'relation'", message)


def test_case3_digit_string_without_label_names(tmp_path):
    sents, rels, _ = _semeval(tmp_path, ["18"])
    _fails_in_one_line(_run("stats", sents, "--relations", rels), "integer label 18",
                       "--label-names")


# 4. labels: required in a gold file for scoring, optional in a file to predict on


def test_case4_gold_without_labels(tmp_path, toy_record):
    records = _docs(toy_record)
    del records[1]["labels"]
    gold = _write(tmp_path / "gold.json", records)
    pred = _write(tmp_path / "pred.json", [_pred("doc 0", 0, 1, "P19")])
    _fails_in_one_line(_run("score", "--gold", gold, "--pred", pred), "gold.json",
                       "document 1 ('doc 1')", "'labels'", "needs labels")
    _fails_in_one_line(_run("score", "--gold", _write(tmp_path / "ok.json", _docs(toy_record)),
                            "--pred", pred, "--train", gold), "document 1", "'labels'")
    # a file to predict on may lack labels
    assert len(list(read_docred(gold, spacy.blank("en").vocab))) == 3
    _ok(_run("stats", gold))
    with pytest.raises(InputError, match="labels"):
        gold_from_record(records[1])


# 5. prediction fields are type-checked


@pytest.mark.parametrize("field,value,expected", [
    ("h_idx", 0.0, "expected an integer entity index >= 0, got float 0.0"),
    ("h_idx", True, "got bool True"),
    ("t_idx", "1", "got str '1'"),
    ("t_idx", -1, "got int -1"),
    ("title", ["doc 0"], "expected a title string"),
    ("r", 19, "expected a relation id string"),
    ("evidence", 0, "expected a list of sentence indices"),
    ("evidence", [0.5], "expected a list of sentence indices"),
])
def test_case5_prediction_fields(tmp_path, toy_record, field, value, expected):
    gold = _write(tmp_path / "gold.json", _docs(toy_record, 1))
    preds = [_pred("doc 0", 0, 1, "P19", [0]), _pred("doc 0", 0, 1, "P19", [0])]
    preds[1][field] = value
    pred = _write(tmp_path / "result.json", preds)
    _fails_in_one_line(_run("score", "--gold", gold, "--pred", pred), "result.json",
                       "document 1", f"'{field}'", expected)
    with pytest.raises(InputError, match=f"prediction 1.*'{field}'"):
        score_docred([gold_from_record(toy_record)], preds)


def test_case5_out_of_range_prediction_is_counted(tmp_path, toy_record):
    gold = _write(tmp_path / "gold.json", _docs(toy_record, 1))
    pred = _write(tmp_path / "result.json", [_pred("doc 0", 0, 1, "P19"),
                                             _pred("doc 0", 0, 40, "P19")])
    result = _ok(_run("score", "--gold", gold, "--pred", pred))
    assert "1 predictions with an entity index beyond" in result.output
    assert json.loads(result.stdout)["precision"] == 0.5


# 6. build-index takes sentence-level corpora only


def test_case6_build_index_refuses_document_level_input(tmp_path, toy_record, nlp):
    src = _write(tmp_path / "docs.json", _docs(toy_record))
    out = tmp_path / "index"
    _fails_in_one_line(_run("build-index", src, out), "docs.json", "DocRED",
                       "sentence-level corpus")
    docs = [docred_record_to_doc(r, nlp.vocab) for r in _docs(toy_record, 2)]
    spacy_file = tmp_path / "docs.spacy"
    DocBin(docs=docs, store_user_data=True).to_disk(spacy_file)
    _fails_in_one_line(_run("build-index", spacy_file, out), "docs.spacy",
                       "document 0 ('doc 0')", "'entities'", "2 entities, got 4")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# 7. --skip-invalid reports every skipped document, grouped by reason


def test_case7_skip_report_groups_reasons_and_names_documents(tmp_path, toy_record, nlp):
    records = _docs(toy_record, 5)
    records[0]["labels"][0]["h"] = 99
    records[2]["labels"][1]["h"] = 42
    records[3]["vertexSet"][0][0]["pos"] = [5, 90]
    src = _write(tmp_path / "docs.json", records)
    report = SkipReport()
    docs = list(read_docred(src, nlp.vocab, skip_invalid=True, report=report))
    assert [d._.title for d in docs] == ["doc 1", "doc 4"]
    lines = report.summary().splitlines()
    assert lines[0] == "skipped 3 invalid document(s):"
    assert lines[1] == "  2 x field 'labels[].h': entity index out of range"
    assert "document 0 ('doc 0'), field 'labels[0].h': entity index 99" in lines[2]
    assert "document 2 ('doc 2'), field 'labels[1].h': entity index 42" in report.summary()
    assert "1 x field 'vertexSet[][].pos': mention position outside its sentence" in (
        report.summary())
    result = _ok(_run("convert", src, tmp_path / "o.spacy", "--skip-invalid"))
    assert "document 3 ('doc 3')" in result.output and "skipped 3" in result.output


def test_case7_library_reader_without_report_still_warns(tmp_path, toy_record, nlp):
    records = _docs(toy_record, 2)
    records[0]["labels"][0]["h"] = 99
    src = _write(tmp_path / "docs.json", records)
    with pytest.warns(UserWarning, match=r"document 0 \('doc 0'\)"):
        docs = list(read_docred(src, nlp.vocab, skip_invalid=True))
    assert len(docs) == 1


# 8. no traceback: unreadable inputs, unwritable outputs, bad options


@pytest.mark.parametrize("content,expected", [
    (bytes(range(128, 256)), "not a UTF-8 text file (byte 0x80 at offset 0)"),
    ('["caf\xe9"]'.encode("latin1"), "not a UTF-8 text file"),
    ("[1, 2]".encode("utf-16"), "not a UTF-8 text file"),
    (b"\x00\x01\x02", "NUL bytes"),
])
def test_case8_binary_and_non_utf8_inputs(tmp_path, content, expected):
    src = tmp_path / "data.json"
    src.write_bytes(content)
    for args in (["stats", src], ["convert", src, tmp_path / "o.spacy"],
                 ["build-index", src, tmp_path / "idx"]):
        _fails_in_one_line(_run(*args), "data.json", expected)
    bad_spacy = tmp_path / "data.spacy"
    bad_spacy.write_bytes(content)
    _fails_in_one_line(_run("stats", bad_spacy), "data.spacy", "not a readable DocBin")


def test_case8_folders_as_inputs(tmp_path, toy_record):
    gold = _write(tmp_path / "gold.json", _docs(toy_record, 1))
    folder = tmp_path / "folder.json"
    folder.mkdir()
    _fails_in_one_line(_run("stats", folder), "folder.json", "is a folder")
    _fails_in_one_line(_run("score", "--gold", gold, "--pred", folder), "is a folder")
    spacy_folder = tmp_path / "x.spacy"
    spacy_folder.mkdir()
    _fails_in_one_line(_run("stats", spacy_folder), "x.spacy", "is a folder")


def test_case8_unwritable_outputs_leave_nothing_half_written(tmp_path, toy_record):
    src = _write(tmp_path / "docs.json", _docs(toy_record, 2))
    pred = _write(tmp_path / "pred.json", [_pred("doc 0", 0, 1, "P19")])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    folder = tmp_path / "out_folder"
    folder.mkdir()
    _fails_in_one_line(_run("convert", src, folder), "out_folder", "is a folder")
    _fails_in_one_line(_run("convert", src, blocker / "o.spacy"), "a_file is a file")
    result = _run("score", "--gold", src, "--pred", pred, "-o", blocker / "scores.json")
    _fails_in_one_line(result, "a_file is a file")
    assert result.stdout == ""  # nothing printed before the failure
    sents = _write(tmp_path / "s.json", [{"sentence": "A <e1>b</e1> c <e2>d</e2>.",
                                          "relation": "Other"}])
    _fails_in_one_line(_run("build-index", sents, blocker / "idx"), "a_file is a file")
    # an existing output survives a failed run, and no temporary file is left behind
    out = tmp_path / "out.spacy"
    _ok(_run("convert", src, out))
    before = out.read_bytes()
    bad = _write(tmp_path / "bad.json", [{"title": "x"}])
    _fails_in_one_line(_run("convert", bad, out, "--format", "docred"), "bad.json")
    assert out.read_bytes() == before
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private mode
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_case8_predict_checks_its_output_first_and_reads_unlabelled_input(tmp_path,
                                                                        toy_record):
    pipeline = tmp_path / "blank"
    spacy.blank("en").to_disk(pipeline)
    records = _docs(toy_record, 2)
    for record in records:
        del record["labels"]
    src = _write(tmp_path / "docs.json", records)
    folder = tmp_path / "out"
    folder.mkdir()
    _fails_in_one_line(_run("predict", pipeline, src, folder), "out", "is a folder")
    out = tmp_path / "result.json"
    _ok(_run("predict", pipeline, src, out))
    assert json.loads(out.read_text()) == []
    _fails_in_one_line(_run("predict", pipeline, tmp_path / "missing.json", out),
                       "missing.json", "not found")


def test_case8_build_index_keeps_foreign_folders(tmp_path, toy_record):
    sents = _write(tmp_path / "s.json", [{"sentence": "A <e1>b</e1> c <e2>d</e2>.",
                                          "relation": "Other"}])
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    _fails_in_one_line(_run("build-index", sents, folder), "mine", "not an output")
    assert (folder / "notes.txt").read_text() == "keep me"


def test_case8_truncated_label_names_and_negative_ranges(tmp_path, toy_record):
    sents, rels, names = _semeval(tmp_path, [1])
    names.write_text('{"relation": {"names": ["Other", "Cause-Eff')
    _fails_in_one_line(_run("stats", sents, "--relations", rels, "--label-names", names),
                       "n.json", "not valid JSON")
    names.write_text('{"relation": {"names": []}}')
    _fails_in_one_line(_run("stats", sents, "--relations", rels, "--label-names", names),
                       "n.json", "non-empty list of names")
    names.write_text('["Other", "Other"]')
    _fails_in_one_line(_run("stats", sents, "--relations", rels, "--label-names", names),
                       "'Other' occurs more than once")
    src = _write(tmp_path / "docs.json", _docs(toy_record, 2))
    _fails_in_one_line(_run("stats", src, "--first", "-1"), "--first must be a count >= 0")
    _fails_in_one_line(_run("convert", src, tmp_path / "o.spacy", "--last", "-3"),
                       "--last must be a count >= 0")
    _fails_in_one_line(_run("score", "--gold", src, "--pred", src, "--gold-last", "-1"),
                       "--last must be a count >= 0")


# 9. usable but suspicious data is counted; unusable data is an error


def test_case9_self_relations_and_relations_outside_the_set(tmp_path, toy_record):
    records = _docs(toy_record, 2)
    records[1]["labels"].append({"h": 2, "t": 2, "r": "P19", "evidence": []})
    records[1]["labels"].append({"h": 0, "t": 3, "r": "P9999", "evidence": []})
    src = _write(tmp_path / "docs.json", records)
    rel_set = _write(tmp_path / "rel_info.json", {"P19": "place of birth", "P170": "creator",
                                                  "P1327": "partner"})
    result = _ok(_run("stats", src, "--json", "--relation-set", rel_set))
    assert json.loads(result.stdout)["docs"] == 2
    assert "1 gold relations whose head and tail are the same entity (h == t): 1 ('doc 1')" in (
        result.output)
    assert "1 gold relations outside the relation set: 1 ('doc 1')" in result.output
    pred = _write(tmp_path / "pred.json", [_pred("doc 0", 0, 1, "P19"),
                                           _pred("doc 0", 0, 1, "P8888")])
    result = _ok(_run("score", "--gold", src, "--pred", pred, "--relation-set", rel_set))
    assert "1 predictions with a relation outside the relation set" in result.output


@pytest.mark.parametrize("sentence,expected", [
    ("The <e1>a</e1> and <e1>b</e1> near <e2>c</e2>.", "found 2 <e1> tags"),
    ("The <e1>a <e2>b</e1> c</e2>.", "spans overlap"),
    ("The <e1>a <e2>b</e2></e1>.", "spans overlap"),
    ("The <e1>a</e1> and <e2>c.", "found 0 </e2> tags"),
])
def test_case9_doubled_or_overlapping_semeval_tags(tmp_path, sentence, expected):
    good = {"sentence": "The <e1>a</e1> b <e2>c</e2>.", "relation": "Other"}
    src = _write(tmp_path / "s.json", [good, {"sentence": sentence, "relation": "Other"}])
    _fails_in_one_line(_run("stats", src), "s.json", "document 1", "'sentence'", expected)
    result = _ok(_run("stats", src, "--skip-invalid", "--json"))
    assert json.loads(result.stdout)["docs"] == 1


@pytest.mark.parametrize("name,content", [("empty.json", "[]"), ("empty.jsonl", "\n\n")])
def test_case9_empty_inputs(tmp_path, name, content):
    src = tmp_path / name
    src.write_text(content)
    _fails_in_one_line(_run("stats", src), name, "no documents")
    _fails_in_one_line(_run("convert", src, tmp_path / "o.spacy"), name, "no documents")
    assert not (tmp_path / "o.spacy").exists()


def test_case9_empty_selection_and_empty_predictions(tmp_path, toy_record):
    src = _write(tmp_path / "docs.json", _docs(toy_record, 2))
    _fails_in_one_line(_run("stats", src, "--first", "0"), "selection has no documents")
    pred = _write(tmp_path / "pred.json", [])
    result = _ok(_run("score", "--gold", src, "--pred", pred))
    assert "prediction list is empty" in result.output


def test_case9_nul_characters_are_counted(tmp_path, toy_record):
    records = _docs(toy_record, 2)
    records[1]["sents"][0][2] = "w\u0000as"
    src = _write(tmp_path / "docs.json", records)
    result = _ok(_run("stats", src))
    assert "1 tokens with NUL characters in the text: 1 ('doc 1')" in result.output
    sents = _write(tmp_path / "s.json", [{"sentence": "A <e1>b</e1>\u0000 <e2>c</e2>.",
                                          "relation": "Other"}])
    assert "1 sentences with NUL characters" in _ok(_run("stats", sents)).output
