"""The memory allocator a ``spacy-lmrc`` process runs with: tcmalloc where the system has it.

PyTorch allocates CPU tensors with the C library's ``malloc``. With glibc's, RC fine-tuning on
CPU ran at 1/1.48 of tcmalloc's speed in bf16 and 1/1.22 in fp32 (BENCHMARKS.md, "eighth
session": the same 40 steps, 2-core AMD EPYC); jemalloc and mimalloc did not help. An
allocator can only be chosen when a process starts (``LD_PRELOAD``), so
:func:`restart_with_tcmalloc`, called first by the ``spacy-lmrc`` command, starts the process
again with ``libtcmalloc_minimal`` preloaded when the system has it (Debian/Ubuntu: ``apt-get
install libtcmalloc-minimal4``; ``setup.sh`` installs it where it may).
``SPACY_LMRC_ALLOCATOR=system`` keeps the C library's ``malloc``.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: the environment variable that chooses: "auto" (tcmalloc where found, the default) or "system"
ALLOCATOR_ENV = "SPACY_LMRC_ALLOCATOR"
ALLOCATOR_CHOICES = ("auto", "system")
#: set in the restarted process, so that a preload that did not take is not tried again
_RESTARTED_ENV = "SPACY_LMRC_ALLOCATOR_RESTARTED"
#: tcmalloc reports every allocation over 1 GiB on stderr unless told otherwise
_QUIET_TCMALLOC = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
_KNOWN = ("tcmalloc", "jemalloc", "mimalloc")


def loaded_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """The allocator this process runs with: ``"tcmalloc"``, ``"jemalloc"`` or ``"mimalloc"``
    where one is mapped into it, else ``"system"`` (also where ``maps`` cannot be read)."""
    try:
        mapped = maps.read_text(encoding="utf8", errors="replace")
    except OSError:
        return "system"
    return next((name for name in _KNOWN if f"lib{name}" in mapped), "system")


def find_tcmalloc() -> str | None:
    """The name the dynamic loader finds tcmalloc by (the minimal build first), or None."""
    for name in ("tcmalloc_minimal", "tcmalloc"):
        library = ctypes.util.find_library(name)
        if library:
            return library
    return None


def allocator_choice(environ: Mapping[str, str]) -> str:
    """``SPACY_LMRC_ALLOCATOR``'s value, ``"auto"`` when unset; another value is refused."""
    choice = environ.get(ALLOCATOR_ENV, "auto").strip().lower() or "auto"
    if choice not in ALLOCATOR_CHOICES:
        raise ValueError(f"{ALLOCATOR_ENV}={environ[ALLOCATOR_ENV]!r}: expected one of "
                         f"{', '.join(ALLOCATOR_CHOICES)}")
    return choice


def preload_environment(environ: Mapping[str, str], library: str) -> dict[str, str]:
    """``environ`` with ``library`` first in ``LD_PRELOAD``, tcmalloc's large-allocation reports
    off and the restart marked."""
    preload = " ".join(part for part in (library, environ.get("LD_PRELOAD", "")) if part)
    return {**_QUIET_TCMALLOC, **environ, "LD_PRELOAD": preload, _RESTARTED_ENV: "1"}


def restart_with_tcmalloc() -> None:
    """Start this process again (same interpreter and arguments) with tcmalloc preloaded, where
    that is possible and wanted: on Linux, with tcmalloc found and not loaded yet, and
    ``SPACY_LMRC_ALLOCATOR`` not ``"system"``. Returns where it does not restart.

    In the restarted process the preload is taken off the environment again, so the processes
    it starts (a llama.cpp server, Ray workers) choose for themselves.
    """
    if os.environ.pop(_RESTARTED_ENV, None):
        library = find_tcmalloc()
        remaining = [part for part in os.environ.get("LD_PRELOAD", "").split() if part != library]
        if remaining:
            os.environ["LD_PRELOAD"] = " ".join(remaining)
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    if (sys.platform != "linux" or allocator_choice(os.environ) == "system"
            or loaded_allocator() != "system"):
        return
    library = find_tcmalloc()
    if library is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, preload_environment(os.environ, library))
