"""The HTML view of ``extract --html``: displaCy's entity view and arc drawings per head."""

from __future__ import annotations

import re

from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.render import MAX_DRAWING_WIDTH, TYPE_COLORS, render_html

NAMES = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport",
         "P131": "located in the administrative territorial entity", "P17": "country"}


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg .*?</svg>", page, re.S)


def arcs(svg: str) -> list[tuple[float, float, str]]:
    """(length of the horizontal part, height of that part, label) of each compact arc, whose
    path is ``M x,y x,top e,top e,y``."""
    found = re.findall(r'class="displacy-arc"[^>]* d="M([\d.]+),[\d.]+ [\d.]+,([-\d.]+) '
                       r'([\d.]+),.*?class="displacy-label"[^>]*>([^<]*)</textPath>', svg, re.S)
    return [(float(e) - float(x), float(top), label) for x, top, e, label in found]


def fits(segment: float, label: str) -> bool:
    """Whether a label fits: Arial and its stand-ins take up to 8 px a character at displaCy's
    label size (scripts/html_view_screenshot.py measures it in Chromium)."""
    return segment >= 8 * len(label)


def many_places_record() -> dict:
    """A town located in eight regions and countries: more arcs than one drawing holds."""
    places = ["Sogn og Fjordane", "Vestland", "Hordaland", "Rogaland", "Agder", "Telemark",
              "Viken", "Norway"]
    words = ["Luster", "is", "in"] + [w for p in places for w in (p.split() + [","])]
    vertex, pos = [[{"name": "Luster", "pos": [0, 1], "sent_id": 0, "type": "LOC"}]], 3
    for place in places:
        n = len(place.split())
        vertex.append([{"name": place, "pos": [pos, pos + n], "sent_id": 0, "type": "LOC"}])
        pos += n + 1
    labels = [{"h": 0, "t": k, "r": "P131", "evidence": [0]} for k in range(1, 8)]
    labels.append({"h": 0, "t": 8, "r": "P17", "evidence": [0]})
    return {"title": "Luster", "sents": [words], "vertexSet": vertex, "labels": labels}


def test_page_shows_every_entity_and_relation_label(toy_doc):
    page = render_html([toy_doc], NAMES)
    assert page.startswith("<!DOCTYPE html>") and page.count("<html") == 1
    for entity in toy_doc._.entities:
        assert entity["name"] in page
        for mention in entity["mentions"]:
            assert toy_doc[mention["start"]:mention["end"]].text in page
    for label in ("place of birth", "creator", "partner in business or sport"):
        assert f">{label}</textPath>" in page
    # the entity view marks mentions with the DocRED types, in their colours
    assert TYPE_COLORS["PER"] in page and TYPE_COLORS["LOC"] in page and ">MISC<" in page
    assert "3 relations" in page


def test_drawings_per_head_with_labels_that_fit_their_arcs(toy_doc):
    drawings = svgs(render_html([toy_doc], NAMES))
    # heads in the order of their first mention: Ada Lovelace (2 tails), Analytical Engine
    assert len(drawings) == 2
    assert "Ada Lovelace" in drawings[0] and "Analytical Engine" in drawings[1]
    for svg in drawings:
        assert all(fits(segment, label) for segment, _, label in arcs(svg))
        # no empty band: the highest arc reaches the top of its drawing
        assert min(top for _, top, _ in arcs(svg)) <= 2


def test_a_head_with_more_tails_than_fit_takes_several_drawings(nlp):
    doc = docred_record_to_doc(many_places_record(), nlp.vocab)
    page = render_html([doc], NAMES)
    drawings = svgs(page)
    assert len(drawings) > 1 and all("Luster" in svg for svg in drawings)
    widths = [float(re.search(r'width="([\d.]+)"', svg).group(1)) for svg in drawings]
    assert max(widths) <= MAX_DRAWING_WIDTH
    assert page.count(">located in the administrative territorial entity</textPath>") == 7
    assert page.count(">country</textPath>") == 1
    labels = [label for svg in drawings for _, _, label in arcs(svg)]
    assert len(labels) == 8
    assert all(fits(segment, label) for svg in drawings for segment, _, label in arcs(svg))


def test_documents_without_relations_and_several_documents_on_one_page(toy_doc, nlp):
    quiet = docred_record_to_doc(many_places_record(), nlp.vocab, with_relations=False)
    page = render_html([quiet, toy_doc], NAMES)
    assert page.count("<!DOCTYPE html>") == 1 and page.count("<hr>") == 1
    assert "Sogn og Fjordane" in page and "0 relations" in page and "3 relations" in page
    assert len(svgs(page)) == 2  # the toy document's two heads only
    assert "no documents" in render_html([], NAMES)


def test_names_and_labels_are_escaped_and_long_names_shortened(toy_doc):
    toy_doc._.entities[0]["name"] = "Ada <Lovelace> & the Engine of a Hundred Thousand Parts"
    page = render_html([toy_doc], {"P19": "born <in> & raised"})
    assert ">born &lt;in&gt; &amp; raised</textPath>" in page
    assert "<Lovelace>" not in page
    assert "Ada &lt;Lovelace&gt; &amp; the Engine…" in page  # cut at a word within 30 characters
    assert "P170" in page  # a label without a name shows its id
