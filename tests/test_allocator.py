"""The allocator a ``spacy-lmrc`` process runs with (:mod:`spacy_lmrc.allocator`)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from spacy_lmrc import allocator
from spacy_lmrc.__main__ import main
from spacy_lmrc.allocator import (
    ALLOCATOR_ENV,
    allocator_choice,
    find_tcmalloc,
    loaded_allocator,
    preload_environment,
    restart_with_tcmalloc,
)

TCMALLOC = "libtcmalloc_minimal.so.4"
MARKER = "SPACY_LMRC_ALLOCATOR_RESTARTED"


def test_loaded_allocator_reads_the_mapped_libraries(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert loaded_allocator(maps) == "system"
    maps.write_text(maps.read_text() + f"7f02-7f03 r-xp 0 08:01 2 /usr/lib/{TCMALLOC}\n")
    assert loaded_allocator(maps) == "tcmalloc"
    assert loaded_allocator(tmp_path / "missing") == "system"


def test_allocator_choice() -> None:
    assert allocator_choice({}) == "auto"
    assert allocator_choice({ALLOCATOR_ENV: " System "}) == "system"
    with pytest.raises(ValueError, match=f"{ALLOCATOR_ENV}='fast'.*auto, system"):
        allocator_choice({ALLOCATOR_ENV: "fast"})


def test_preload_environment_puts_tcmalloc_first() -> None:
    env = preload_environment({"LD_PRELOAD": "libother.so", "PATH": "/bin"}, TCMALLOC)
    assert env["LD_PRELOAD"] == f"{TCMALLOC} libother.so"
    assert env["PATH"] == "/bin" and env[MARKER] == "1"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    kept = preload_environment({"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "5"}, TCMALLOC)
    assert kept["LD_PRELOAD"] == TCMALLOC and kept["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == "5"


@pytest.fixture
def restart(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """A Linux process on glibc's malloc with tcmalloc installed; os.execve recorded."""
    calls: list[tuple] = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(allocator, "loaded_allocator", lambda: "system")
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: TCMALLOC)
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    for name in (ALLOCATOR_ENV, MARKER, "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_restart_execs_the_same_command_with_tcmalloc(restart: list[tuple]) -> None:
    restart_with_tcmalloc()
    [(program, argv, env)] = restart
    assert program == sys.executable and argv == sys.orig_argv
    assert env["LD_PRELOAD"] == TCMALLOC and env[MARKER] == "1"


class Restarted(Exception):
    """Stands for os.execve, which does not return."""


def test_command_line_restarts_before_the_commands_imports(restart: list[tuple],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    commands_imported: list[bool] = []

    def execve(*args: object) -> None:
        commands_imported.append("spacy_lmrc.cli" in sys.modules)
        raise Restarted

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.delitem(sys.modules, "spacy_lmrc.cli", raising=False)
    with pytest.raises(Restarted):
        main()
    assert commands_imported == [False]
    [script] = [entry for entry in entry_points(group="console_scripts")
                if entry.name == "spacy-lmrc"]
    assert script.value == "spacy_lmrc.__main__:main"


@pytest.mark.parametrize("case", ["system chosen", "no tcmalloc", "already loaded", "not linux"])
def test_no_restart(restart: list[tuple], monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    if case == "system chosen":
        monkeypatch.setenv(ALLOCATOR_ENV, "system")
    elif case == "no tcmalloc":
        monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    elif case == "already loaded":
        monkeypatch.setattr(allocator, "loaded_allocator", lambda: "jemalloc")
    else:
        monkeypatch.setattr(sys, "platform", "darwin")
    restart_with_tcmalloc()
    assert restart == []


def test_restarted_process_takes_the_preload_off(restart: list[tuple],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MARKER, "1")
    monkeypatch.setenv("LD_PRELOAD", f"{TCMALLOC} libother.so")
    restart_with_tcmalloc()
    assert restart == []  # a preload that did not take is not tried again
    assert os.environ["LD_PRELOAD"] == "libother.so" and MARKER not in os.environ
    monkeypatch.setenv(MARKER, "1")
    monkeypatch.setenv("LD_PRELOAD", TCMALLOC)
    restart_with_tcmalloc()
    assert "LD_PRELOAD" not in os.environ


@pytest.mark.skipif(sys.platform != "linux" or find_tcmalloc() is None,
                    reason="tcmalloc is not installed (Debian/Ubuntu: libtcmalloc-minimal4)")
def test_a_real_restart_runs_under_tcmalloc() -> None:
    code = ("import os; from spacy_lmrc.allocator import restart_with_tcmalloc, loaded_allocator; "
            "restart_with_tcmalloc(); print(loaded_allocator(), os.environ.get('LD_PRELOAD'))")
    env = {name: value for name, value in os.environ.items()
           if name not in (ALLOCATOR_ENV, MARKER, "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["tcmalloc", "None"]
    env[ALLOCATOR_ENV] = "system"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["system", "None"]
