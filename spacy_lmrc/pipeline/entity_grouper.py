"""``lmrc_entity_grouper``: NER spans -> ``doc._.entities`` for raw-text input.

Put it after a NER component (the one ``configs/ner.cfg`` trains on DocRED's types, or
en_core_web_sm's) and before the proposer; see :mod:`spacy_lmrc.entities` for the grouping
rules and the entity-level type vote (``type_vote``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc

from ..entities import ONTONOTES_TO_DOCRED, group_mentions


class EntityGrouper(Pipe):
    """Groups NER mentions into entity clusters with DocRED types (rules only: nothing to
    initialize or save beyond the config). ``stats`` counts the pronoun mentions it dropped."""

    def __init__(self, name: str, spans_key: str | None, type_map: dict[str, str],
                 merge_person_names: bool, type_vote: bool = True) -> None:
        self.name = name
        self.spans_key = spans_key
        self.type_map = dict(type_map)
        self.merge_person_names = merge_person_names
        self.type_vote = type_vote
        self.stats: Counter = Counter()

    def __call__(self, doc: Doc) -> Doc:
        """Set ``doc._.entities`` from the Doc's NER spans."""
        spans = doc.ents if self.spans_key is None else doc.spans.get(self.spans_key, [])
        doc._.entities = group_mentions(doc, spans, self.type_map, self.merge_person_names,
                                        counts=self.stats, type_vote=self.type_vote)
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Group the entities of every Doc of ``stream``."""
        for doc in stream:
            yield self(doc)


@Language.factory(
    "lmrc_entity_grouper",
    default_config={"spans_key": None, "type_map": None, "merge_person_names": True,
                    "type_vote": True},
    requires=["doc.ents"],
    assigns=["doc._.entities"],
)
def make_entity_grouper(nlp: Language, name: str, spans_key: str | None,
                        type_map: dict[str, str] | None,
                        merge_person_names: bool, type_vote: bool = True) -> EntityGrouper:
    """Entities from ``doc.ents`` (or ``doc.spans[spans_key]``); ``type_map`` null = OntoNotes
    labels to DocRED's PER/ORG/LOC/TIME/NUM/MISC (DocRED's own labels pass unchanged).
    ``type_vote`` (default true): names and acronyms join mentions across NER types and each
    entity takes the type most of its mentions have (ties: the type seen first), as DocRED
    types entities; false = a mention joins only its own type and the entity keeps its first
    mention's type (the behaviour before the option)."""
    return EntityGrouper(name, spans_key, type_map or ONTONOTES_TO_DOCRED, merge_person_names,
                         type_vote)
