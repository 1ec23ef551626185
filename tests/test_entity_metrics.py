"""Entity metrics (typed mention NER, B-cubed and link scores of the grouping) and the
end-to-end alignment of predicted to gold entities, on hand-written documents whose figures
are worked out by hand."""

from __future__ import annotations

import pytest

from spacy_lmrc.metrics.entities import (
    bcubed,
    grouping_on_gold_mentions,
    grouping_scores,
    ner_scores,
    pairwise_links,
)
from spacy_lmrc.metrics.text_eval import (
    ENTITIES_MERGED,
    ENTITY_MISSED,
    ENTITY_SPLIT,
    FOUND,
    NOT_PROPOSED,
    RELATION_WRONG,
    align_entities,
    attribute_losses,
    loss_table,
    text_relation_scores,
    translate_relations,
)

# the toy document's tokens (tests/conftest.py), joined by spaces:
# 0 Ada 1 Lovelace 2 was 3 born 4 in 5 London 6 . 7 She 8 worked 9 with 10 Charles 11 Babbage
# 12 in 13 London 14 . 15 Babbage 16 designed 17 the 18 Analytical 19 Engine 20 .


def _entity(type_: str, *spans: tuple[int, int]) -> dict:
    return {"name": "", "type": type_,
            "mentions": [{"start": s, "end": e, "sent": 0, "name": ""} for s, e in spans]}


def _predicted(nlp, toy_doc, entities, relations=(), candidates=()):
    doc = nlp.make_doc(toy_doc.text)
    doc._.title = toy_doc._.title
    doc._.entities = entities
    doc._.relations = [{"head": h, "tail": t, "label": r, "score": 1.0} for h, t, r in relations]
    doc._.relation_candidates = [{"head": h, "tail": t, "score": 1.0} for h, t in candidates]
    return doc


def test_bcubed_and_links_by_hand():
    gold = [["a", "b", "c"], ["d"]]
    pred = [["a", "b"], ["c", "d"], ["x"]]
    scores = bcubed(pred, gold)
    # precision per mention: a 1, b 1, c 1/2, d 1/2; recall: a 2/3, b 2/3, c 1/3, d 1
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1) / 4)
    assert (scores["mentions"], scores["predicted_only"], scores["gold_only"]) == (4, 1, 0)
    links = pairwise_links(pred, gold)  # gold links ab ac bc, predicted ab cd
    assert (links["precision"], links["recall"]) == (pytest.approx(1 / 2), pytest.approx(1 / 3))
    assert bcubed(gold, gold)["f1"] == 1.0 and pairwise_links(gold, gold)["f1"] == 1.0


def test_ner_scores_typed_untyped_and_per_type(nlp, toy_doc):
    pred = _predicted(nlp, toy_doc, [_entity("PER", (0, 2)), _entity("LOC", (5, 6), (13, 14)),
                                     _entity("ORG", (10, 12)), _entity("MISC", (17, 20))])
    scores = ner_scores([toy_doc], [pred])
    # gold: Ada Lovelace, She, Charles Babbage, Babbage (PER), London x2 (LOC), Analytical
    # Engine (MISC); right: Ada Lovelace, London x2; Charles Babbage has the wrong type
    assert (scores["precision"], scores["recall"]) == (pytest.approx(3 / 5), pytest.approx(3 / 7))
    assert scores["untyped"]["precision"] == pytest.approx(4 / 5)
    assert scores["per_type"]["PER"] == {"precision": 1.0, "recall": 0.25, "f1": 0.4,
                                         "support": 4, "predicted": 1}
    assert scores["per_type"]["ORG"]["precision"] == 0.0 and scores["per_type"]["LOC"]["f1"] == 1
    assert scores["counts"] == {"gold": 7, "predicted": 5, "correct": 3}


def test_grouping_scores_on_found_and_on_gold_mentions(nlp, toy_doc):
    # Babbage split from Charles Babbage; She not found
    pred = _predicted(nlp, toy_doc, [_entity("PER", (0, 2)), _entity("LOC", (5, 6), (13, 14)),
                                     _entity("PER", (10, 12)), _entity("PER", (15, 16))])
    scores = grouping_scores([toy_doc], [pred])
    assert scores["bcubed"]["precision"] == 1.0
    assert scores["bcubed"]["recall"] == pytest.approx((1 + 1 + 1 + 0.5 + 0.5) / 5)
    assert scores["pairwise"]["recall"] == pytest.approx(1 / 2)  # London-London, not Babbage
    # the rules on the gold mentions: "She" is a pronoun (dropped), "Babbage" joins its full name
    on_gold = grouping_on_gold_mentions([toy_doc], {}, merge_person_names=True)
    assert on_gold["bcubed"]["gold_only"] == 1 and on_gold["bcubed"]["f1"] == 1.0
    apart = grouping_on_gold_mentions([toy_doc], {}, merge_person_names=False)
    assert apart["pairwise"]["recall"] == pytest.approx(1 / 2)


def test_alignment_and_every_stage_of_the_loss_table(nlp, toy_doc):
    """Gold entities: 0 Ada Lovelace, 1 London, 2 Charles Babbage, 3 Analytical Engine;
    relations (0, 1, P19), (3, 2, P170), (0, 2, P1327)."""
    pred = _predicted(nlp, toy_doc, [_entity("PER", (0, 2)), _entity("LOC", (5, 6)),
                                     _entity("PER", (10, 12)), _entity("PER", (15, 16)),
                                     _entity("LOC", (13, 14))],
                      relations=[(0, 1, "P19"), (0, 3, "P1327"), (4, 1, "P150")])
    alignment = align_entities(toy_doc, pred)
    # London's second mention is a second predicted entity (a split); so is Babbage
    assert alignment.pred_of == {0: 0, 1: 1, 2: 2}
    assert [alignment.status(g) for g in range(4)] == ["mapped", "mapped", "mapped", "missed"]
    assert alignment.counts()["gold split"] == 2
    assert translate_relations(pred, alignment, "Ada Lovelace") == [
        {"title": "Ada Lovelace", "h_idx": 0, "t_idx": 1, "r": "P19", "evidence": []},
        {"title": "Ada Lovelace", "h_idx": 0, "t_idx": 7, "r": "P1327", "evidence": []},
        {"title": "Ada Lovelace", "h_idx": 8, "t_idx": 1, "r": "P150", "evidence": []}]
    losses = attribute_losses(toy_doc, pred, alignment, proposer_ran=False)
    assert losses == {FOUND: 1, ENTITY_MISSED: 1, ENTITY_SPLIT: 1}

    # one predicted entity over Ada Lovelace and London: London is merged away; the Babbage
    # pair is not proposed, then proposed but given another relation
    merged = _predicted(nlp, toy_doc, [_entity("PER", (0, 2), (5, 6)), _entity("PER", (10, 12)),
                                       _entity("MISC", (18, 20))])
    alignment = align_entities(toy_doc, merged)
    assert [alignment.status(g) for g in range(4)] == ["mapped", "merged", "mapped", "mapped"]
    assert attribute_losses(toy_doc, merged, alignment, proposer_ran=True) == {
        ENTITIES_MERGED: 1, NOT_PROPOSED: 2}
    merged._.relation_candidates = [{"head": h, "tail": t, "score": 1.0}
                                    for h, t in ((2, 1), (0, 1))]
    merged._.relations = [{"head": 2, "tail": 1, "label": "P19", "score": 1.0}]
    assert attribute_losses(toy_doc, merged, alignment, proposer_ran=True) == {
        ENTITIES_MERGED: 1, RELATION_WRONG: 2}

    records, losses, counts = text_relation_scores([toy_doc], [merged], proposer_ran=True)
    assert records == [{"title": "Ada Lovelace", "h_idx": 3, "t_idx": 2, "r": "P19",
                        "evidence": []}]
    table = loss_table(losses)
    assert list(table) == [ENTITY_MISSED, ENTITIES_MERGED, ENTITY_SPLIT, NOT_PROPOSED,
                           RELATION_WRONG, FOUND]
    assert table[RELATION_WRONG] == {"count": 2, "fraction": pytest.approx(2 / 3)}
    assert counts["gold merged"] == 1 and counts["predicted unmapped"] == 0
