import json

import pytest
import spacy
from spacy.language import Language
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.proposer.model import RCPModel

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
    # the terminal gets a short table, the file the full scores
    table = result.stdout.splitlines()
    assert table[0].split() == ["P", "R", "F1", "Ign", "F1", "Intra", "F1", "Inter", "F1"]
    assert table[1].split()[:4] == ["relations", "100.00", "33.33", "50.00"]
    assert table[3].split() == ["candidate", "pairs", "100.00", "33.33", "50.00", "8.33"]
    assert "docs/s" in table[-1] and len(table) == 5 and "per_relation" not in result.stdout
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


def test_evaluate_a_trained_proposer_folder(tmp_path, toy_record, tiny_encoder_dir):
    """A proposer folder (train-proposer's model-best) is scored on its own: pairs, kept, speed."""
    data = tmp_path / "gold.json"
    data.write_text(json.dumps([toy_record]))
    model = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16)
    model.settings.trained = True
    model.settings.threshold = 0.0
    model.save_pretrained(tmp_path / "model-best")
    out = tmp_path / "proposer.json"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "model-best"), str(data),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["evaluated"]["components"] == ["lmrc_candidate_proposer"]
    assert scores["candidates"]["recall"] == 1.0 and scores["candidates"]["kept_fraction"] == 1.0
    assert scores["candidates"]["precision"] == pytest.approx(0.25)
    table = result.stdout.splitlines()
    assert table[0].split() == ["P", "R", "F1", "kept"] and "relations" not in result.stdout
    assert table[1].split() == ["candidate", "pairs", "25.00", "100.00", "40.00", "100.00"]
    assert table[2].startswith("(scores in %) 1 documents in") and table[2].endswith("docs/s")
