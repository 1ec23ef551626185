"""Relation extraction over many documents: reading a corpus, one record per document, resuming.

:class:`DocumentSource` reads a folder of ``.txt`` files, one ``.txt`` file (one document, or
one per line), or a ``.jsonl`` / ``.json`` file of ``{"text"}`` records or DocRED documents, and
gives each document a stable id. Bad input is an :class:`~spacy_lmrc.errors.InputError` naming
the file, the document and the field (a text that does not decode: the byte and its offset),
or, with ``skip_invalid``, a counted skip in the source's :class:`~spacy_lmrc.errors.SkipReport`,
as the corpus readers of ``convert`` and ``predict`` do.

:class:`ResumableJsonl` appends one JSON record per document and, when the file already exists,
knows which documents it holds (dropping a last line cut off by an interruption), so a
restarted run does each remaining document once and none twice. :func:`extract` runs
``nlp.pipe`` over the documents not yet done and writes each record as it comes;
:mod:`spacy_lmrc.ray_extraction` runs the same on Ray Data.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.vocab import Vocab
from tqdm import tqdm

from .corpus import docred_record_to_doc
from .corpus.io import record_format
from .errors import InputError, SkipReport
from .render import relation_records


def load_pipeline(name: str | Path) -> Language:
    """``spacy.load`` with an actionable error for a name that is neither package nor folder."""
    try:
        return spacy.load(name)
    except OSError as err:
        raise InputError(f"could not load the pipeline: {err}", path=name) from None


@dataclass(frozen=True)
class Document:
    """One document to extract from: its id (unique in the source, the key of its output
    record), a title to show, and the text, or a Doc whose tokens, sentences and entities
    are given (DocRED)."""

    id: str
    title: str | None
    content: str | Doc


def decode(data: bytes, encoding: str, *, path: str | Path, offset: int = 0,
           index: int | None = None) -> str:
    """``data`` decoded; bytes that are not ``encoding`` are an error naming the file, the byte
    and its offset in the file (``offset`` is where ``data`` starts)."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise InputError(
            f"not {encoding} text: byte 0x{data[err.start]:02x} at offset {offset + err.start} "
            f"cannot be decoded; give the file's encoding (e.g. --encoding latin-1)",
            path=path, index=index, kind=f"not {encoding} text") from None


def check_input(path: str | Path, encoding: str = "utf-8") -> Path:
    """``path`` if it exists and ``encoding`` is known (checked before any slow work)."""
    path = Path(path)
    if not path.exists():
        raise InputError("not found; expected a folder of .txt files, a .txt, .jsonl or .json "
                         "file", path=path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}", path=path) from None
    return path


@dataclass
class DocumentSource:
    """The documents of a folder of ``.txt`` files, a ``.txt`` file or a ``.jsonl`` / ``.json``
    file, read lazily in a stable order.

    Ids: a folder's file path relative to it; a ``.txt`` file's name; with ``lines`` the index
    of the non-empty line; a record's ``id`` field, else its index in the file. A record holds
    a non-empty ``text`` (and optionally ``title``) or is a DocRED document (``title``,
    ``sents``, ``vertexSet``; its entities are used, relations in it ignored). With
    ``skip_invalid`` a bad document (not decodable, not JSON, no text, invalid DocRED, a
    repeated id) is counted in :attr:`report` and skipped; otherwise it raises.
    """

    path: Path
    vocab: Vocab
    lines: bool = False
    encoding: str = "utf-8"
    skip_invalid: bool = False
    report: SkipReport = field(default_factory=SkipReport)

    def __post_init__(self) -> None:
        self.path = check_input(self.path, self.encoding)
        self._json_list: list[Any] | None = None

    def size(self) -> int:
        """How many documents the source holds, valid or not (a quick pass; a progress total)."""
        if self.path.is_dir():
            return len(self._text_files())
        if self.path.suffix == ".json":
            return len(self._load_json_list())
        if self.path.suffix == ".jsonl" or self.lines:
            with self.path.open("rb") as handle:
                return sum(1 for line in handle if line.strip())
        return 1 if self.path.read_bytes().strip() else 0

    def __iter__(self) -> Iterator[Document]:
        seen: dict[str, int] = {}
        for index, parse in enumerate(self._entries()):
            try:
                document = parse()
                first = seen.setdefault(document.id, index)
                if first != index:
                    raise InputError(
                        f"id {document.id!r} is also document {first}'s; ids identify documents "
                        f"in the output and when resuming", path=self.path, index=index,
                        title=document.title, field="id", kind="repeated id")
            except InputError as err:
                if not self.skip_invalid:
                    raise
                self.report.add(err)
                continue
            yield document

    def _entries(self) -> Iterator[Callable[[], Document]]:
        """One parser per document, so that every document's error is caught on its own."""
        if self.path.is_dir():
            for file in self._text_files():
                yield lambda file=file: self._text_file(file, file.relative_to(self.path))
        elif self.path.suffix == ".json":
            for index, record in enumerate(self._load_json_list()):
                yield lambda index=index, record=record: self._record(record, index)
        elif self.path.suffix == ".jsonl":
            for index, (lineno, offset, line) in enumerate(self._byte_lines()):
                yield lambda index=index, lineno=lineno, offset=offset, line=line: self._record(
                    self._json_line(line, lineno, offset, index), index)
        elif self.lines:
            for index, (_, offset, line) in enumerate(self._byte_lines()):
                yield lambda index=index, offset=offset, line=line: Document(
                    str(index), None, decode(line, self.encoding, path=self.path, offset=offset,
                                             index=index).strip())
        elif self.path.read_bytes().strip():
            yield lambda: self._text_file(self.path, Path(self.path.name))

    def _text_files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*.txt") if p.is_file())

    def _text_file(self, file: Path, name: Path) -> Document:
        return Document(name.as_posix(), file.stem,
                        decode(file.read_bytes(), self.encoding, path=file))

    def _byte_lines(self) -> Iterator[tuple[int, int, bytes]]:
        """(line number, byte offset in the file, line) of every non-blank line."""
        offset = 0
        with self.path.open("rb") as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield lineno, offset, line
                offset += len(line)

    def _json_line(self, line: bytes, lineno: int, offset: int, index: int) -> Any:
        text = decode(line, self.encoding, path=self.path, offset=offset, index=index)
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            at = offset + len(text[:err.pos].encode(self.encoding))
            raise InputError(f"line {lineno}, column {err.colno} (byte offset {at}) is not valid "
                             f"JSON: {err.msg.removesuffix(' at')}", path=self.path, index=index,
                             kind="not valid JSON") from None

    def _load_json_list(self) -> list[Any]:
        if self._json_list is None:
            text = decode(self.path.read_bytes(), self.encoding, path=self.path)
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"not valid JSON: {err.msg} at line {err.lineno}, column "
                                 f"{err.colno}", path=self.path) from None
            if not isinstance(data, list):
                raise InputError(f"expected a JSON list of documents, got {type(data).__name__}",
                                 path=self.path)
            self._json_list = data
        return self._json_list

    def _record(self, record: Any, index: int) -> Document:
        """A ``{"text"}`` record or a DocRED document as a :class:`Document`."""
        where: dict[str, Any] = {"path": self.path, "index": index}
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, got {type(record).__name__}",
                             kind="expected a JSON object", **where)
        title = record.get("title")
        where["title"] = title if isinstance(title, str) else None
        doc_id = record.get("id", index)
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            raise InputError(f"expected a string or an integer, got {type(doc_id).__name__}",
                             field="id", kind="id not a string or an integer", **where)
        if record_format(record) == "docred":
            doc = docred_record_to_doc(record, self.vocab, path=self.path, index=index,
                                       with_relations=False)
            return Document(str(doc_id), doc._.title, doc)
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError("expected a non-empty 'text' (or a DocRED document: title, sents, "
                             "vertexSet)", field="text", kind="no text", **where)
        return Document(str(doc_id), where["title"], text)


class ResumableJsonl:
    """A JSONL file of one record per document (``"id"`` first), written incrementally.

    Opening an existing file reads the ids it holds (:attr:`done`), so they can be skipped,
    and cuts off a last line that an interruption left incomplete; each record is flushed as
    it is written, so a killed run loses at most the record being written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done, self.repaired = completed_ids(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = self.path.open("a", encoding="utf8")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


def completed_ids(path: Path) -> tuple[set[str], int]:
    """The ids of the records in the JSONL file ``path`` (none if it does not exist), and the
    number of bytes of an incomplete last line removed from it (an interrupted write).

    A complete line that is not such a record means the file is not an output of this
    extraction: an error naming the file and the line.
    """
    if not path.exists():
        return set(), 0
    if path.is_dir():
        raise InputError("is a folder; expected an output .jsonl file", path=path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    done = set()
    for lineno, line in enumerate(data[:end].splitlines(), start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise InputError(f"line {lineno} is not a record of spacy-lmrc extract (a JSON "
                             f"object with a string 'id'); give a new output path, or remove "
                             f"the file to start over", path=path)
        done.add(record["id"])
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
    return done, len(data) - end


def label_names_of(nlp: Language) -> dict[str, str]:
    """Relation id -> name from any pipe that carries a task with a label map."""
    for _, pipe in nlp.pipeline:
        task = getattr(pipe, "task", None)
        labels = getattr(task, "labels", None)
        if isinstance(labels, dict):
            return dict(labels)
    return {}


@dataclass
class Stages:
    """Which stages a pipeline has: what finds entities, proposes pairs and names relations."""

    entities: str | None
    proposer: Any
    classifier: Any

    @classmethod
    def of(cls, nlp: Language) -> Stages:
        """The last component assigning each of ``doc._.entities``, ``doc._.relation_candidates``
        and ``doc._.relations`` (None where no component does)."""
        def last(attribute: str) -> str | None:
            names = [n for n in nlp.pipe_names if attribute in nlp.get_pipe_meta(n).assigns]
            return names[-1] if names else None

        proposer, classifier = last("doc._.relation_candidates"), last("doc._.relations")
        return cls(last("doc._.entities"), proposer and nlp.get_pipe(proposer),
                   classifier and nlp.get_pipe(classifier))


def explain(doc: Doc, stages: Stages) -> dict[str, Any]:
    """Counts of one extracted Doc (mentions, entities, ordered pairs, candidate pairs when a
    proposer ran, pairs classified, relations) and, with no relation, the stage to blame."""
    n = len(doc._.entities)
    counts: dict[str, Any] = {
        "mentions": sum(len(e["mentions"]) for e in doc._.entities), "entities": n,
        "pairs": n * (n - 1),
        "candidates": len(doc._.relation_candidates) if stages.proposer is not None else None,
        "relations": len(doc._.relations),
    }
    task = getattr(stages.classifier, "task", None)
    counts["classified"] = len(task.select_pairs(doc)) if task is not None and n > 1 else None
    counts["why"] = None if counts["relations"] else _why_empty(counts, stages)
    return counts


def _why_empty(counts: dict[str, Any], stages: Stages) -> str:
    """The first stage after which no relation was possible any more."""
    if stages.entities is None and not counts["entities"]:
        return "the pipeline finds no entities (no NER and lmrc_entity_grouper) and none were given"
    if not counts["entities"]:
        return "0 entities: the NER found no mention in the text"
    if counts["entities"] == 1:
        return "1 entity: no pair of entities to relate"
    if counts["candidates"] == 0:
        threshold = getattr(stages.proposer, "threshold", None)
        at = f" at threshold {threshold:.3g}" if isinstance(threshold, float) else ""
        return f"the proposer kept none of the {counts['pairs']} entity pairs{at}"
    if stages.classifier is None:
        return "the pipeline has no relation classifier"
    return (f"the relation classifier named no relation for the {counts['classified']} "
            f"pairs it was given")


def explanation_line(title: str, counts: dict[str, Any]) -> str:
    """``title: 5 mentions, 3 entities, 6 pairs, 2 proposed, 0 relations: why``."""
    parts = [f"{counts['mentions']} mentions", f"{counts['entities']} entities",
             f"{counts['pairs']} pairs"]
    if counts["candidates"] is not None:
        parts.append(f"{counts['candidates']} proposed")
    parts.append(f"{counts['relations']} relations")
    line = f"{title}: {', '.join(parts)}"
    return f"{line}: {counts['why']}" if counts["why"] else line


def document_record(doc: Doc, doc_id: str, stages: Stages,
                    label_names: dict[str, str]) -> dict[str, Any]:
    """The output record of one extracted document: its id and title, its relations (entity
    names and types, relation name and id, score) and what each stage found (``counts``,
    see :func:`explain`)."""
    relations = [{k: v for k, v in r.items() if k != "doc"}
                 for r in relation_records(doc, 0, label_names)]
    return {"id": doc_id, "title": doc._.title, "relations": relations,
            "counts": explain(doc, stages)}


def display_name(record: dict[str, Any]) -> str:
    """How a document is named in messages: its title, else ``document <id>``."""
    return str(record["title"]) if record["title"] is not None else f"document {record['id']}"


def pipe_records(nlp: Language, documents: Iterable[Document], *, batch_size: int = 8,
                 n_process: int = 1) -> Iterator[tuple[Doc, dict[str, Any]]]:
    """Each document through ``nlp.pipe``, in input order, with its output record.

    With ``n_process > 1`` torch runs one thread per process while the workers run: they are
    forked from this process, and a forked worker hangs in its first OpenMP region when the
    parent's was several threads wide (one thread per process also keeps N processes on N
    cores)."""
    stages, names = Stages.of(nlp), label_names_of(nlp)
    threads = torch.get_num_threads()
    if n_process > 1:
        torch.set_num_threads(1)
    try:
        stream = nlp.pipe(((d.content, (d.id, d.title)) for d in documents), as_tuples=True,
                          batch_size=batch_size, n_process=n_process)
        for doc, (doc_id, title) in stream:
            if title is not None:
                doc._.title = title
            yield doc, document_record(doc, doc_id, stages, names)
    finally:
        torch.set_num_threads(threads)


def extract(nlp: Language, source: DocumentSource, write: Callable[[dict[str, Any]], None], *,
            done: Collection[str] = (), batch_size: int = 8, n_process: int = 1,
            progress: bool = True) -> Iterator[tuple[Doc, dict[str, Any]]]:
    """Run ``nlp.pipe`` over the documents of ``source`` whose id is not in ``done``, pass
    each output record to ``write`` as soon as its document is done, and yield (Doc, record)
    in input order. The progress bar (stderr) shows documents done, rate and time left."""
    todo = (d for d in source if d.id not in done)
    total = source.size()
    with tqdm(total=total, initial=min(len(done), total), desc="extract", unit="doc",
              disable=not progress, dynamic_ncols=True) as bar:
        for doc, record in pipe_records(nlp, todo, batch_size=batch_size, n_process=n_process):
            write(record)
            bar.update(1)
            yield doc, record
