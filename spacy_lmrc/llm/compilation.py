"""Regional ``torch.compile`` for fine-tuning: each decoder layer's MLP and RMS norms.

Under bf16 autocast on CPU the matmuls of a training step run near the CPU's bf16 limit, and
much of the rest is elementwise work between them: RMS norms (a power, a mean, a product,
casts), the MLP's SiLU and product, each a separate pass over memory in eager PyTorch.
Inductor fuses each region into a few generated loops. Only these regions are compiled: they
are the same code in every layer, so one compilation (with dynamic shapes: every packed
sequence has its own length) serves all layers and lengths, and the attention, whose plan
changes with every sequence (:mod:`spacy_lmrc.llm.attention`), stays eager. Compiling whole
decoder layers instead was slower (graph breaks around the attention). BENCHMARKS.md, "the
MLP and norms compiled", has the measurements.

Compilation is in place (``nn.Module.compile``): parameter names, ``state_dict`` and
``save_pretrained`` are unchanged. On CPU inductor needs a C++ compiler;
:func:`compiler_available` tells whether one is found.
"""

from __future__ import annotations

from typing import Any


def compiler_available(device: Any) -> bool:
    """Whether ``torch.compile``'s default backend can generate code for ``device``: a C++
    compiler on CPU (inductor's search: ``$CXX``, g++, clang++), CUDA with Triton on GPUs."""
    import torch

    if getattr(device, "type", device) == "cuda":
        from torch.utils._triton import has_triton

        return torch.cuda.is_available() and has_triton()
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception:  # inductor raises its own InvalidCxxCompiler, or an OSError
        return False
    return True


def compile_mlp_and_norms(model: Any) -> int:
    """Compile, in place and with dynamic shapes, every submodule of ``model`` named ``mlp``
    and every RMS norm (a class whose name ends in ``RMSNorm``); return how many.

    Llama-family models (SmolLM2, Llama, Mistral, Qwen2) name their layers' feed-forward
    blocks ``mlp``; a peft model's LoRA layers inside them are compiled with them.
    """
    compiled = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "mlp" or type(module).__name__.endswith("RMSNorm"):
            module.compile(dynamic=True)
            compiled += 1
    return compiled
