"""Shared CLI plumbing: one-line errors instead of tracebacks, document loading, safe writes."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc

from ..corpus import read_docred, read_semeval, read_tacred
from ..corpus.io import detect_records_format, load_json_records
from ..corpus.labels import load_relation_set
from ..corpus.readers import read_docbin
from ..errors import InputError, SkipReport

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("auto", "spacy", "docred", "semeval", "tacred")


def friendly_errors(func: F) -> F:
    """Print input and file-system errors as one actionable line and exit 1, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (InputError, FileNotFoundError) as err:
            message = str(err)
        except OSError as err:  # a folder, a full disk, no permission: name the path
            where = f"{err.filename}: " if err.filename else ""
            message = f"{where}{err.strerror or err}"
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def timed(func: F) -> F:
    """End a long-running command with how long it took (after its line saying what it
    wrote), so every workflow step closes with what and how long."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = func(*args, **kwargs)
        seconds = time.perf_counter() - started
        took = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        info(f"done in {took}")
        return result

    return wrapper  # type: ignore[return-value]


def info(message: str) -> None:
    """Progress and provenance go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr)


def detect_format(path: Path) -> str:
    """``spacy`` for DocBin files, else ``docred``, ``tacred`` or ``semeval`` by all records."""
    if path.suffix == ".spacy":
        return "spacy"
    return detect_records_format(load_json_records(path), path)


def load_docs(
    path: Path,
    nlp: Language | None = None,
    *,
    fmt: str = "auto",
    first: int | None = None,
    last: int | None = None,
    skip_invalid: bool = False,
    relations_path: Path | None = None,
    label_names_path: Path | None = None,
    require_labels: bool = False,
    unique_titles: bool = False,
    relation_set: Collection[str] | None = None,
) -> tuple[list[Doc], SkipReport]:
    """Docs from any supported file, and the report of skipped documents and warnings.

    A gold file for scoring sets ``require_labels`` and ``unique_titles`` (DocRED JSON). An
    empty file or an empty ``first`` / ``last`` selection is an error; every document skipped
    is a warning.
    """
    nlp = nlp or spacy.blank("en")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})", path=path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    report = SkipReport()
    if fmt == "spacy":
        docs = read_docbin(path, nlp, first=first, last=last, report=report,
                           unique_titles=unique_titles, relation_set=relation_set)
    elif fmt == "docred":
        docs = list(read_docred(path, nlp.vocab, first=first, last=last,
                                skip_invalid=skip_invalid, report=report,
                                require_labels=require_labels, unique_titles=unique_titles,
                                relation_set=relation_set))
    elif fmt == "semeval":
        docs = list(read_semeval(path, nlp, relations_path=relations_path,
                                 label_names_path=label_names_path, first=first, last=last,
                                 skip_invalid=skip_invalid, report=report))
    else:
        docs = list(read_tacred(path, nlp, first=first, last=last, skip_invalid=skip_invalid,
                                report=report))
    if len(report) or report.warnings:
        info(report.summary())
    if not docs and not len(report):
        raise InputError("the --first/--last selection has no documents", path=path)
    if not docs:
        info(f"warning: file {path}: no valid document, all {len(report)} were skipped")
    return docs, report


def count_or_null(value: str) -> int | None:
    """A ``--first`` / ``--last`` value: a number of documents, or ``null`` / ``none`` for all
    (as weasel writes a project variable set to null). Its range is checked where it is used."""
    if value.strip().lower() in ("null", "none", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number of documents or null, not {value!r}"
                                 ) from None


def first_option(flag: str = "--first", what: str = "documents") -> Any:
    """``--first N`` (or ``flag``): keep only the first N records; ``null`` keeps all."""
    return typer.Option(None, flag, parser=count_or_null, help=f"Only the first N {what}")


def last_option(flag: str = "--last", what: str = "documents") -> Any:
    """``--last N`` (or ``flag``): then keep only the last N records; ``null`` keeps all."""
    return typer.Option(None, flag, parser=count_or_null, help=f"Then only the last N {what}")


def format_option(formats: str = "auto, spacy, docred, semeval or tacred") -> Any:
    """``--format``: how the input file is read (``auto`` tells by its records)."""
    return typer.Option("auto", "--format", help=formats)


def relations_option() -> Any:
    """``--relations``: a SemEval sentence list's labels, one per sentence."""
    return typer.Option(None, "--relations",
                        help="SemEval: labels parallel to the sentences (train_relations.json)")


def label_names_option() -> Any:
    """``--label-names``: the names of a SemEval labels file's integer ids."""
    return typer.Option(None, "--label-names",
                        help="SemEval: names of the integer label ids (relations.json)")


def skip_invalid_option() -> Any:
    """``--skip-invalid``: skip bad records and report how many, instead of stopping."""
    return typer.Option(False, "--skip-invalid",
                        help="Skip bad records (counted and reported) instead of failing")


def relation_set_option(path: Path | None) -> set[str] | None:
    """The relation ids of a ``--relation-set`` file, or None when not given."""
    return set(load_relation_set(path)) if path is not None else None


def check_output(path: Path, folder: bool = False) -> None:
    """Fail before any work when ``path`` cannot be written (a folder, or a file in its way)."""
    if path.is_dir() and not folder:
        raise InputError("is a folder; expected an output file path", path=path)
    if path.exists() and folder and not path.is_dir():
        raise InputError("is a file; expected an output folder path", path=path)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot create the output: {parent} is a file", path=path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the output: no permission to write in {parent}",
                         path=path)


def _umask() -> int:
    """The process umask (temporary files are created private; outputs should not be)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    A failed run leaves the old file (or none), never a half-written one.
    """
    check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise InputError(f"cannot write the output: {err.strerror or err}", path=path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write the output: {err.strerror or err}", path=path) from None


@contextmanager
def atomic_folder(path: Path, marker: str) -> Iterator[Path]:
    """A temporary folder beside ``path`` to write into; it replaces ``path`` on success.

    An existing ``path`` is replaced only when it is empty or holds ``marker`` (i.e. was
    written by the same command), and only after the new folder is complete.
    """
    check_output(path, folder=True)
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise InputError(f"exists and is not an output of this command (no {marker}); "
                         f"give a new or empty folder", path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise InputError(f"cannot write the output: {err.strerror or err}", path=path) from None
    old = tmp.with_name(f"{tmp.name}.old")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
    except OSError as err:
        raise InputError(f"cannot write the output: {err.strerror or err}", path=path) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def describe_slice(path: Path, first: int | None, last: int | None) -> str:
    """``path, first N, last M`` for provenance lines."""
    parts = [str(path)]
    if first is not None:
        parts.append(f"first {first}")
    if last is not None:
        parts.append(f"last {last}")
    return ", ".join(parts)
