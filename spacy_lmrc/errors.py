"""Errors a user can act on: each names the file, the document and the field at fault."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_ITEM_INDEX = re.compile(r"\[\d+\]")


class InputError(ValueError):
    """Bad input data: says which file, which document (index and title) and which field.

    ``kind`` is the short, value-free reason used to group many errors in a
    :class:`SkipReport` (it defaults to the message); ``unit`` names what ``index`` counts
    (documents, or the records of a predictions file).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        index: int | None = None,
        title: str | None = None,
        field: str | None = None,
        kind: str | None = None,
        unit: str = "document",
    ) -> None:
        self.path = str(path) if path is not None else None
        self.index = index
        self.title = title
        self.field = field
        self.reason = message
        self.kind = kind or message
        self.unit = unit
        super().__init__(self._format())

    def where(self) -> str:
        """``document 3 ('Title')``, or ``''`` when no document is known."""
        if self.index is None:
            return ""
        return f"{self.unit} {self.index}" + (f" ({self.title!r})" if self.title else "")

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"file {self.path}")
        if self.index is not None:
            where.append(self.where())
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return (", ".join(where) + ": " if where else "") + self.reason


@dataclass
class InputWarning:
    """Usable data that still looks wrong: counted per file and kind, never dropped silently."""

    path: str | None
    kind: str
    documents: list[str] = field(default_factory=list)
    count: int = 0


@dataclass
class SkipReport:
    """What a reader skipped (``skip_invalid=True``) and warned about, so nothing disappears.

    ``len(report)`` is the number of skipped documents; :meth:`summary` groups them by reason
    (field and kind), naming every document by index and title, then lists the warnings.
    """

    errors: list[InputError] = field(default_factory=list)
    warnings: dict[tuple[str | None, str], InputWarning] = field(default_factory=dict)

    def add(self, error: InputError) -> None:
        self.errors.append(error)

    def warn(self, kind: str, *, path: str | Path | None = None, index: int | None = None,
             title: str | None = None, count: int = 1) -> None:
        """Count ``count`` occurrences of a problem ``kind`` in one document of ``path``."""
        key = (str(path) if path is not None else None, kind)
        warning = self.warnings.setdefault(key, InputWarning(key[0], kind))
        warning.count += count
        if index is not None:
            warning.documents.append(f"{index}" + (f" ({title!r})" if title else ""))

    def __len__(self) -> int:
        return len(self.errors)

    def warning_lines(self) -> list[str]:
        """One line per warning: file, count, kind and the documents concerned."""
        lines = []
        for warning in self.warnings.values():
            line = "warning: " + (f"file {warning.path}: " if warning.path else "")
            if not warning.documents:  # a file-level warning
                lines.append(line + warning.kind)
                continue
            line += f"{warning.count} {warning.kind}"
            if len(warning.documents) != warning.count:
                line += f", in {len(warning.documents)} document(s)"
            lines.append(line + ": " + ", ".join(warning.documents))
        return lines

    def summary(self) -> str:
        """Skipped documents grouped by reason (each named by index and title), then warnings."""
        lines = []
        if self.errors:
            lines.append(f"skipped {len(self.errors)} invalid document(s):")
        groups: dict[str, list[InputError]] = {}
        for err in self.errors:
            field_name = _ITEM_INDEX.sub("[]", err.field) if err.field else None
            reason = f"field {field_name!r}: {err.kind}" if field_name else err.kind
            groups.setdefault(reason, []).append(err)
        for reason, errs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(errs)} x {reason}")
            lines += [f"    {err}" for err in errs]
        return "\n".join(lines + self.warning_lines()) or "skipped 0 documents"
