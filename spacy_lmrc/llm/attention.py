"""Attention for packed training sequences that computes only the scores a token can see.

A packed training sequence (:mod:`spacy_lmrc.llm.sequences`) is a document's text as a causal
prefix, then a tree of pair queries and answers whose tokens see the prefix and their own
ancestors. Every token sees only tokens before it (a tree node is added after its parent),
and in a :class:`~spacy_lmrc.llm.sequences.PackedBatch` only tokens of its own sequence: the
dense mask is lower-triangular and block-diagonal. SDPA given that mask still computes all
L x L scores (CPU flash attention skips nothing for a mask, and for ``is_causal`` only whole
512-key blocks, so splitting off the prefix as ``is_causal`` skips little at a 600-token
prefix). :func:`blocked_attention` gives each block of :data:`BLOCK_ROWS` query rows only the
keys from its sequence's start to the block's last row, with the same slice of the same mask:
the same attention over about half the scores of one sequence, and over a fraction of a
batch of sentences.

The attention function is registered with transformers' ``AttentionInterface`` under
:data:`PACKED_SDPA`; :func:`use_packed_attention` switches a model to it. A forward call opts
in by passing ``packed_layout=PackedLayout.of(seq)`` beside the dense 4D ``attention_mask``
(transformers forwards unknown keyword arguments to the attention function); a call without
it, or with a KV cache, runs transformers' own SDPA attention unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sequences import PackedBatch, PackedSequence

#: the attention implementation's name in transformers' AttentionInterface
PACKED_SDPA = "lmrc_packed_sdpa"

#: query rows per SDPA call: fewer rows compute fewer masked scores, but each call costs a
#: kernel launch and 128 rows or fewer make CPU flash attention use smaller, slower tiles
BLOCK_ROWS = 256


@dataclass(frozen=True)
class PackedLayout:
    """The lengths of the packed sequences laid end to end in one forward call.

    Every token of a sequence may see only tokens of the same sequence at or before its own
    position; which of those it sees is the attention mask's business.
    """

    lengths: tuple[int, ...]

    @classmethod
    def of(cls, seq: PackedSequence | PackedBatch) -> PackedLayout:
        """The layout of a packed sequence or of a concatenation of them."""
        sequences = seq.sequences if isinstance(seq, PackedBatch) else [seq]
        return cls(tuple(len(s) for s in sequences))

    def __len__(self) -> int:
        return sum(self.lengths)

    def check(self, query: Any, key: Any, mask: Any) -> None:
        """Raise ValueError unless ``query`` and ``key`` hold exactly this layout's tokens (no
        KV cache) and ``mask`` is the 4D mask over them."""
        length = len(self)
        if query.shape[2] != length or key.shape[2] != length:
            raise ValueError(
                f"packed_layout covers {length} tokens ({len(self.lengths)} sequences) but the "
                f"attention got {query.shape[2]} queries over {key.shape[2]} keys: pass "
                "packed_layout only to a forward call over exactly its tokens, without a cache")
        if mask is None or mask.dim() != 4 or tuple(mask.shape[-2:]) != (length, length):
            shape = None if mask is None else tuple(mask.shape)
            raise ValueError(
                f"packed_layout needs the dense 4D attention_mask of its {length} tokens, "
                f"(batch or 1, 1, {length}, {length}); got {shape}")


def blocked_attention(query: Any, key: Any, value: Any, mask: Any, lengths: tuple[int, ...], *,
                      block: int = BLOCK_ROWS, scaling: float | None = None,
                      dropout: float = 0.0) -> Any:
    """Masked attention of packed sequences, computing only the scores of earlier tokens.

    ``query`` is (batch, heads, tokens, dim), ``key`` and ``value`` (batch, kv_heads, tokens,
    dim) with grouped heads, ``mask`` the additive or bool mask (..., tokens, tokens) of
    sequences of ``lengths`` laid end to end, in which no token sees a later one or another
    sequence's. Returns (batch, tokens, heads, dim), as SDPA with the whole mask would.
    """
    import torch
    import torch.nn.functional as F

    device = query.device.type
    if torch.is_autocast_enabled(device):  # cast once, not each block's keys again
        dtype = torch.get_autocast_dtype(device)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    groups = query.shape[1] // key.shape[1]
    # CPU flash attention reads grouped key heads in place; elsewhere SDPA may only do that
    # without a mask, so the key and value heads are repeated as transformers does
    gqa = groups > 1 and device == "cpu"
    if groups > 1 and not gqa:
        key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    outputs = []
    start = 0
    for length in lengths:
        end = start + length
        for first in range(start, end, block):
            last = min(first + block, end)
            out = F.scaled_dot_product_attention(
                query[:, :, first:last], key[:, :, start:last], value[:, :, start:last],
                attn_mask=mask[..., first:last, start:last], dropout_p=dropout, scale=scaling,
                enable_gqa=gqa)
            outputs.append(out.transpose(1, 2))
        start = end
    return torch.cat(outputs, dim=1)


def packed_sdpa_attention(module: Any, query: Any, key: Any, value: Any,
                          attention_mask: Any, dropout: float = 0.0,
                          scaling: float | None = None,
                          packed_layout: PackedLayout | None = None,
                          **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention function signature: :func:`blocked_attention` where the call
    passes a ``packed_layout``, transformers' SDPA attention otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise ValueError(f"{PACKED_SDPA} attention has no softcap or position bias: run "
                         "this model without packed_layout")
    packed_layout.check(query, key, attention_mask)
    return blocked_attention(query, key, value, attention_mask, packed_layout.lengths,
                             block=BLOCK_ROWS, scaling=scaling, dropout=dropout), None


def register_packed_attention() -> str:
    """Register :func:`packed_sdpa_attention` (and SDPA's mask builder for the calls that
    fall back) under :data:`PACKED_SDPA`; return that name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def use_packed_attention(model: Any) -> bool:
    """Switch ``model`` (a transformers model, or a peft model around one) from SDPA to
    :data:`PACKED_SDPA`; return whether it was switched.

    Models on another attention implementation (eager, flash attention), or without
    transformers' attention interface, are left as they are.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if (getattr(base.config, "_attn_implementation", None) != "sdpa"
            or not getattr(base, "_supports_attention_backend", False)):
        return False
    base.set_attn_implementation(register_packed_attention())
    return True
