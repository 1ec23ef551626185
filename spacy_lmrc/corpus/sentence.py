"""Sentence-level corpora (SemEval-2010 Task 8, TACRED) as one-pair Docs.

Each Doc holds one sentence, two entities (0 = head / ``<e1>`` / subject, 1 = tail / ``<e2>``
/ object) and at most one gold relation between them. The negative label (``Other``,
``no_relation``) is stored as *no* relation, so positive-only metrics fall out naturally;
:func:`sentence_label` turns a Doc back into its single label.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from ..doc import Entity
from ..errors import InputError, SkipReport
from .io import (
    TitleCheck,
    detect_records_format,
    load_json_records,
    select_records,
    warn_unreported,
)
from .labels import load_relation_set

SEMEVAL_NEGATIVE = "Other"
TACRED_NEGATIVE = "no_relation"
NUL_TEXT = "sentences with NUL characters in the text"
_MARKUP = re.compile(r"</?e[12]>")
_INT_ID = re.compile(r"\s*\d+\s*")
_NUMBER = re.compile(r"\s*-?\d*\.\d+\s*|\s*-\d+\s*")


#: the pair a sentence Doc is about: (head, tail) = (``<e1>`` / subject, ``<e2>`` / object)
SENTENCE_PAIR: tuple[int, int] = (0, 1)


def sentence_pair(doc: Doc) -> tuple[int, int] | None:
    """:data:`SENTENCE_PAIR` for a Doc of the shape the sentence readers write (exactly two
    entities, head first), else None (a Doc from another reader, e.g. raw text)."""
    return SENTENCE_PAIR if len(doc._.entities) == 2 else None


def sentence_label(doc: Doc, negative_label: str) -> str:
    """The label of the :data:`SENTENCE_PAIR`, or ``negative_label`` when none is set."""
    for rel in doc._.relations:
        if (rel["head"], rel["tail"]) == SENTENCE_PAIR:
            return rel["label"]
    return negative_label


def strip_markup(text: str) -> str:
    """Remove ``<e1>``/``<e2>`` tags (RAG4RE embeds sentences without them)."""
    return _MARKUP.sub("", text)


def resolve_label(label: Any, names: list[str] | None, ctx: dict) -> str:
    """The label name of a SemEval label: a name, or an integer id (also as a digit string)
    named by ``names``. With ``names`` a name outside them is an error, not a new label."""
    if isinstance(label, str) and _INT_ID.fullmatch(label):
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)) or (
        isinstance(label, str) and (not label.strip() or _NUMBER.fullmatch(label))
    ):
        raise InputError(f"expected a label name or an integer label id, got {label!r}",
                         field="relation", kind="expected a label name or integer id", **ctx)
    if isinstance(label, int):
        if names is None:
            raise InputError(f"integer label {label} needs label_names_path (--label-names) "
                             f"to name it", field="relation", kind="integer label without names",
                             **ctx)
        if not 0 <= label < len(names):
            raise InputError(f"label id {label} is outside the {len(names)} names",
                             field="relation", kind="label id outside the label names", **ctx)
        return names[label]
    if names is not None and label not in names:
        raise InputError(f"label {label!r} is not one of the {len(names)} label names",
                         field="relation", kind="label not among the label names", **ctx)
    return label


def _set_sentence(doc: Doc, title: str, spans: list[tuple[int, int]], types: list[str],
                  label: str, negative_label: str) -> Doc:
    for i, token in enumerate(doc):
        token.is_sent_start = i == 0
    entities: list[Entity] = []
    for (start, end), ent_type in zip(spans, types):
        name = doc[start:end].text
        entities.append(
            {"name": name, "type": ent_type,
             "mentions": [{"start": start, "end": end, "sent": 0, "name": name}]}
        )
    if entities[0]["name"] == entities[1]["name"]:
        entities[1]["name"] += " #2"
    doc._.title = title
    doc._.entities = entities
    doc._.relations = (
        [] if label == negative_label
        else [{"head": 0, "tail": 1, "label": label, "score": 1.0}]
    )
    return doc


def _tag_spans(text: str, ctx: dict) -> list[tuple[int, int]]:
    """Character spans (inside the tagged text) of the ``<e1>`` and ``<e2>`` contents.

    Each tag must occur exactly once, and the two entities must not overlap: a doubled or
    nested tag would otherwise silently lose an entity.
    """
    counts = Counter(_MARKUP.findall(text))
    spans = []
    for tag in ("e1", "e2"):
        for mark in (f"<{tag}>", f"</{tag}>"):
            if counts[mark] != 1:
                raise InputError(
                    f"expected one non-empty <{tag}>...</{tag}> span, found {counts[mark]} "
                    f"{mark} tags in {text!r}", field="sentence",
                    kind=f"expected exactly one <{tag}>...</{tag}> span", **ctx)
        start, end = text.index(f"<{tag}>") + len(tag) + 2, text.index(f"</{tag}>")
        if end <= start or not text[start:end].strip():
            raise InputError(f"expected one non-empty <{tag}>...</{tag}> span in {text!r}",
                             field="sentence", kind=f"empty <{tag}> span", **ctx)
        spans.append((start, end))
    (s1, e1), (s2, e2) = spans
    if not (e1 < s2 or e2 < s1):
        raise InputError(f"the <e1> and <e2> spans overlap in {text!r}", field="sentence",
                         kind="overlapping <e1> and <e2> spans", **ctx)
    return spans


def semeval_sentence_to_doc(
    text: str, label: str, nlp: Language, *, title: str,
    negative_label: str = SEMEVAL_NEGATIVE, ctx: dict | None = None,
) -> Doc:
    """Tokenize a ``<e1>..</e1>``/``<e2>..</e2>`` sentence and mark its two entities."""
    ctx = ctx or {}
    if not isinstance(text, str) or not text.strip():
        raise InputError("expected a non-empty sentence string", field="sentence", **ctx)
    char_spans = []
    for start, end in _tag_spans(text, ctx):
        before = len(strip_markup(text[:start]))
        char_spans.append((before, before + len(strip_markup(text[start:end]))))
    doc = nlp.make_doc(strip_markup(text))
    spans = []
    for start, end in char_spans:
        span = doc.char_span(start, end, alignment_mode="expand")
        if span is None:
            raise InputError(f"entity at characters {start}-{end} does not align with tokens",
                             field="sentence", kind="entity does not align with tokens", **ctx)
        spans.append((span.start, span.end))
    return _set_sentence(doc, title, spans, ["ENTITY", "ENTITY"], label, negative_label)


def read_semeval(
    sentences_path: str | Path,
    nlp: Language,
    *,
    relations_path: str | Path | None = None,
    label_names_path: str | Path | None = None,
    first: int | None = None,
    last: int | None = None,
    negative_label: str = SEMEVAL_NEGATIVE,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
) -> Iterator[Doc]:
    """Read SemEval-2010 Task 8.

    Either ``sentences_path`` holds records ``{"sentence", "relation"}`` (Hugging Face layout),
    or it holds marked-up sentence strings and ``relations_path`` the parallel labels: names,
    or integer ids (also as digit strings) named by ``label_names_path`` (``relations.json``).
    With label names, every label must be one of them. Without a ``report``, skips and
    warnings are issued as one Python warning at the end.
    """
    owned = report is None
    report = SkipReport() if report is None else report
    records = load_json_records(sentences_path, allow_empty=False)
    labels: list[Any] | None = None
    if relations_path is not None:
        labels = load_json_records(relations_path)
        if len(labels) != len(records):
            raise InputError(
                f"has {len(labels)} labels but {sentences_path} has {len(records)} sentences",
                path=relations_path,
            )
    names = (list(load_relation_set(label_names_path)) if label_names_path is not None
             else None)
    if names is not None and negative_label not in names:
        report.warn(f"the negative label {negative_label!r} is not among the label names: "
                    f"every sentence counts as a relation", path=label_names_path)
    for index, record in select_records(records, first=first, last=last):
        ctx = {"path": sentences_path, "index": index}
        try:
            if isinstance(record, dict):
                text, label = record.get("sentence"), record.get("relation")
            else:
                text, label = record, labels[index] if labels is not None else None
            if label is None:
                raise InputError("no relation label (give relations_path for a list of sentences)",
                                 field="relation", **ctx)
            doc = semeval_sentence_to_doc(
                text, resolve_label(label, names, ctx), nlp, title=str(index),
                negative_label=negative_label, ctx=ctx)
        except InputError as err:
            if not skip_invalid:
                raise
            report.add(err)
            continue
        if "\x00" in doc.text:
            report.warn(NUL_TEXT, path=sentences_path, index=index, title=doc._.title)
        yield doc
    warn_unreported(report, owned)


def tacred_record_to_doc(record: Any, nlp: Language, *, title: str,
                         negative_label: str = TACRED_NEGATIVE, ctx: dict | None = None) -> Doc:
    """A TACRED record (``token``, ``subj_start/end``, ``obj_start/end`` inclusive, types)."""
    ctx = ctx or {}
    if not isinstance(record, dict):
        raise InputError("expected a record object", **ctx)
    tokens = record.get("token")
    if not isinstance(tokens, list) or not tokens or not all(
        isinstance(t, str) and t for t in tokens
    ):
        raise InputError("expected a non-empty list of non-empty token strings", field="token",
                         **ctx)
    spans = []
    for role in ("subj", "obj"):
        start, end = record.get(f"{role}_start"), record.get(f"{role}_end")
        valid = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
        if not (valid and 0 <= start <= end < len(tokens)):
            raise InputError(
                f"expected integers 0 <= {role}_start <= {role}_end < {len(tokens)}, "
                f"got {start!r}, {end!r}", field=f"{role}_start",
                kind=f"{role} span outside the tokens", **ctx)
        spans.append((start, end + 1))
    relation = record.get("relation")
    if not isinstance(relation, str) or not relation:
        raise InputError(f"expected a relation name string, got {relation!r}", field="relation",
                         kind="expected a relation name string", **ctx)
    doc = Doc(nlp.vocab, words=tokens, spaces=[True] * (len(tokens) - 1) + [False])
    types = [str(record.get("subj_type", "ENTITY")), str(record.get("obj_type", "ENTITY"))]
    return _set_sentence(doc, title, spans, types, relation, negative_label)


def read_tacred(
    path: str | Path,
    nlp: Language,
    *,
    first: int | None = None,
    last: int | None = None,
    negative_label: str = TACRED_NEGATIVE,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
) -> Iterator[Doc]:
    """Read a TACRED-format JSON list (or JSONL) of records; repeated ids are warned about."""
    owned = report is None
    report = SkipReport() if report is None else report
    titles = TitleCheck(path, report)
    records = load_json_records(path, allow_empty=False)
    for index, record in select_records(records, first=first, last=last):
        title = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        ctx = {"path": path, "index": index, "title": title}
        try:
            doc = tacred_record_to_doc(record, nlp, title=title, negative_label=negative_label,
                                       ctx=ctx)
        except InputError as err:
            if not skip_invalid:
                raise
            report.add(err)
            continue
        titles(title, index)
        if "\x00" in doc.text:
            report.warn(NUL_TEXT, path=path, index=index, title=title)
        yield doc
    warn_unreported(report, owned)


def read_sentence_corpus(
    path: str | Path,
    nlp: Language,
    *,
    relations_path: str | Path | None = None,
    label_names_path: str | Path | None = None,
    first: int | None = None,
    last: int | None = None,
    negative_label: str | None = None,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
) -> Iterator[Doc]:
    """Read SemEval or TACRED, told apart by all records (``token`` => TACRED)."""
    fmt = detect_records_format(load_json_records(path), path)
    if fmt == "docred":
        raise InputError("is a DocRED document file; expected a sentence-level corpus "
                         "(SemEval or TACRED)", path=path)
    if fmt == "tacred":
        yield from read_tacred(path, nlp, first=first, last=last,
                               negative_label=negative_label or TACRED_NEGATIVE,
                               skip_invalid=skip_invalid, report=report)
    else:
        yield from read_semeval(path, nlp, relations_path=relations_path,
                                label_names_path=label_names_path, first=first, last=last,
                                negative_label=negative_label or SEMEVAL_NEGATIVE,
                                skip_invalid=skip_invalid, report=report)
