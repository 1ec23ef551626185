"""The document model: entities, relations, candidates and retrieved examples on a spaCy Doc.

Everything lives in ``doc.user_data`` through ``Doc._`` extensions and holds only msgpack-able
values (dicts, lists, strings, numbers), so it survives ``DocBin(store_user_data=True)``,
``Doc.to_bytes`` and ``nlp.to_disk`` / ``spacy.load`` round trips.

Schema (indices are positions in ``doc._.entities``)::

    doc._.title               str | None     document title (DocRED ``title``), or a sentence id
    doc._.entities            list[Entity]   entity clusters, in file order
        Entity   = {"name": str, "type": str, "mentions": list[Mention]}
        Mention  = {"start": int, "end": int, "sent": int, "name": str}
                   token offsets in the Doc (end exclusive), the sentence index, and the
                   mention's surface name (DocRED ``name``; Ign F1 compares these names)
    doc._.relations           list[Relation] the product's output (gold on reference docs)
        Relation = {"head": int, "tail": int, "label": str, "score": float}
                   (+ "evidence": list[int], sentence ids, when the corpus gives them)
    doc._.relation_candidates list[Candidate] ordered pairs kept by the candidate proposer
        Candidate = {"head": int, "tail": int, "score": float}   score = P(any relation)
                    (+ "hints": [{"label": str, "score": float}, ...], best first, when the
                    proposer has a relation-type hints head)
    doc._.rag_examples        list[RagExample] labelled training examples retrieved for this doc
        RagExample = {"text": str, "head": str, "tail": str, "label": str, "similarity": float}

``Entity["name"]`` is a display name that is unique within the document (see
:func:`unique_display_names`), so prompts and answers can name an entity without ambiguity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

from spacy.tokens import Doc, Span


class Mention(TypedDict):
    start: int
    end: int
    sent: int
    name: str


class Entity(TypedDict):
    name: str
    type: str
    mentions: list[Mention]


class _RelationBase(TypedDict):
    head: int
    tail: int
    label: str
    score: float


class Relation(_RelationBase, total=False):
    evidence: list[int]


class TypeHint(TypedDict):
    label: str
    score: float


class _CandidateBase(TypedDict):
    head: int
    tail: int
    score: float


class Candidate(_CandidateBase, total=False):
    hints: list[TypeHint]


class RagExample(TypedDict):
    text: str
    head: str
    tail: str
    label: str
    similarity: float


EXTENSIONS: dict[str, object] = {
    "title": None,
    "entities": [],
    "relations": [],
    "relation_candidates": [],
    "rag_examples": [],
}


def _as_lists(value: Any) -> Any:
    """msgpack (DocBin, ``Doc.from_bytes``) turns lists into tuples: turn them back."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _extension(name: str, default: Any) -> tuple[Callable[[Doc], Any], Callable[[Doc, Any], None]]:
    """Getter and setter over ``doc.user_data`` under spaCy's own key for ``doc._.<name>``.

    The getter hands out the stored object itself (so ``doc._.relations.append`` works), gives
    every Doc its own copy of a list default, and normalises values restored by msgpack once.
    """
    key = ("._.", name, None, None)

    def getter(doc: Doc) -> Any:
        value = doc.user_data.get(key, default)
        if isinstance(value, tuple) or (value is default and isinstance(default, list)):
            value = _as_lists(value)
            doc.user_data[key] = value
        return value

    def setter(doc: Doc, value: Any) -> None:
        doc.user_data[key] = value

    return getter, setter


def register_extensions() -> None:
    """Register the ``Doc._`` attributes of the schema above (idempotent)."""
    for name, default in EXTENSIONS.items():
        if not Doc.has_extension(name):
            getter, setter = _extension(name, default)
            Doc.set_extension(name, getter=getter, setter=setter)
    if not Doc.has_extension("entity_spans"):
        Doc.set_extension("entity_spans", getter=entity_spans)


def entity_spans(doc: Doc) -> list[list[Span]]:
    """The mentions of every entity as spaCy Spans labelled with the entity type."""
    return [
        [Span(doc, m["start"], m["end"], label=ent["type"]) for m in ent["mentions"]]
        for ent in doc._.entities
    ]


def mention_name(entity: Entity | dict[str, Any]) -> str:
    """The surface text of an entity's first mention (its ``name`` when it has none).

    Unlike ``Entity["name"]`` it is not made unique (a sentence's second ``fire`` stays
    ``fire``, not ``fire #2``), so prompts and retrieval records show the text as written.
    """
    mentions = entity.get("mentions") or []
    return mentions[0]["name"] if mentions else entity["name"]


def ordered_pairs(doc: Doc) -> Iterator[tuple[int, int]]:
    """Every ordered pair of distinct entities: the candidate space n * (n - 1)."""
    n = len(doc._.entities)
    for head in range(n):
        for tail in range(n):
            if head != tail:
                yield head, tail


def relation_pairs(doc: Doc) -> set[tuple[int, int]]:
    """Ordered entity pairs that hold at least one relation in ``doc._.relations``."""
    return {(rel["head"], rel["tail"]) for rel in doc._.relations}


def is_intra_sentence(doc: Doc, head: int, tail: int) -> bool:
    """True when some head mention and some tail mention share a sentence (LMRC Table 4)."""
    entities = doc._.entities
    head_sents = {m["sent"] for m in entities[head]["mentions"]}
    return any(m["sent"] in head_sents for m in entities[tail]["mentions"])


def unique_display_names(names_per_entity: list[list[str]]) -> list[str]:
    """Pick one display name per entity that no other entity of the document shares.

    The first mention's name is used (as in DocRED) unless another entity has the same one;
    then the entity's longest distinct mention name is tried, and a remaining clash is broken
    with a numeric suffix (``"Paris #2"``). LMRC names entities by first mention only, which
    makes two entities called "Schneider" indistinguishable in prompts and answers.
    """
    first = [names[0] if names else "" for names in names_per_entity]
    counts = Counter(first)
    chosen: list[str] = []
    for names, name in zip(names_per_entity, first):
        if counts[name] > 1:
            alternatives = sorted(set(names), key=lambda n: (-len(n), n))
            name = next((n for n in alternatives if counts[n] == 0 and n not in chosen), name)
        chosen.append(name)
    seen: Counter[str] = Counter()
    totals = Counter(chosen)
    result = []
    for name in chosen:
        seen[name] += 1
        result.append(f"{name} #{seen[name]}" if totals[name] > 1 and seen[name] > 1 else name)
    return result


def set_entities(doc: Doc, entities: list[Entity]) -> None:
    """Set ``doc._.entities``, checking that every mention lies inside the Doc."""
    for i, ent in enumerate(entities):
        for m in ent["mentions"]:
            if not 0 <= m["start"] < m["end"] <= len(doc):
                raise ValueError(
                    f"entity {i} ({ent['name']!r}) has a mention at tokens "
                    f"[{m['start']}, {m['end']}) outside the document of {len(doc)} tokens"
                )
    doc._.entities = entities
