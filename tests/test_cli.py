"""The foundation's command line: convert, stats, score, and their errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from spacy_lmrc.cli import app

runner = CliRunner()


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_help_on_every_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = [c.name for c in app.registered_commands]
    assert {"convert", "stats", "score"} <= set(commands)
    for name in commands:
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, name
        assert "Usage" in sub.output


def test_python_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "spacy_lmrc", "--help"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and "convert" in proc.stdout


def test_convert_then_stats(tmp_path, toy_record):
    src = _write(tmp_path, "docs.json", [toy_record, dict(toy_record, title="second")])
    out = tmp_path / "out" / "docs.spacy"
    result = runner.invoke(app, ["convert", str(src), str(out), "--last", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["stats", str(out), "--json"])
    stats = json.loads(result.stdout)
    assert stats["docs"] == 1 and stats["entities"] == 4
    assert stats["candidate_pairs"] == 12 and stats["relation_pairs"] == 3
    assert stats["na_pairs"] == 9 and stats["triples"] == 3


def test_document_counts_take_null_as_weasel_writes_it(tmp_path, toy_record):
    src = _write(tmp_path, "docs.json", [toy_record, dict(toy_record, title="second")])
    result = runner.invoke(app, ["stats", str(src), "--json", "--first", "null", "--last", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["docs"] == 1
    result = runner.invoke(app, ["stats", str(src), "--first", "two"])
    assert result.exit_code != 0 and "a number of documents or null" in result.output


def test_bad_input_is_one_line_not_a_traceback(tmp_path, toy_record):
    toy_record["labels"][0]["h"] = 99
    src = _write(tmp_path, "bad.json", [toy_record])
    result = runner.invoke(app, ["stats", str(src)])
    assert result.exit_code == 1
    assert "bad.json" in result.output and "labels[0].h" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["stats", str(src), "--json", "--skip-invalid"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["skipped_invalid"] == 1
    assert "skipped 1" in result.output


def test_score_prints_official_keys(tmp_path, toy_record):
    gold = _write(tmp_path, "gold.json", [toy_record])
    train = _write(tmp_path, "train.json", [dict(toy_record, title="train doc")])
    pred = _write(tmp_path, "result.json", [
        {"title": "Ada Lovelace", "h_idx": 0, "t_idx": 1, "r": "P19", "evidence": [0]},
        {"title": "Ada Lovelace", "h_idx": 1, "t_idx": 0, "r": "P19", "evidence": []},
    ])
    result = runner.invoke(app, ["score", "--gold", str(gold), "--pred", str(pred),
                                 "--train", str(train)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    for key in ("precision", "recall", "f1", "ign_f1", "intra_f1", "inter_f1"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["precision"] == 0.5
    assert scores["ign_f1"] < scores["f1"]  # the correct fact also holds in the train doc
    assert "P19" in scores["per_relation"] and "f1" in scores["pairs"]


def test_score_rejects_bad_prediction(tmp_path, toy_record):
    gold = _write(tmp_path, "gold.json", [toy_record])
    pred = _write(tmp_path, "result.json", [{"title": "Ada Lovelace", "h_idx": 0}])
    result = runner.invoke(app, ["score", "--gold", str(gold), "--pred", str(pred)])
    assert result.exit_code == 1
    assert "result.json" in result.output and "document 0" in result.output


@pytest.mark.integration
def test_stats_equal_lmrc_table_1(shared_data):
    result = runner.invoke(app, ["stats", str(shared_data / "redocred" / "dev_revised.json"),
                                 "--json"])
    stats = json.loads(result.stdout)
    assert (stats["docs"], stats["candidate_pairs"], stats["na_pairs"], stats["relation_pairs"],
            stats["triples"]) == (500, 193232, 179870, 13362, 17284)
