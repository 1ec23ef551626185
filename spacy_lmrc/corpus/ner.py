"""DocRED documents as NER training data for spaCy's ``ner`` (and ``senter``).

Each document becomes an Example whose reference Doc has the document's tokens and sentences,
its gold mentions as ``doc.ents`` labelled with their entity's DocRED type (PER, ORG, LOC,
TIME, NUM, MISC) and its entity clusters in ``doc._.entities``; the predicted Doc is
``nlp.make_doc`` of the text (the words joined by spaces), i.e. what the trained pipeline gets
from plain text. ``doc.ents`` cannot overlap, while DocRED mentions sometimes do (the same span
in two entities, or one mention inside another): the longest mention is kept, then the
earliest, then that of the first entity, and the dropped ones are counted and printed.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from .docred import read_docred

SAME_SPAN = "same span as a kept mention"
INSIDE_OR_CROSSING = "overlapping a longer (or earlier) kept mention"
# the selections whose overlap count was printed: once per process, though spaCy builds a
# corpus's reader anew for initialization and training
_REPORTED: set[tuple[str, int | None, int | None]] = set()


def ner_spans(doc: Doc) -> tuple[list[Span], Counter]:
    """Non-overlapping mention Spans of ``doc._.entities`` labelled with the entity type, in
    document order, and how many mentions were dropped for which reason."""
    mentions = sorted(
        ((m["start"], m["end"], e, entity["type"])
         for e, entity in enumerate(doc._.entities) for m in entity["mentions"]),
        key=lambda m: (m[0] - m[1], m[0], m[2]),
    )
    taken: list[bool] = [False] * len(doc)
    kept: list[Span] = []
    kept_spans: set[tuple[int, int]] = set()
    dropped: Counter = Counter()
    for start, end, _, label in mentions:
        if (start, end) in kept_spans:
            dropped[SAME_SPAN] += 1
        elif any(taken[start:end]):
            dropped[INSIDE_OR_CROSSING] += 1
        else:
            taken[start:end] = [True] * (end - start)
            kept_spans.add((start, end))
            kept.append(Span(doc, start, end, label=label))
    return sorted(kept, key=lambda s: s.start), dropped


def ner_reference(doc: Doc) -> tuple[Doc, Counter]:
    """A reference Doc for NER training: tokens, sentences, ``doc.ents`` (every other token
    outside an entity), title and entity clusters of ``doc``; and the dropped mentions."""
    reference = Doc(doc.vocab, words=[t.text for t in doc],
                    spaces=[bool(t.whitespace_) for t in doc],
                    sent_starts=[bool(t.is_sent_start) for t in doc])
    spans, dropped = ner_spans(doc)
    reference.ents = [Span(reference, s.start, s.end, label=s.label_) for s in spans]
    reference._.title = doc._.title
    reference._.entities = doc._.entities
    return reference, dropped


def describe_dropped(path: str | Path, documents: int, mentions: int, dropped: Counter) -> str:
    """One line: what was read and which overlapping mentions were left out of ``doc.ents``."""
    kept = mentions - sum(dropped.values())
    line = f"{path}: {documents} documents, {mentions} gold mentions -> {kept} entity spans"
    if dropped:
        line += "; dropped " + ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
    return line


@registry.readers("spacy_lmrc.DocRedNerCorpus.v1")
def create_docred_ner_corpus(
    path: Path, first: int | None = None, last: int | None = None,
    skip_invalid: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """DocRED / Re-DocRED JSON as NER (and sentence) Examples; ``first`` / ``last`` cut the
    redocred-small split. The overlap count is printed (stderr) the first time it is read."""
    selection = (str(path), first, last)

    def reader(nlp: Language) -> Iterator[Example]:
        dropped: Counter = Counter()
        documents = mentions = 0
        for doc in read_docred(path, nlp.vocab, first=first, last=last,
                               skip_invalid=skip_invalid, with_relations=False):
            reference, doc_dropped = ner_reference(doc)
            dropped.update(doc_dropped)
            documents += 1
            mentions += sum(len(e["mentions"]) for e in doc._.entities)
            yield Example(nlp.make_doc(reference.text), reference)
        if selection not in _REPORTED:
            print(f"spacy_lmrc.DocRedNerCorpus.v1: "
                  f"{describe_dropped(path, documents, mentions, dropped)}", file=sys.stderr)
            _REPORTED.add(selection)

    return reader
