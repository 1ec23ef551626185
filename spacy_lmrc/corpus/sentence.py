"""Sentence-level corpora (SemEval-2010 Task 8, TACRED) as one-pair Docs.

Each Doc holds one sentence, two entities (0 = head / ``<e1>`` / subject, 1 = tail / ``<e2>``
/ object) and at most one gold relation between them. The negative label (``Other``,
``no_relation``) is stored as *no* relation, so positive-only metrics fall out naturally;
:func:`sentence_label` turns a Doc back into its single label.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from ..doc import Entity
from ..errors import InputError, SkipReport
from .io import load_json_records, select_records

SEMEVAL_NEGATIVE = "Other"
TACRED_NEGATIVE = "no_relation"
_MARKUP = re.compile(r"</?e[12]>")


def sentence_label(doc: Doc, negative_label: str) -> str:
    """The label of the (head, tail) = (0, 1) pair, or ``negative_label`` when none is set."""
    for rel in doc._.relations:
        if rel["head"] == 0 and rel["tail"] == 1:
            return rel["label"]
    return negative_label


def strip_markup(text: str) -> str:
    """Remove ``<e1>``/``<e2>`` tags (RAG4RE embeds sentences without them)."""
    return _MARKUP.sub("", text)


def load_label_names(path: str | Path) -> list[str]:
    """Label names by id from a Hugging Face features schema, a list, or a ``{name: id}`` map."""
    import srsly

    path = Path(path)
    if not path.exists():
        raise InputError("label names file not found", path=path)
    data = srsly.read_json(path)
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return list(data)
    if isinstance(data, dict) and isinstance(data.get("relation"), dict):
        names = data["relation"].get("names")
        if isinstance(names, list):
            return [str(n) for n in names]
    if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
        return [name for name, _ in sorted(data.items(), key=lambda kv: kv[1])]
    raise InputError(
        "expected a list of names, a features schema with relation.names, or a {name: id} map",
        path=path,
    )


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


def semeval_sentence_to_doc(
    text: str, label: str, nlp: Language, *, title: str,
    negative_label: str = SEMEVAL_NEGATIVE, ctx: dict | None = None,
) -> Doc:
    """Tokenize a ``<e1>..</e1>``/``<e2>..</e2>`` sentence and mark its two entities."""
    ctx = ctx or {}
    if not isinstance(text, str) or not text.strip():
        raise InputError("expected a non-empty sentence string", field="sentence", **ctx)
    char_spans = []
    for tag in ("e1", "e2"):
        match = re.search(rf"<{tag}>(.*?)</{tag}>", text)
        if match is None or not match.group(1).strip():
            raise InputError(f"expected one non-empty <{tag}>...</{tag}> span in {text!r}",
                             field="sentence", **ctx)
        before = strip_markup(text[: match.start()])
        inner = strip_markup(match.group(1))
        char_spans.append((len(before), len(before) + len(inner)))
    doc = nlp.make_doc(strip_markup(text))
    spans = []
    for start, end in char_spans:
        span = doc.char_span(start, end, alignment_mode="expand")
        if span is None:
            raise InputError(f"entity at characters {start}-{end} does not align with tokens",
                             field="sentence", **ctx)
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
    or it holds marked-up sentence strings and ``relations_path`` the parallel labels: strings,
    or integer ids named by ``label_names_path`` (``relations.json``).
    """
    records = load_json_records(sentences_path)
    labels: list[Any] | None = None
    if relations_path is not None:
        labels = load_json_records(relations_path)
        if len(labels) != len(records):
            raise InputError(
                f"has {len(labels)} labels but {sentences_path} has {len(records)} sentences",
                path=relations_path,
            )
    names = load_label_names(label_names_path) if label_names_path is not None else None
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
            if isinstance(label, int) and not isinstance(label, bool):
                if names is None:
                    raise InputError(f"integer label {label} needs label_names_path to name it",
                                     field="relation", **ctx)
                if not 0 <= label < len(names):
                    raise InputError(f"label id {label} is outside the {len(names)} names",
                                     field="relation", **ctx)
                label = names[label]
            yield semeval_sentence_to_doc(str(text) if text is not None else "", str(label), nlp,
                                          title=str(index), negative_label=negative_label, ctx=ctx)
        except InputError as err:
            if not skip_invalid:
                raise
            if report is not None:
                report.add(err)


def tacred_record_to_doc(record: Any, nlp: Language, *, title: str,
                         negative_label: str = TACRED_NEGATIVE, ctx: dict | None = None) -> Doc:
    """A TACRED record (``token``, ``subj_start/end``, ``obj_start/end`` inclusive, types)."""
    ctx = ctx or {}
    if not isinstance(record, dict):
        raise InputError("expected a record object", **ctx)
    tokens = record.get("token")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise InputError("expected a non-empty list of token strings", field="token", **ctx)
    spans = []
    for role in ("subj", "obj"):
        start, end = record.get(f"{role}_start"), record.get(f"{role}_end")
        valid = isinstance(start, int) and isinstance(end, int)
        if not (valid and 0 <= start <= end < len(tokens)):
            raise InputError(
                f"expected 0 <= {role}_start <= {role}_end < {len(tokens)}, got {start}, {end}",
                field=f"{role}_start", **ctx)
        spans.append((start, end + 1))
    if "relation" not in record:
        raise InputError("missing field 'relation'", field="relation", **ctx)
    doc = Doc(nlp.vocab, words=tokens, spaces=[True] * (len(tokens) - 1) + [False])
    types = [str(record.get("subj_type", "ENTITY")), str(record.get("obj_type", "ENTITY"))]
    return _set_sentence(doc, title, spans, types, str(record["relation"]), negative_label)


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
    """Read a TACRED-format JSON list (or JSONL) of records."""
    records = load_json_records(path)
    for index, record in select_records(records, first=first, last=last):
        ctx = {"path": path, "index": index}
        try:
            title = str(record.get("id", index)) if isinstance(record, dict) else str(index)
            yield tacred_record_to_doc(record, nlp, title=title, negative_label=negative_label,
                                       ctx=ctx)
        except InputError as err:
            if not skip_invalid:
                raise
            if report is not None:
                report.add(err)


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
    """Read SemEval or TACRED, telling them apart by the first record (``token`` => TACRED)."""
    records = load_json_records(path)
    is_tacred = bool(records) and isinstance(records[0], dict) and "token" in records[0]
    if is_tacred:
        yield from read_tacred(path, nlp, first=first, last=last,
                               negative_label=negative_label or TACRED_NEGATIVE,
                               skip_invalid=skip_invalid, report=report)
    else:
        yield from read_semeval(path, nlp, relations_path=relations_path,
                                label_names_path=label_names_path, first=first, last=last,
                                negative_label=negative_label or SEMEVAL_NEGATIVE,
                                skip_invalid=skip_invalid, report=report)
