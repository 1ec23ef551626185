"""Training configs, read and checked one way by both trainers.

``train-proposer`` and ``finetune-classifier`` read a ``.cfg`` file with spaCy-style dotted
overrides, and turn one section of it (``[training]``, ``[finetune]``) into a settings
dataclass. A misspelt setting is an error naming the section, not a silently ignored key.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from confection import Config

from .errors import InputError

S = TypeVar("S")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a ``.cfg`` file, interpolated, with dotted overrides (``{"training.epochs": 3}``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    return Config().from_disk(path, overrides=overrides or {}, interpolate=True)


def require_sections(config: Config, sections: tuple[str, ...], path: str | Path) -> None:
    """Fail with the file's name when one of ``sections`` is missing."""
    for section in sections:
        if section not in config:
            raise InputError(f"the config has no [{section}] section", path=path)


def settings_from_section(cls: type[S], section: dict[str, Any], name: str,
                          path: str | Path | None = None) -> S:
    """The dataclass ``cls`` from the config section ``[name]`` (of the file ``path``);
    unknown keys are an error that lists the known ones."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(section) - known
    if unknown:
        raise InputError(f"unknown setting(s) {sorted(unknown)} in [{name}]; known: "
                         f"{sorted(known)}", path=path, field=name)
    return cls(**section)
