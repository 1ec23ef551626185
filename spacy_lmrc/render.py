"""Readable views of extracted relations: a text table and an HTML page drawn by displaCy.

Per document the page shows the text with displaCy's entity view (every mention marked with its
entity's DocRED type, one colour per type) and, below it, the relations with displaCy's arc view
over entity names (``style="dep"``, ``manual=True``, compact arcs): one drawing per head entity,
its name first and its tails to the right, an arrow per relation labelled with the relation's
name. The drawings flow like words, as many side by side as the window holds, and none is wider
than :data:`MAX_DRAWING_WIDTH` (a head with more tails takes several).

Why a drawing per head rather than every entity on one line: a Re-DocRED document has about 20
entities and 40 relations, and one line of them is several screens wide, with nested arcs whose
labels cannot fit over their short spans. A drawing per head reads as "X: relation -> Y,
relation -> Z". displaCy puts names at equal steps; a tail whose name or label needs more room
than one step sits further right (the steps between hold no name), so every label fits the
horizontal part of its own arc and no two names touch.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

from spacy import displacy
from spacy.displacy.render import DependencyRenderer
from spacy.displacy.templates import TPL_DEP_SVG
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

#: displaCy colours of the DocRED entity types (those of the closest OntoNotes types).
TYPE_COLORS = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "TIME": "#bfe1d9",
               "NUM": "#e4e7d2", "MISC": "#feca74"}
#: The widest drawing in pixels, so that a 1024-pixel-wide window shows it without scrolling.
MAX_DRAWING_WIDTH = 920
#: The widest text column in pixels; wider windows show more drawings side by side.
PAGE_WIDTH = 1240

# Text widths are estimated, not measured (the browser picks the font): average character
# widths of DejaVu Sans, wider than Arial and Liberation Sans, the fonts that stand in for it
# (scripts/html_view_screenshot.py checks both in Chromium; short labels of wide letters
# take up to 8.9 px a character there, which the margins absorb).
_NAME_CHAR_PX = 10.0  # an entity name: 16 px
_LABEL_CHAR_PX = 7.6  # an arc label: 0.8em = 12.8 px, with 1 px letter spacing
_NAME_CHARS = 30  # a longer name is cut at a word (with "…") in the arc view; the text has it
_NAME_GAP = 24.0  # between the names of neighbouring entities
_LABEL_PAD = 10.0  # between an arc label and each end of its arc's horizontal segment
# displaCy settings: the step between names (compact arcs rise step / 6 per level, and a
# label needs 22 px below the arc above it), the room under the arcs, the arrows' inset.
_STEP = 140
_WORD_SPACING = 30
_ARROW_SPACING = 12

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>spacy-lmrc relations</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: {width}px; margin: 0 auto; padding: 1rem; }}
svg.displacy {{ vertical-align: bottom; margin: 0 2.5rem 1.25rem 0; }}
</style></head>
<body>
{body}
</body>
</html>
"""


def relation_records(doc: Doc, index: int,
                     label_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One JSON-ready record per relation of ``doc``, with entity names and types."""
    entities = doc._.entities
    names = label_names or {}
    records = []
    for rel in doc._.relations:
        head, tail = entities[rel["head"]], entities[rel["tail"]]
        records.append({
            "doc": doc._.title if doc._.title is not None else index,
            "head": head["name"], "head_type": head["type"], "head_idx": rel["head"],
            "relation": names.get(rel["label"], rel["label"]), "label": rel["label"],
            "tail": tail["name"], "tail_type": tail["type"], "tail_idx": rel["tail"],
            "score": round(float(rel.get("score", 1.0)), 4),
        })
    return records


def format_table(records: Iterable[Mapping[str, Any]]) -> str:
    """Aligned columns: document, head (type), relation, tail (type), score."""
    rows = [("doc", "head", "relation", "tail", "score")]
    rows += [(str(r["doc"]), f"{r['head']} ({r['head_type']})", r["relation"],
              f"{r['tail']} ({r['tail_type']})", f"{r['score']:.2f}") for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_html(docs: Iterable[Doc], label_names: Mapping[str, str] | None = None) -> str:
    """One standalone HTML page for all ``docs``: per document its text with the entity
    mentions marked, then its relations as arcs (relation ids shown as ``label_names`` name
    them). A relation of an entity with itself has no arc; the table lists it."""
    names = label_names or {}
    sections = []
    for i, doc in enumerate(docs):
        title = doc._.title if doc._.title is not None else f"document {i}"
        n_relations = len(doc._.relations)
        sections.append("\n".join([
            _entity_view(doc, str(title)),
            f"<h3>{n_relations} relation{'' if n_relations == 1 else 's'}</h3>",
            "<div>" + "".join(star.render() for star in _stars(doc, names)) + "</div>"]))
    body = ("\n<hr>\n".join(sections) if sections
            else "<p><em>no documents (the input was empty)</em></p>")
    return _PAGE.format(width=PAGE_WIDTH, body=body)


def _entity_view(doc: Doc, title: str) -> str:
    """displaCy's entity view of ``doc``: each mention marked with its entity's type."""
    mentions = [Span(doc, m["start"], m["end"], label=e["type"])
                for e in doc._.entities for m in e["mentions"]]
    ents = [{"start": s.start_char, "end": s.end_char, "label": html.escape(s.label_)}
            for s in filter_spans(mentions)]
    return displacy.render({"text": doc.text, "ents": ents, "title": html.escape(title)},
                           style="ent", manual=True, page=False,
                           options={"colors": TYPE_COLORS})


class _Star:
    """One drawing: a head entity at step 0 and its tails further right, each at the first
    step where its name clears its neighbour's and each of its labels fits its arc."""

    def __init__(self, head: Mapping[str, Any], most_arcs: int) -> None:
        """``most_arcs``: the most arcs the drawing can get (all of the head's relations)."""
        self.words: list[dict[str, str]] = [_word(head)]
        self.arcs: list[dict[str, Any]] = []
        self._last_width = _name_px(self.words[0]["text"])
        # displaCy ends an arc arrow_spacing * (1 + (highest - level) / 4) short of its span
        self._inset = _ARROW_SPACING * (1 + (most_arcs - 1) / 4)

    def place(self, tail: Mapping[str, Any], labels: list[str]) -> bool:
        """Add ``tail`` with an arc per label, unless that makes the drawing too wide."""
        word = _word(tail)
        width = _name_px(word["text"])
        needed = max([(self._last_width + width) / 2 + _NAME_GAP + (len(self.words) - 1) * _STEP]
                     + [_label_px(label) + 2 * _LABEL_PAD + self._inset for label in labels])
        step = max(len(self.words), math.ceil(needed / _STEP))
        if self.arcs and self.offset_x() + step * _STEP + _half(width) > MAX_DRAWING_WIDTH:
            return False
        self.words += [{"text": "", "tag": ""}] * (step - len(self.words)) + [word]
        self.arcs += [{"start": 0, "end": step, "label": html.escape(label), "dir": "right"}
                      for label in labels]
        self._last_width = width
        return True

    def offset_x(self) -> int:
        """Room left of the head's name centre."""
        return _half(_name_px(self.words[0]["text"]))

    def render(self) -> str:
        """The drawing as displaCy's compact arc view, with the height its arcs need."""
        renderer = _CompactArcRenderer({"compact": True, "distance": _STEP,
                                        "offset_x": self.offset_x(),
                                        "word_spacing": _WORD_SPACING,
                                        "arrow_spacing": _ARROW_SPACING},
                                       end_room=_half(self._last_width))
        return renderer.render([{"words": self.words, "arcs": self.arcs}], page=False)


class _CompactArcRenderer(DependencyRenderer):
    """displaCy's arc renderer in compact mode, with only the room its drawing takes: above
    the names, spaCy 3.8 reserves ``distance / 2`` per arc level (what curved arcs rise) where
    compact arcs rise ``distance / 6``, which left an empty band above the arcs; right of the
    last name it keeps a whole ``distance`` where ``end_room`` is enough."""

    def __init__(self, options: dict[str, Any], *, end_room: int) -> None:
        super().__init__(options)
        self.end_room = end_room

    def render_svg(self, render_id: int | str, words: list[dict[str, Any]],
                   arcs: list[dict[str, Any]]) -> str:
        """The SVG of :meth:`DependencyRenderer.render_svg`, with the compact height."""
        self.levels = self.get_levels(arcs)
        self.highest_level = max(self.levels.values(), default=0)
        self.offset_y = self.distance / 6 * self.highest_level + self.arrow_stroke
        self.width = self.offset_x + (len(words) - 1) * self.distance + self.end_room
        self.height = self.offset_y + 3 * self.word_spacing
        self.id = render_id
        content = "".join(self.render_word(w["text"], w["tag"], None, i)
                          for i, w in enumerate(words))
        content += "".join(self.render_arrow(a["label"], a["start"], a["end"], a["dir"], i)
                           for i, a in enumerate(arcs))
        return TPL_DEP_SVG.format(
            id=self.id, width=self.width, height=self.height, color=self.color, bg=self.bg,
            font=self.font, content=content, dir=self.direction, lang=self.lang)


def _stars(doc: Doc, names: Mapping[str, str]) -> list[_Star]:
    """The relations of ``doc`` as drawings: heads in the order of their first mention, each
    head's tails ordered by their longest label, shortest first (a longer label then spans
    more room), and a new drawing of the same head when the next tail does not fit."""
    entities = doc._.entities
    labels_of: dict[int, dict[int, list[str]]] = {}
    for rel in doc._.relations:
        if rel["head"] == rel["tail"]:
            continue
        label = names.get(rel["label"], rel["label"])
        tails = labels_of.setdefault(rel["head"], {}).setdefault(rel["tail"], [])
        if label not in tails:
            tails.append(label)
    first_mention = {k: min((m["start"] for m in e["mentions"]), default=0)
                     for k, e in enumerate(entities)}
    stars = []
    for head in sorted(labels_of, key=lambda k: (first_mention[k], k)):
        tails = sorted(labels_of[head].items(),
                       key=lambda item: (max(map(_label_px, item[1])), first_mention[item[0]]))
        most_arcs = sum(len(labels) for _, labels in tails)
        star = _Star(entities[head], most_arcs)
        for tail, labels in tails:
            if not star.place(entities[tail], labels):
                stars.append(star)
                star = _Star(entities[head], most_arcs)
                star.place(entities[tail], labels)
        stars.append(star)
    return stars


def _word(entity: Mapping[str, Any]) -> dict[str, str]:
    """A displaCy word: the entity's name (displaCy escapes it) over its type."""
    name = entity["name"]
    if len(name) > _NAME_CHARS:
        cut = name[:_NAME_CHARS - 1]
        name = (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"
    return {"text": name, "tag": html.escape(entity["type"])}


def _half(name_px: float) -> int:
    """The room from a name's centre to the edge of its drawing."""
    return math.ceil(name_px / 2 + _NAME_GAP / 2)


def _name_px(text: str) -> float:
    return len(text) * _NAME_CHAR_PX


def _label_px(label: str) -> float:
    return len(label) * _LABEL_CHAR_PX
