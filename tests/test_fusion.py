"""The fused relation score, the RC that may answer None, its candidate negatives, named splits."""

from __future__ import annotations

import json
import random

import pytest
from spacy.util import registry

from spacy_lmrc.corpus.splits import split_records
from spacy_lmrc.errors import InputError
from spacy_lmrc.fusion import (
    LLMScore,
    LogisticScore,
    ProductScore,
    RelationScores,
    ScoredRelation,
    best_threshold,
    fit_logistic,
    fusion_from_config,
    tune_fusion,
)
from spacy_lmrc.llm.formats import CompactFormat
from spacy_lmrc.metrics.classification import multi_relation_scores
from spacy_lmrc.tasks.base import ParseStats
from spacy_lmrc.tasks.lmrc import LMRCTask, make_lmrc_task

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport",
          "P17": "country"}


def test_each_fusion_scores_from_the_stage_probabilities():
    scores = RelationScores(pair=0.5, relation=0.8, none=0.1)
    assert LLMScore().score(scores) == 0.8
    assert ProductScore().score(scores) == pytest.approx(0.4)
    assert ProductScore().score(RelationScores(pair=None, relation=0.8)) == 0.8
    logistic = LogisticScore([1.0, 1.0, 0.0], bias=0.0)
    # logit(0.5) = 0, log(0.8): sigmoid(log 0.8) = 0.8 / 1.8
    assert logistic.score(scores) == pytest.approx(0.8 / 1.8)


@pytest.mark.parametrize("fusion", [LLMScore(0.3), ProductScore(0.2),
                                    LogisticScore([0.5, 1.5, -2.0], bias=0.25, threshold=0.4)])
def test_a_fusion_is_rebuilt_from_its_stored_config(fusion):
    restored = fusion_from_config(json.loads(json.dumps(fusion.config())))
    assert type(restored) is type(fusion) and restored.config() == fusion.config()
    scores = RelationScores(pair=0.7, relation=0.6, none=0.3)
    assert restored.score(scores) == pytest.approx(fusion.score(scores))


def test_the_threshold_maximises_f1_counting_gold_facts_never_predicted():
    scores = [0.9, 0.8, 0.7, 0.2]
    correct = [True, True, False, True]
    threshold, metrics = best_threshold(scores, correct, gold=4)
    # keep 2: P 1, R 0.5, F1 0.667; keep 4: P 0.75, R 0.75, F1 0.75
    assert threshold == 0.2 and metrics["f1"] == pytest.approx(0.75)
    threshold, metrics = best_threshold(scores, correct, gold=10)
    assert threshold == 0.2 and metrics["kept"] == 4  # F1 = 6/14 beats 4/12
    # nothing right: keep nothing, with a finite threshold a pipeline can store
    threshold, metrics = best_threshold([0.4, 0.3], [False, False], gold=3)
    assert 0.4 < threshold < 0.41 and metrics["kept"] == 0 and metrics["f1"] == 0.0
    # tied scores are kept or dropped together
    threshold, metrics = best_threshold([0.5, 0.5, 0.1], [True, False, False], gold=1)
    assert threshold == 0.5 and metrics["kept"] == 2


def _synthetic(n_docs: int = 40, seed: int = 0) -> tuple[list[ScoredRelation], dict[int, int]]:
    """Relations where the proposer's score separates right from wrong and the LLM's does not
    (as on candidates the RC cannot reject): the product and the logistic fusion must see it."""
    rng = random.Random(seed)
    items, gold = [], {}
    for doc in range(n_docs):
        gold[doc] = 6
        for k in range(8):
            correct = k < 4
            pair = rng.uniform(0.6, 1.0) if correct else rng.uniform(0.0, 0.5)
            items.append(ScoredRelation(doc, RelationScores(pair, rng.uniform(0.3, 1.0), 0.0),
                                        correct))
    return items, gold


def test_tuning_prefers_a_fusion_that_uses_the_proposer_when_it_separates():
    items, gold = _synthetic()
    best, rows = tune_fusion(items, gold)
    by_kind = {row["fusion"]: row for row in rows}
    assert set(by_kind) == {"llm", "product", "logistic"}
    assert best.kind in ("product", "logistic")
    assert by_kind[best.kind]["cross_fitted_f1"] > by_kind["llm"]["cross_fitted_f1"] + 0.05
    for row in rows:
        assert 0.0 <= row["cross_fitted_f1"] <= 1.0 and row["kept"] > 0


def test_the_logistic_fusion_learns_which_stage_to_trust():
    items, _ = _synthetic(seed=1)
    fitted = fit_logistic(items)
    assert fitted.weights[0] > 1.0  # the proposer's logit carries the signal
    assert abs(fitted.weights[1]) < fitted.weights[0]


def test_rc_relations_carry_the_fused_score_and_the_stage_scores(toy_doc):
    toy_doc._.relation_candidates = [{"head": 0, "tail": 1, "score": 0.5},
                                     {"head": 3, "tail": 2, "score": 0.9}]
    task = LMRCTask(labels=LABELS, pair_source="candidates", allow_none=True,
                    fusion=ProductScore(0.3), prompt_format=CompactFormat())
    stats = ParseStats()
    relations = task.relations_from_answers(
        toy_doc, [(0, 1), (3, 2)],
        [[("None", 0.5), ("place of birth", 0.4), ("country", 0.1)], [("creator", 0.9)]], stats)
    assert relations == [
        {"head": 3, "tail": 2, "label": "P170", "score": 0.81,
         "scores": {"pair": 0.9, "relation": 0.9, "none": 0.0}}]
    assert stats.counts["below_threshold"] == 2 and stats.counts["none"] == 1
    assert stats.counts["several_relations"] == 1


def test_several_relations_of_a_pair_are_all_kept_above_the_threshold(toy_doc):
    task = LMRCTask(labels=LABELS, pair_source="all", fusion=LLMScore(0.2))
    relations = task.relations_from_answers(
        toy_doc, [(0, 2)], [[("partner in business or sport", 0.6), ("country", 0.25)]],
        ParseStats())
    assert [(r["label"], r["scores"]["pair"]) for r in relations] == [("P1327", None),
                                                                      ("P17", None)]


def test_rc_trains_on_the_best_scored_candidates_without_relation(toy_doc):
    toy_doc._.relation_candidates = [
        {"head": 1, "tail": 0, "score": 0.95}, {"head": 0, "tail": 1, "score": 0.9},
        {"head": 2, "tail": 3, "score": 0.7}, {"head": 1, "tail": 3, "score": 0.6},
        {"head": 3, "tail": 1, "score": 0.1}]
    task = make_lmrc_task(labels=LABELS, train_negatives=2 / 3)
    request, targets = task.training_request(toy_doc)
    pairs = [(q.head, q.tail) for q in request.queries]
    names = [e["name"] for e in toy_doc._.entities]
    # 3 related pairs (gold) + the 2 best-scored candidates without relation
    assert sorted(pairs) == sorted([(names[h], names[t]) for h, t in
                                    [(0, 1), (3, 2), (0, 2), (1, 0), (2, 3)]])
    assert targets[pairs.index((names[1], names[0]))] == ["None"]
    assert request.none_answer == "None"
    assert task.training_counts == {"negative_pairs": 2, "related_pairs": 3}


def test_candidate_negatives_without_candidates_is_an_error_naming_the_document(toy_doc):
    task = make_lmrc_task(labels=LABELS)
    with pytest.raises(InputError, match="Ada Lovelace.*ProposedCorpus"):
        task.training_request(toy_doc)


def test_a_document_without_pairs_needs_no_candidates(toy_doc):
    single = toy_doc.copy()
    single._.entities = toy_doc._.entities[:1]
    single._.relations = []
    request, targets = make_lmrc_task(labels=LABELS).training_request(single)
    assert request.queries == [] and targets == []


def test_random_negatives_are_a_seeded_sample(toy_doc):
    task = LMRCTask(labels=LABELS, allow_none=True, train_negatives=1.0)
    first, _ = task.training_request(toy_doc, random.Random(3))
    again, _ = task.training_request(toy_doc, random.Random(3))
    assert [(q.head, q.tail) for q in first.queries] == [(q.head, q.tail) for q in again.queries]
    assert len(first.queries) == 6  # 3 related + 3 without relation


def test_the_fusion_and_decoding_settings_survive_the_task_config(toy_doc):
    task = make_lmrc_task(labels=LABELS, fusion=LogisticScore([1, 2, 3], 0.5, 0.6),
                             min_probability=0.2)
    assert task.build_request(toy_doc)[0].min_probability == 0.2
    restored = make_lmrc_task(labels=LABELS)
    restored.set_config(json.loads(json.dumps(task.get_config())))
    assert restored.fusion.config() == task.fusion.config()
    assert (restored.min_probability, restored.negative_source) == (0.2, "candidates")
    # a task.json saved before the fusion existed: its threshold is the LLM's probability
    old = make_lmrc_task(labels=LABELS)
    old.set_config({"threshold": 0.4})
    assert old.fusion.config() == LLMScore(0.4).config()


def test_an_rc_naming_a_relation_for_every_candidate_keeps_its_threshold():
    task = registry.resolve({"t": {
        "@misc": "spacy_lmrc.LMRCTask.v1", "labels": LABELS, "allow_none": False,
        "min_probability": None,
        "fusion": {"@misc": "spacy_lmrc.fusion.llm.v1", "threshold": 0.3}}})["t"]
    assert not task.allow_none and task.min_probability is None
    assert task.fusion.config() == {"@misc": "spacy_lmrc.fusion.llm.v1", "threshold": 0.3}


def test_the_baseline_decodes_relations_below_none_for_its_fusion(toy_doc):
    """v2: every pair, None allowed, relations above min_probability for the fusion to keep;
    v1: greedy answers kept from a threshold on the LLM's probability."""
    v2 = registry.resolve({"t": {
        "@misc": "spacy_lmrc.LMRCBaselineTask.v2", "labels": LABELS,
        "fusion": {"@misc": "spacy_lmrc.fusion.logistic.v1", "weights": [0, 1, 1], "bias": 0.0,
                   "threshold": 0.2}}})["t"]
    request = v2.build_request(toy_doc)[0]
    assert request.min_probability == 0.05 and request.none_answer == "None"
    assert len(request.queries) == len(toy_doc._.entities) * (len(toy_doc._.entities) - 1)
    assert v2.fusion.config()["@misc"] == "spacy_lmrc.fusion.logistic.v1"
    v1 = registry.resolve({"t": {"@misc": "spacy_lmrc.LMRCBaselineTask.v1", "labels": LABELS,
                                 "threshold": 0.3}})["t"]
    assert v1.min_probability is None and v1.pair_source == "all"
    assert v1.fusion.config() == LLMScore(0.3).config()


def test_bad_task_settings_are_refused():
    with pytest.raises(ValueError, match="negative_source"):
        LMRCTask(labels=LABELS, negative_source="proposer")
    with pytest.raises(ValueError, match="min_probability"):
        LMRCTask(labels=LABELS, min_probability=0.0)


def test_multi_relation_scores_count_pairs_and_recall(toy_doc):
    gold = toy_doc.copy()
    gold._.relations = [{"head": 0, "tail": 1, "label": "P19"},
                        {"head": 0, "tail": 1, "label": "P17"},
                        {"head": 3, "tail": 2, "label": "P170"}]
    pred = toy_doc.copy()
    pred._.relations = [{"head": 0, "tail": 1, "label": "P17", "score": 0.5},
                        {"head": 3, "tail": 2, "label": "P170", "score": 0.5},
                        {"head": 3, "tail": 2, "label": "P19", "score": 0.5}]
    scores = multi_relation_scores([pred], [gold])
    assert scores == {"gold_pairs": 1, "gold_facts": 2, "predicted_pairs": 1,
                      "predicted_related_pairs": 2, "recall": 0.5}


def test_named_splits_concatenate_their_files_in_order(tmp_path):
    (tmp_path / "train_revised_992.json").write_text(json.dumps([{"title": "t1"}]))
    (tmp_path / "dev_revised.json").write_text(json.dumps([{"title": f"d{i}"}
                                                           for i in range(500)]))
    records, described = split_records("medium", tmp_path)
    assert [r["title"] for r in records[:3]] == ["t1", "d0", "d1"] and len(records) == 401
    assert len(described) == 2
    small, _ = split_records("small", tmp_path)
    assert len(small) == 400 and small[0]["title"] == "d0"
    with pytest.raises(InputError, match="train_revised.json"):
        split_records("full", tmp_path)
    with pytest.raises(InputError, match="unknown split"):
        split_records("large", tmp_path)


@pytest.mark.integration
def test_the_redocred_medium_split_holds_1392_documents(shared_data):
    records, _ = split_records("medium", shared_data / "redocred")
    assert len(records) == 1392
    dev = json.loads((shared_data / "redocred" / "dev_revised.json").read_text())
    dev_titles = {r["title"] for r in dev[-100:]}
    assert not dev_titles & {r["title"] for r in records}


def test_the_proposed_corpus_scores_every_pair_of_the_reference_docs(tiny_encoder_dir, toy_record,
                                                                     tmp_path, nlp):
    from spacy_lmrc.proposer.model import RCPModel

    proposer = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16)
    proposer.settings.trained = True
    proposer.save_pretrained(tmp_path / "proposer")
    (tmp_path / "train.json").write_text(json.dumps([toy_record]))
    reader = registry.resolve({"r": {
        "@readers": "spacy_lmrc.ProposedCorpus.v1", "proposer": str(tmp_path / "proposer"),
        "corpus": {"@readers": "spacy_lmrc.DocRedCorpus.v1",
                   "path": str(tmp_path / "train.json")}}})["r"]
    (example,) = list(reader(nlp))
    candidates = example.reference._.relation_candidates
    assert len(candidates) == 12  # 4 entities: every ordered pair, with a score
    assert all(0.0 <= c["score"] <= 1.0 and "hints" not in c for c in candidates)
    assert len(example.reference._.relations) == 3  # gold kept
    task = make_lmrc_task(labels=LABELS, train_negatives=1.0)
    request, targets = task.training_request(example.reference)
    assert len(request.queries) == 6 and targets.count(["None"]) == 3


def _tuned(nlp, toy_record: dict, tmp_path):
    """``nlp`` saved, tuned by ``spacy-lmrc tune-fusion`` on two toy documents: the report
    and the tuned pipeline."""
    import spacy
    from typer.testing import CliRunner

    from spacy_lmrc.cli import app

    nlp.to_disk(tmp_path / "untuned")
    second = {**toy_record, "title": "Charles Babbage"}
    (tmp_path / "dev.json").write_text(json.dumps([toy_record, second]))
    result = CliRunner().invoke(app, [
        "tune-fusion", str(tmp_path / "untuned"), str(tmp_path / "dev.json"),
        "-o", str(tmp_path / "tuned"), "--report", str(tmp_path / "fusion.json")])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "fusion.json").read_text()), spacy.load(tmp_path / "tuned")


def test_tune_fusion_stores_the_chosen_fusion_in_the_pipeline(tiny_encoder_dir, tiny_llama,
                                                              toy_record, tmp_path):
    import spacy

    from spacy_lmrc.proposer.model import RCPModel

    proposer = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16)
    proposer.settings.trained = True
    proposer.settings.threshold = 0.0
    proposer.save_pretrained(tmp_path / "proposer")
    nlp = spacy.blank("en")
    nlp.add_pipe("lmrc_candidate_proposer", config={"model": str(tmp_path / "proposer")})
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCTask.v1", "labels": LABELS, "min_probability": 0.05},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_llama}})
    report, tuned = _tuned(nlp, toy_record, tmp_path)
    assert report["documents"] == 2 and report["gold_facts"] == 6
    assert report["relations_scored"] >= 12  # every candidate pair has a greedy answer
    assert {row["fusion"] for row in report["fusions"]} == {"llm", "product", "logistic"}
    stored = tuned.get_pipe("llm_relation_classifier").task.fusion.config()
    assert stored["@misc"] == report["stored"]["@misc"]
    assert stored["threshold"] == pytest.approx(report["stored"]["threshold"])


def test_tune_fusion_thresholds_the_llm_only_baseline(tiny_llama, toy_record, tmp_path):
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCBaselineTask.v2", "labels": LABELS,
                 "min_probability": 0.05},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_llama}})
    report, tuned = _tuned(nlp, toy_record, tmp_path)
    pairs = 2 * len(toy_record["vertexSet"]) * (len(toy_record["vertexSet"]) - 1)
    # every ordered pair is asked, and relations below the greedy answer are decoded too
    assert report["relations_scored"] > pairs
    assert {row["fusion"] for row in report["fusions"]} == {"llm", "product", "logistic"}
    task = tuned.get_pipe("llm_relation_classifier").task
    assert task.pair_source == "all" and task.min_probability == 0.05
    assert task.fusion.config()["@misc"] == report["stored"]["@misc"]


def test_one_document_is_tuned_without_cross_fitting():
    items = [ScoredRelation(0, RelationScores(None, p, 0.5), correct)
             for p, correct in [(0.9, True), (0.6, True), (0.3, False), (0.2, False)]]
    fusion, rows = tune_fusion(items, {0: 2})
    assert all(row["cross_fitted_f1"] is None for row in rows)
    assert fusion.kind == "llm" and fusion.threshold == pytest.approx(0.6)  # first by dev F1
    assert [row["f1"] for row in rows] == pytest.approx([1.0, 1.0, 1.0])
