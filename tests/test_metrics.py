import copy
import random

import pytest

from spacy_lmrc.metrics import (
    gold_from_doc,
    gold_from_record,
    micro_prf,
    score_docred,
    semeval_macro_f1,
    train_facts_from_golds,
)

from .official_docred import official_scores


def _pred(title, h, t, r, evidence=()):
    return {"title": title, "h_idx": h, "t_idx": t, "r": r, "evidence": list(evidence)}


@pytest.fixture
def gold(toy_record):
    return [gold_from_record(toy_record)]


def test_perfect_predictions(gold, toy_record):
    preds = [_pred("Ada Lovelace", lab["h"], lab["t"], lab["r"], lab["evidence"])
             for lab in toy_record["labels"]]
    scores = score_docred(gold, preds)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 1.0
    assert scores["evidence_f1"] == 1.0
    assert scores["ign_f1"] is None


def test_duplicate_predictions_count_once(gold):
    preds = [_pred("Ada Lovelace", 0, 1, "P19")] * 3 + [_pred("Ada Lovelace", 1, 0, "P19")]
    scores = score_docred(gold, preds)
    assert scores["counts"]["predicted"] == 2
    assert scores["precision"] == 0.5
    assert scores["recall"] == pytest.approx(1 / 3)


def test_empty_predictions(gold):
    scores = score_docred(gold, [])
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.0
    assert scores["pairs"]["f1"] == 0.0


def test_unknown_titles_count_as_predicted_never_correct(gold):
    preds = [_pred("Ada Lovelace", 0, 1, "P19"), _pred("Not a gold title", 0, 1, "P19")]
    scores = score_docred(gold, preds)
    assert scores["precision"] == 0.5
    assert scores["counts"]["predictions_for_unknown_titles"] == 1


def test_ign_f1_removes_train_facts_from_correct_and_predicted(gold, toy_record):
    train = copy.deepcopy(toy_record)
    train["title"] = "another document"
    train["labels"] = [{"h": 0, "t": 1, "r": "P19", "evidence": []}]  # Ada Lovelace -> London
    train_facts = train_facts_from_golds([gold_from_record(train)])
    preds = [_pred("Ada Lovelace", 0, 1, "P19"), _pred("Ada Lovelace", 3, 2, "P170"),
             _pred("Ada Lovelace", 2, 3, "P170")]
    scores = score_docred(gold, preds, train_facts)
    # correct 2 of 3; one correct fact is in train: ignored precision = 1 / 2, recall stays 2/3
    assert scores["counts"]["correct_in_train"] == 1
    ign_p = 1 / (2 + 1e-5)
    rec = 2 / 3
    assert scores["ign_f1"] == pytest.approx(2 * ign_p * rec / (ign_p + rec))
    assert scores["recall"] == pytest.approx(rec)


def test_train_facts_match_any_mention_name_pair(gold):
    # "She" is a second mention name of entity 0: it must match as well as "Ada Lovelace"
    train_facts = {("She", "London", "P19")}
    scores = score_docred(gold, [_pred("Ada Lovelace", 0, 1, "P19")], train_facts)
    assert scores["counts"]["correct_in_train"] == 1


def test_intra_inter_split(gold):
    # (0, 1) share sentence 0: intra; (0, 2): Ada in sents {0, 1}, Babbage in {1, 2}: intra;
    # (3, 2): both in sentence 2: intra. Predict an inter pair (1, 3): London {0,1}, Engine {2}.
    preds = [_pred("Ada Lovelace", 0, 1, "P19"), _pred("Ada Lovelace", 1, 3, "P17")]
    scores = score_docred(gold, preds)
    assert scores["intra_precision"] == 1.0
    assert scores["intra_recall"] == pytest.approx(1 / 3)
    assert scores["inter_precision"] == 0.0
    assert scores["inter_recall"] == 0.0


def test_intra_matches_doc_helper(toy_doc):
    gold = gold_from_doc(toy_doc)
    assert gold.is_intra(0, 1) and gold.is_intra(3, 2) and not gold.is_intra(1, 3)


def test_per_relation_and_pair_scores(gold):
    preds = [_pred("Ada Lovelace", 0, 1, "P19"), _pred("Ada Lovelace", 0, 1, "P20")]
    scores = score_docred(gold, preds)
    assert scores["per_relation"]["P19"]["f1"] == 1.0
    assert scores["per_relation"]["P20"]["precision"] == 0.0
    assert scores["per_relation"]["P170"]["recall"] == 0.0
    assert scores["pairs"]["precision"] == 1.0  # one predicted pair, and it holds a relation
    assert scores["pairs"]["recall"] == pytest.approx(1 / 3)


def test_malformed_prediction_names_the_prediction(gold):
    with pytest.raises(ValueError, match="prediction 0"):
        score_docred(gold, [{"title": "Ada Lovelace", "h_idx": 0}])


@pytest.mark.integration
def test_agrees_with_official_scorer_on_random_predictions(shared_data):
    import json

    records = json.loads((shared_data / "redocred" / "dev_revised.json").read_text())
    train, dev = records[:400], records[400:]
    golds = [gold_from_record(r) for r in dev]
    train_facts = train_facts_from_golds(gold_from_record(r) for r in train)
    relations = sorted({lab["r"] for r in records for lab in r["labels"]})
    rng = random.Random(0)
    for trial in range(5):
        preds = []
        for doc in dev:
            n = len(doc["vertexSet"])
            for lab in doc["labels"]:
                if rng.random() < 0.6:
                    preds.append(_pred(doc["title"], lab["h"], lab["t"], lab["r"],
                                       rng.sample(range(len(doc["sents"])), 1)))
            for _ in range(rng.randint(0, 8)):
                preds.append(_pred(doc["title"], rng.randrange(n), rng.randrange(n),
                                   rng.choice(relations)))
        preds += preds[: 20 * trial]  # duplicates
        preds.append(_pred("unknown title", 0, 1, relations[0]))
        ours = score_docred(golds, preds, train_facts)
        ref = official_scores(dev, preds, train)
        for key in ("precision", "recall", "f1", "ign_f1", "evidence_f1"):
            assert ours[key] == ref[key], key


def test_micro_prf_ignores_negative_label():
    gold = ["A", "B", "Other", "Other", "A"]
    pred = ["A", "Other", "A", "Other", "B"]
    scores = micro_prf(gold, pred, "Other")
    # correct: 1 (A); predicted positive: 3 (A, A, B); gold positive: 3
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["counts"]["gold_positive"] == 3


def test_semeval_macro_f1_counts_direction():
    gold = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e1,e2)", "Other"]
    pred = ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)", "Other", "Component-Whole(e1,e2)"]
    # Cause-Effect: correct 1, predicted 2 (either direction), gold 2 -> F1 0.5
    # Component-Whole: correct 0 -> F1 0; macro over the 2 gold types = 0.25
    assert semeval_macro_f1(gold, pred) == pytest.approx(0.25)


def test_semeval_macro_f1_perfect():
    gold = ["Cause-Effect(e1,e2)", "Other", "Message-Topic(e2,e1)"]
    assert semeval_macro_f1(gold, list(gold)) == 1.0
