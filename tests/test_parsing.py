"""The answer parser and the entity / relation aligners."""

from __future__ import annotations

import pytest

from spacy_lmrc.llm.parsing import EntityAligner, RelationAligner, normalise, parse_triple_lines


def _parse(text, entities=(), relations=()):
    triples, bad = parse_triple_lines(text, entities, relations)
    return [(t.head, t.relation, t.tail) for t in triples], bad


@pytest.mark.parametrize("line", [
    "(Ada Lovelace| place of birth| London)",
    "(Ada Lovelace|place of birth|London)",
    "  ( Ada Lovelace |  place of birth  | London )  ",
    "Ada Lovelace| place of birth| London",
    "(Ada Lovelace| place of birth| London",
    "Ada Lovelace| place of birth| London)",
    "- (Ada Lovelace| place of birth| London)",
    "3. (Ada Lovelace| place of birth| London)",
])
def test_spacing_bullets_and_missing_brackets(line):
    assert _parse(line) == ([("Ada Lovelace", "place of birth", "London")], [])


def test_several_lines_case_and_none_are_kept_as_written():
    text = "(A| PLACE OF BIRTH| B)\n\n(B| None| A)\n(C| none| D)"
    triples, bad = _parse(text)
    assert triples == [("A", "PLACE OF BIRTH", "B"), ("B", "None", "A"), ("C", "none", "D")]
    assert bad == []


def test_two_triples_on_one_line():
    triples, _ = _parse("(A| r| B), (C| s| D)")
    assert triples == [("A", "r", "B"), ("C", "s", "D")]


def test_unparsable_lines_are_returned_not_dropped():
    triples, bad = _parse("Sure! Here are the relations:\n(A| r| B)\n(A| r)\n### Response:")
    assert triples == [("A", "r", "B")]
    assert bad == ["Sure! Here are the relations:", "(A| r)", "### Response:"]


def test_entity_names_with_parentheses():
    triples, _ = _parse("(Paris (France)| capital of| France)\n(A| r| Georgia (country))")
    assert triples == [("Paris (France)", "capital of", "France"), ("A", "r", "Georgia (country)")]


def test_entity_name_with_pipe_is_resolved_by_known_names():
    triples, bad = _parse("(AC|DC| performer| Back in Black)", ["AC|DC", "Back in Black"],
                          ["performer"])
    assert triples == [("AC|DC", "performer", "Back in Black")] and bad == []
    triples, _ = _parse("(Back in Black| performer| AC|DC)", ["AC|DC", "Back in Black"],
                        ["performer"])
    assert triples == [("Back in Black", "performer", "AC|DC")]


def test_entity_alignment_exact_normalised_fuzzy_and_cutoff():
    aligner = EntityAligner(cutoff=85)
    names = ["Charles Babbage", "London", "Analytical Engine"]
    assert aligner.align("London", names) == (1, "exact")
    assert aligner.align("london ", names) == (1, "normalised")
    assert aligner.align("Analytical Engines", names) == (2, "fuzzy")
    assert aligner.align("Paris", names) == (None, "unaligned")


def test_entity_alignment_with_duplicates_is_ambiguous_not_guessed():
    aligner = EntityAligner(cutoff=80)
    # two entities differ only by the suffix that unique_display_names adds
    names = ["Schneider", "Schneider #2", "Berlin"]
    assert aligner.align("Schneider", names) == (0, "exact")
    assert aligner.align("Schneider #2", names) == (1, "exact")
    assert aligner.align("schneider", names) == (0, "normalised")
    # equally close to two names: no match rather than the first one (LMRC's behaviour)
    assert aligner.align("Berlin X", ["Berlin A", "Berlin B"]) == (None, "ambiguous")
    assert aligner.align("Berlin", ["berlin", "BERLIN"]) == (None, "ambiguous")


def test_relation_alignment_exact_normalised_and_out_of_set():
    aligner = RelationAligner({"P19": "place of birth", "P17": "country"})
    assert aligner.align("place of birth") == ("P19", "exact")
    assert aligner.align("Place_of_Birth.") == ("P19", "normalised")
    assert aligner.align("P17") == ("P17", "normalised")
    assert aligner.align("born in") == (None, "out_of_set")


def test_relation_alignment_by_embedding_above_theta():
    vectors = {"place of birth": [1.0, 0.0], "country": [0.0, 1.0],
               "birthplace": [0.9, 0.1], "banana": [0.6, 0.6]}
    embed = lambda texts: [vectors[t] for t in texts]  # noqa: E731
    aligner = RelationAligner({"P19": "place of birth", "P17": "country"}, theta=0.9,
                              embedder=embed)
    assert aligner.align("birthplace") == ("P19", "embedding")
    assert aligner.align("banana") == (None, "out_of_set")  # cosine 0.707 < θ


def test_normalise():
    assert normalise("  Place_of   BIRTH. ") == "place of birth"


def test_echoed_placeholder_is_not_a_none_answer():
    from spacy_lmrc.llm.parsing import NONE_ANSWERS

    assert "-" not in NONE_ANSWERS and "none" in NONE_ANSWERS
    assert RelationAligner({"P19": "place of birth"}).align("-") == (None, "out_of_set")
