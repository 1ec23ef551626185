import json

import spacy
from spacy.language import Language
from typer.testing import CliRunner

from spacy_lmrc.cli import app

runner = CliRunner()


@Language.component("test_first_pair_p19")
def first_pair_p19(doc):
    """Predicts P19 for entity pair (0, 1) and proposes that pair as a candidate."""
    doc._.relation_candidates = [{"head": 0, "tail": 1, "score": 0.8}]
    doc._.relations = [{"head": 0, "tail": 1, "label": "P19", "score": 1.0}]
    return doc


def test_evaluate_and_compare(tmp_path, toy_record):
    data = tmp_path / "gold.json"
    data.write_text(json.dumps([toy_record]))
    nlp = spacy.blank("en")
    nlp.add_pipe("test_first_pair_p19")
    nlp.to_disk(tmp_path / "pipe")
    out, preds = tmp_path / "m.json", tmp_path / "result.json"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pipe"), str(data), "-o", str(out),
                                 "--predictions", str(preds), "--train", str(data)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["precision"] == 1.0 and abs(scores["recall"] - 1 / 3) < 1e-9
    assert scores["ign_f1"] == 0.0  # the only correct fact is in the (same) training file
    assert scores["candidates"]["kept_fraction"] == 1 / 12
    assert scores["evaluated"]["documents"] == 1 and scores["evaluated"]["train_facts_from"]
    assert json.loads(preds.read_text()) == [
        {"title": "Ada Lovelace", "h_idx": 0, "t_idx": 1, "r": "P19", "evidence": []}]
    table = runner.invoke(app, ["compare", str(out), str(out), "--names", "a,b"])
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "P", "R"]
    assert lines[2].startswith("a ") and "100.00" in lines[2] and "33.33" in lines[2]
