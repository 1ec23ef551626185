"""Entity clusters from raw-text NER: group mention spans into entities with DocRED types.

DocRED documents come with entity clusters; raw text does not. This module turns NER spans
(e.g. ``doc.ents`` from en_core_web_sm) into ``doc._.entities``:

* types are mapped from the NER scheme to DocRED's PER / ORG / LOC / TIME / NUM / MISC
  (:data:`ONTONOTES_TO_DOCRED`; unmapped labels are kept as they are);
* mentions with the same normalised text and type form one entity;
* optionally, a one-token person mention equal to the first or last token of exactly one earlier
  person entity joins it ("Schneider" after "Willi Schneider"); an ambiguous one stays apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from spacy.tokens import Doc, Span

from .doc import Entity, unique_display_names

ONTONOTES_TO_DOCRED: dict[str, str] = {
    "PERSON": "PER",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
    "DATE": "TIME",
    "TIME": "TIME",
    "CARDINAL": "NUM",
    "QUANTITY": "NUM",
    "MONEY": "NUM",
    "PERCENT": "NUM",
    "ORDINAL": "NUM",
    "NORP": "MISC",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
    "PRODUCT": "MISC",
}


def _mention_key(text: str) -> str:
    """What makes two mentions one entity: lower case, no leading "the ", no "'s"."""
    text = text.lower().strip()
    for prefix in ("the ",):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return " ".join(text.replace("'s", "").split())


def _sentence_index(doc: Doc) -> list[int]:
    """Sentence index of every token (0 everywhere when the Doc has no sentence boundaries)."""
    if not doc.has_annotation("SENT_START"):
        return [0] * len(doc)
    index, current = [], -1
    for token in doc:
        if token.is_sent_start or current < 0:
            current += 1
        index.append(current)
    return index


def group_mentions(
    doc: Doc,
    spans: Iterable[Span],
    type_map: Mapping[str, str] = ONTONOTES_TO_DOCRED,
    merge_person_names: bool = True,
) -> list[Entity]:
    """Cluster ``spans`` into entities (in order of first mention) with mapped types."""
    sent_of = _sentence_index(doc)
    entities: list[Entity] = []
    by_key: dict[tuple[str, str], int] = {}
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        ent_type = type_map.get(span.label_, span.label_)
        key = (_mention_key(span.text), ent_type)
        index = by_key.get(key)
        if index is None and merge_person_names and ent_type == "PER" and len(span) == 1:
            index = _person_by_name_part(entities, key[0])
        mention = {"start": span.start, "end": span.end, "sent": sent_of[span.start],
                   "name": span.text}
        if index is None:
            index = len(entities)
            entities.append({"name": span.text, "type": ent_type, "mentions": []})
        by_key.setdefault(key, index)
        entities[index]["mentions"].append(mention)
    names = unique_display_names(
        [[m["name"] for m in sorted(e["mentions"], key=lambda m: -len(m["name"]))]
         for e in entities]
    )
    for entity, name in zip(entities, names):
        entity["name"] = name
    return entities


def _person_by_name_part(entities: list[Entity], part: str) -> int | None:
    matches = [
        i for i, e in enumerate(entities)
        if e["type"] == "PER"
        and any(len(toks := _mention_key(m["name"]).split()) > 1 and part in (toks[0], toks[-1])
                for m in e["mentions"])
    ]
    return matches[0] if len(matches) == 1 else None
