"""What the RAG4RE retriever embeds for a one-pair sentence Doc.

RAG4RE embeds the sentence without its entity markup, so its nearest neighbour is a sentence
about the same things, not one that holds the same relation. The other views keep the pair:

``sentence``  the sentence, markup stripped (RAG4RE as published);
``marked``    the sentence with ``<e1>``..``</e1>`` around the head and ``<e2>``..``</e2>``
              around the tail, so the direction of the relation is visible;
``span``      the marked tokens from ``window`` tokens before the first entity to ``window``
              tokens after the second (``span:N`` sets the window; default 3): the words that
              usually say what the relation is, without the rest of the sentence;
``pair``      the head, the tail and the marked sentence: ``head | tail | <marked sentence>``.

A view is written as a string (``"marked"``, ``"span:5"``) in configs, on the command line and
in an index's ``meta.json``; the index and the query must use the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spacy.tokens import Doc

from ..corpus.sentence import strip_markup

NAMES = ("sentence", "marked", "span", "pair")
DEFAULT_WINDOW = 3


@dataclass(frozen=True)
class Representation:
    """A text view of a one-pair sentence Doc (see the module docstring)."""

    name: str = "sentence"
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown representation {self.name!r}: expected one of "
                             f"{', '.join(NAMES)} (span:N for a window of N tokens)")
        if self.window < 0:
            raise ValueError(f"representation {self.name!r}: the window must be at least 0, "
                             f"got {self.window}")

    @classmethod
    def parse(cls, spec: str | Representation) -> Representation:
        """``"marked"``, ``"span"``, ``"span:5"`` ... as a :class:`Representation`."""
        if isinstance(spec, Representation):
            return spec
        name, _, window = str(spec).strip().partition(":")
        if window and name != "span":
            raise ValueError(f"representation {spec!r}: only span takes a window (span:N)")
        if window and not window.isdigit():
            raise ValueError(f"representation {spec!r}: the window must be a whole number of "
                             f"tokens, e.g. span:3")
        return cls(name, int(window) if window else DEFAULT_WINDOW)

    def __str__(self) -> str:
        return f"span:{self.window}" if self.name == "span" else self.name

    def __call__(self, doc: Doc) -> str:
        """The text to embed for ``doc`` (entity 0 = head, entity 1 = tail)."""
        if self.name == "sentence":
            return strip_markup(doc.text)
        spans = pair_spans(doc)
        if self.name == "span":
            start = max(0, min(s for s, _ in spans) - self.window)
            end = min(len(doc), max(e for _, e in spans) + self.window)
            return marked_text(doc, spans, start, end)
        marked = marked_text(doc, spans, 0, len(doc))
        if self.name == "marked":
            return marked
        head, tail = (doc[s:e].text for s, e in spans)
        return f"{head} | {tail} | {marked}"


def pair_spans(doc: Doc) -> list[tuple[int, int]]:
    """Token spans of the head's and the tail's first mentions; a Doc without exactly two
    entities is an error naming it (the pair views need the sentence's pair)."""
    entities = doc._.entities
    if len(entities) != 2:
        raise ValueError(
            f"document {doc._.title!r}: the retriever's pair views (marked, span, pair) need a "
            f"one-pair sentence Doc with 2 entities, got {len(entities)} (use the sentence "
            f"representation for other Docs)")
    spans = []
    for role, entity in zip(("head", "tail"), entities):
        mentions = entity.get("mentions") or []
        if not mentions:
            raise ValueError(f"document {doc._.title!r}: the {role} entity "
                             f"{entity.get('name')!r} has no mention to mark")
        spans.append((int(mentions[0]["start"]), int(mentions[0]["end"])))
    return spans


def marked_text(doc: Doc, spans: list[tuple[int, int]], start: int, end: int) -> str:
    """The text of tokens ``start:end`` with ``<e1>``/``<e2>`` around the two spans."""
    base = doc[start].idx if start < len(doc) else len(doc.text)
    stop = doc[end - 1].idx + len(doc[end - 1].text) if end > start else base
    # (character offset, closing tags first where one entity ends where the other starts)
    tags: list[tuple[int, int, str]] = []
    for number, (s, e) in enumerate(spans, start=1):
        tags.append((doc[s].idx, 1, f"<e{number}>"))
        tags.append((doc[e - 1].idx + len(doc[e - 1].text), 0, f"</e{number}>"))
    pieces, position = [], base
    for offset, _, tag in sorted(tags):
        pieces.append(doc.text[position:offset])
        pieces.append(tag)
        position = offset
    pieces.append(doc.text[position:stop])
    return "".join(pieces).strip()


def representation_of(meta: dict[str, Any]) -> Representation:
    """The representation an index's ``meta.json`` records (``sentence`` for an index written
    before the field existed: those embedded the stripped sentence)."""
    return Representation.parse(meta.get("representation", "sentence"))
