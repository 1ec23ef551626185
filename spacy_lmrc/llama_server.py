"""A local llama.cpp server (llama-cpp-python's ``python -m llama_cpp.server``) for the tests
and benchmarks of :class:`~spacy_lmrc.backends.openai.OpenAIBackend`: started on a free
127.0.0.1 port, waited for, and always stopped."""

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
                 n_threads: int = 1, timeout: float = 300.0) -> Iterator[str]:
    """Serve ``gguf`` under the name ``alias``; yields the API root (``http://127.0.0.1:PORT/v1``)
    once the server answers. Its output (load messages, prompt-cache hits) goes to ``log``;
    ``logits_all`` is on, as completions' log-probabilities need it."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        raise InputError("llama-cpp-python is not installed: pip install 'spacy-lmrc[serve]'",
                         field="llama_cpp") from err
    port = free_port()
    with Path(log).open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
             alias, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
             "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
             "--logits_all", "true", "--verbose", "true"],
            stdout=out, stderr=subprocess.STDOUT)
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
