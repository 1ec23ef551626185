"""DocRED / Re-DocRED JSON <-> spaCy Docs, and Docs -> the official ``result.json``.

A DocRED record is ``{"title", "sents", "vertexSet", "labels"}``: ``sents`` are token lists,
each vertex is an entity given as a list of mentions ``{"name", "pos", "sent_id", "type"}``
with ``pos`` a ``[start, end)`` token range inside sentence ``sent_id``, and each label is
``{"h", "t", "r", "evidence"}``. The hidden-label test split has no ``labels``: such documents
are read with no gold relations, unless ``require_labels`` (a gold file for scoring) makes that
an error. Usable oddities (self-relations, relations outside a given relation set, NUL
characters, repeated titles) are counted as warnings in the reader's :class:`SkipReport`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..doc import Entity, Mention, Relation, unique_display_names
from ..errors import InputError, SkipReport
from .io import TitleCheck, load_json_records, select_records, warn_unreported

SELF_RELATION = "gold relations whose head and tail are the same entity (h == t)"
OUTSIDE_SET = "gold relations outside the relation set"
NUL_TEXT = "tokens with NUL characters in the text"


def _require(record: dict, key: str, kind: type, ctx: dict) -> Any:
    """``record[key]``, which must exist and be of type ``kind``."""
    if key not in record:
        raise InputError(f"missing field {key!r}", field=key, **ctx)
    value = record[key]
    if not isinstance(value, kind):
        raise InputError(f"expected {kind.__name__}, got {type(value).__name__}", field=key,
                         kind=f"expected {kind.__name__}", **ctx)
    return value


def _is_int(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` is no index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _read_sents(record: dict, ctx: dict) -> list[list[str]]:
    """The token lists of ``sents``: non-empty lists of non-empty strings."""
    sents = _require(record, "sents", list, ctx)
    if not sents:
        raise InputError("the document has no sentences", field="sents", **ctx)
    for i, sent in enumerate(sents):
        if not isinstance(sent, list) or not sent:
            raise InputError("expected a non-empty list of tokens", field=f"sents[{i}]", **ctx)
        if not all(isinstance(tok, str) and tok for tok in sent):
            raise InputError("tokens must be non-empty strings", field=f"sents[{i}]", **ctx)
    return sents


def _read_entities(record: dict, sents: list[list[str]], ctx: dict) -> list[Entity]:
    """Entities of ``vertexSet`` with document-level token offsets and unique display names."""
    offsets = [0]
    for sent in sents:
        offsets.append(offsets[-1] + len(sent))
    vertex_set = _require(record, "vertexSet", list, ctx)
    entities: list[Entity] = []
    for e, vertex in enumerate(vertex_set):
        if not isinstance(vertex, list) or not vertex:
            raise InputError(
                "expected a non-empty list of mentions", field=f"vertexSet[{e}]", **ctx
            )
        mentions: list[Mention] = []
        for m, mention in enumerate(vertex):
            where = f"vertexSet[{e}][{m}]"
            if not isinstance(mention, dict):
                raise InputError("expected a mention object", field=where, **ctx)
            for key in ("name", "pos", "sent_id", "type"):
                if key not in mention:
                    raise InputError(f"missing field {key!r}", field=f"{where}.{key}", **ctx)
            sent_id, pos = mention["sent_id"], mention["pos"]
            if not _is_int(sent_id) or not 0 <= sent_id < len(sents):
                raise InputError(
                    f"sentence index {sent_id!r} is outside the document's {len(sents)} sentences",
                    field=f"{where}.sent_id",
                    kind="sentence index outside the document",
                    **ctx,
                )
            sent_len = len(sents[sent_id])
            if (
                not isinstance(pos, list)
                or len(pos) != 2
                or not all(_is_int(p) for p in pos)
                or not 0 <= pos[0] < pos[1] <= sent_len
            ):
                raise InputError(
                    f"mention position {pos!r} is outside its sentence {sent_id} "
                    f"of {sent_len} tokens (expected [start, end) with "
                    f"0 <= start < end <= {sent_len})",
                    field=f"{where}.pos",
                    kind="mention position outside its sentence",
                    **ctx,
                )
            mentions.append(
                {
                    "start": offsets[sent_id] + pos[0],
                    "end": offsets[sent_id] + pos[1],
                    "sent": sent_id,
                    "name": str(mention["name"]),
                }
            )
        entities.append({"name": "", "type": str(vertex[0]["type"]), "mentions": mentions})
    names = unique_display_names([[m["name"] for m in ent["mentions"]] for ent in entities])
    for ent, name in zip(entities, names):
        ent["name"] = name
    return entities


def _read_labels(record: dict, n_entities: int, n_sents: int, ctx: dict,
                 require: bool) -> list[Relation]:
    """Gold relations of ``labels`` (absent: none, unless ``require``), duplicates kept once."""
    if "labels" not in record:
        if require:
            raise InputError("missing field 'labels': a gold file for scoring needs labels on "
                             "every document (a file to predict on may lack them)",
                             field="labels", kind="missing field 'labels'", **ctx)
        return []
    labels = record["labels"]
    if not isinstance(labels, list):
        raise InputError(f"expected a list, got {type(labels).__name__}", field="labels",
                         kind="expected a list", **ctx)
    relations: list[Relation] = []
    seen: set[tuple[int, int, str]] = set()
    for i, label in enumerate(labels):
        where = f"labels[{i}]"
        if not isinstance(label, dict):
            raise InputError("expected a label object", field=where, **ctx)
        for key in ("h", "t", "r"):
            if key not in label:
                raise InputError(f"missing field {key!r}", field=f"{where}.{key}", **ctx)
        for key in ("h", "t"):
            if not _is_int(label[key]) or not 0 <= label[key] < n_entities:
                raise InputError(
                    f"entity index {label[key]!r} is out of range for {n_entities} entities "
                    f"(expected an integer 0 <= {key} < {n_entities})",
                    field=f"{where}.{key}",
                    kind="entity index out of range",
                    **ctx,
                )
        if not isinstance(label["r"], str) or not label["r"]:
            raise InputError(f"expected a relation id string, got {label['r']!r}",
                             field=f"{where}.r", kind="expected a relation id string", **ctx)
        evidence = label.get("evidence", [])
        if not isinstance(evidence, list) or not all(
            _is_int(s) and 0 <= s < n_sents for s in evidence
        ):
            raise InputError(
                f"expected a list of sentence indices below {n_sents}, got {evidence!r}",
                field=f"{where}.evidence",
                kind="expected a list of sentence indices",
                **ctx,
            )
        key = (label["h"], label["t"], label["r"])
        if key in seen:
            continue
        seen.add(key)
        relations.append(
            {"head": key[0], "tail": key[1], "label": key[2], "score": 1.0, "evidence": evidence}
        )
    return relations


def report_warnings(doc: Doc, report: SkipReport, *, relation_set: Collection[str] | None,
                    path: str | Path | None, index: int) -> None:
    """Count the usable but suspicious things of one valid document in ``report``."""
    counts = {
        NUL_TEXT: sum(1 for token in doc if "\x00" in token.text),
        SELF_RELATION: sum(1 for rel in doc._.relations if rel["head"] == rel["tail"]),
        OUTSIDE_SET: 0 if relation_set is None else sum(
            1 for rel in doc._.relations if rel["label"] not in relation_set),
    }
    for kind, count in counts.items():
        if count:
            report.warn(kind, path=path, index=index, title=doc._.title, count=count)


def docred_record_to_doc(
    record: Any,
    vocab: Vocab,
    *,
    path: str | Path | None = None,
    index: int | None = None,
    with_relations: bool = True,
    require_labels: bool = False,
) -> Doc:
    """Convert one DocRED record to a Doc with tokens, sentences, entities and gold relations.

    Duplicate gold triples (same head, tail and relation) are kept once, as the official
    scorer does. Raises :class:`InputError` naming the file, document and field at fault.
    """
    ctx: dict[str, Any] = {"path": path, "index": index}
    if not isinstance(record, dict):
        raise InputError(f"expected a document object, got {type(record).__name__}",
                         kind="expected a document object", **ctx)
    title = record.get("title")
    ctx["title"] = title if isinstance(title, str) else None
    _require(record, "title", str, ctx)
    sents = _read_sents(record, ctx)
    entities = _read_entities(record, sents, ctx)
    relations = (_read_labels(record, len(entities), len(sents), ctx, require_labels)
                 if with_relations else [])
    words = [tok for sent in sents for tok in sent]
    sent_starts = [i == 0 for sent in sents for i in range(len(sent))]
    spaces = [True] * (len(words) - 1) + [False]
    doc = Doc(vocab, words=words, spaces=spaces, sent_starts=sent_starts)
    doc._.title = title
    doc._.entities = entities
    doc._.relations = relations
    return doc


def read_docred(
    path: str | Path,
    vocab: Vocab,
    *,
    first: int | None = None,
    last: int | None = None,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
    with_relations: bool = True,
    require_labels: bool = False,
    unique_titles: bool = False,
    relation_set: Collection[str] | None = None,
) -> Iterator[Doc]:
    """Read a DocRED-format JSON file (``first`` / ``last`` cut a document range).

    With ``skip_invalid`` a bad document is recorded in ``report`` and skipped, wherever it
    is in the file; otherwise the first bad document raises :class:`InputError`. A gold file
    for scoring sets ``require_labels`` and ``unique_titles`` (a repeated title is otherwise
    a warning); ``relation_set`` counts gold relations outside it. Without a ``report``,
    skips and warnings are issued as one Python warning at the end.
    """
    owned = report is None
    report = SkipReport() if report is None else report
    titles = TitleCheck(path, report, strict=unique_titles)
    records = load_json_records(path, allow_empty=False)
    for index, record in select_records(records, first=first, last=last):
        try:
            doc = docred_record_to_doc(record, vocab, path=path, index=index,
                                       with_relations=with_relations,
                                       require_labels=require_labels)
            titles(doc._.title, index)
        except InputError as err:
            if not skip_invalid:
                raise
            report.add(err)
            continue
        report_warnings(doc, report, relation_set=relation_set, path=path, index=index)
        yield doc
    warn_unreported(report, owned)


def docs_to_result(docs: Iterator[Doc] | list[Doc]) -> list[dict[str, Any]]:
    """``doc._.relations`` of every Doc as the official DocRED ``result.json`` list."""
    result = []
    for i, doc in enumerate(docs):
        if doc._.title is None:
            raise InputError("the Doc has no title (doc._.title), which result.json needs", index=i)
        for rel in doc._.relations:
            result.append(
                {
                    "title": doc._.title,
                    "h_idx": rel["head"],
                    "t_idx": rel["tail"],
                    "r": rel["label"],
                    "evidence": list(rel.get("evidence", [])),
                }
            )
    return result
