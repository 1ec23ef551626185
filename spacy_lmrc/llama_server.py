"""A local llama.cpp server for the tests and benchmarks of
:class:`~spacy_lmrc.backends.openai.OpenAIBackend`: started on a free 127.0.0.1 port, waited
for, and always stopped.

Two servers speak the same OpenAI-compatible API with GBNF grammars and log-probabilities:
llama-cpp-python's ``python -m llama_cpp.server`` (a PyPI package; one request at a time) and
llama.cpp's own C++ ``llama-server`` (built from llama.cpp's sources; ``parallel`` slots that
decode concurrent requests in one batch, each slot keeping its own prompt cache).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_server(gguf: str | Path, log: str | Path, *, alias: str = "model", n_ctx: int = 4096,
                 n_threads: int = 1, timeout: float = 300.0, binary: str | Path | None = None,
                 parallel: int = 1) -> Iterator[str]:
    """Serve ``gguf`` under the name ``alias``; yields the API root (``http://127.0.0.1:PORT/v1``)
    once the server answers. Its output (load messages, prompt-cache hits) goes to ``log``.

    Without ``binary``, llama-cpp-python's server (``logits_all`` on, as its completions'
    log-probabilities need it). With ``binary``, the path of a built ``llama-server``, that
    server with ``parallel`` slots of ``n_ctx`` tokens each."""
    port = free_port()
    command = (_cpp_server_command(binary, gguf, alias, port, n_ctx, n_threads, parallel)
               if binary else _python_server_command(gguf, alias, port, n_ctx, n_threads))
    with Path(log).open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise InputError(f"the llama.cpp server exited with {process.returncode}: see "
                                 f"its log {log}", path=gguf)
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise InputError(f"the llama.cpp server did not answer within {timeout} s: "
                                     f"see its log {log}", path=gguf) from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _python_server_command(gguf: str | Path, alias: str, port: int, n_ctx: int,
                           n_threads: int) -> list[str]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        raise InputError("llama-cpp-python is not installed: pip install 'spacy-lmrc[serve]'",
                         field="llama_cpp") from err
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
            alias, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
            "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
            "--logits_all", "true", "--verbose", "true"]


def _cpp_server_command(binary: str | Path, gguf: str | Path, alias: str, port: int, n_ctx: int,
                        n_threads: int, parallel: int) -> list[str]:
    if not Path(binary).is_file():
        raise InputError("no llama-server binary here: build it from llama.cpp's sources "
                         "(cmake --build build --target llama-server)", path=binary)
    if parallel < 1:
        raise InputError(f"parallel {parallel}: expected at least 1 slot", field="parallel")
    # the context is shared by the slots: each gets n_ctx
    return [str(binary), "--model", str(gguf), "--alias", alias, "--host", "127.0.0.1",
            "--port", str(port), "--ctx-size", str(n_ctx * parallel), "--parallel",
            str(parallel), "--threads", str(n_threads), "--threads-batch", str(n_threads)]
