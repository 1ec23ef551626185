"""Errors a user can act on: each names the file, the document and the field at fault."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class InputError(ValueError):
    """Bad input data: says which file, which document (index and title) and which field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        index: int | None = None,
        title: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.index = index
        self.title = title
        self.field = field
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"file {self.path}")
        if self.index is not None:
            doc = f"document {self.index}"
            if self.title:
                doc += f" ({self.title!r})"
            where.append(doc)
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return (", ".join(where) + ": " if where else "") + self.reason


@dataclass
class SkipReport:
    """Counts what a reader skipped with ``skip_invalid=True``, so nothing disappears silently."""

    errors: list[InputError] = field(default_factory=list)

    def add(self, error: InputError) -> None:
        self.errors.append(error)

    def __len__(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        """One line per distinct reason, with counts."""
        if not self.errors:
            return "skipped 0 documents"
        reasons = Counter(f"field {e.field!r}: {e.reason}" for e in self.errors)
        lines = [f"skipped {len(self.errors)} invalid document(s):"]
        lines += [f"  {count} x {reason}" for reason, count in reasons.most_common()]
        return "\n".join(lines)
