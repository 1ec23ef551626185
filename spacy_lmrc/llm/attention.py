"""Attention for packed training sequences that computes only the scores a token can see.

A packed training sequence (:mod:`spacy_lmrc.llm.sequences`) is a document's text as a causal
prefix, then a tree of pair queries and answers whose tokens see the prefix and their own
ancestors only; a :class:`~spacy_lmrc.llm.sequences.PackedBatch` lays several such sequences
end to end, none seeing another. SDPA given the dense mask computes all L x L scores, nearly
all of them masked out: CPU flash attention skips nothing for a mask, and for ``is_causal``
only whole 512-key blocks, so even a causal prefix of a few hundred tokens costs its square.

An :class:`AttentionPlan` splits each sequence's prefix and tree into blocks of
:data:`BLOCK_ROWS` query rows and lists the keys that some row of a block sees: the prefix up
to the block's last row for the prefix's blocks (a slice), the prefix plus the block's own
rows and their ancestors for the tree's (gathered). :func:`planned_attention` attends once
per block over those keys only, with the same slice of the same mask: the scores it leaves
out are the masked ones, so outputs and gradients are those of SDPA over the dense mask, from
42% of its scores for a 946-token document (357 text tokens, 589 in the tree) and a small
fraction for a batch of sentences. Each block is computed by PyTorch's fused SDPA, or in bf16
on CPU by two batched matmuls around an fp32 softmax (:func:`block_kernel`), which CPUs
without AMX run faster than their flash attention kernel.

The attention function is registered with transformers' ``AttentionInterface`` under
:data:`PACKED_SDPA`; :func:`use_packed_attention` switches a model to it. A forward call opts
in by passing ``attention_plan=AttentionPlan.of(seq)`` beside the dense 4D
``attention_mask`` (transformers forwards unknown keyword arguments to the attention
function); a call without a plan, a padded batch or decoding with a KV cache, runs
transformers' own SDPA attention unchanged. Fine-tuning does both by default
(``finetune.attention = "planned"``; :func:`uses_packed_attention` tells a switched model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sequences import ROOT, PackedBatch, PackedSequence

#: the attention implementation's name in transformers' AttentionInterface
PACKED_SDPA = "lmrc_packed_sdpa"

#: query rows per SDPA call: fewer rows see fewer keys they do not need, but each call costs a
#: kernel launch and very short blocks make CPU flash attention's tiles inefficient
BLOCK_ROWS = 128

#: the most memory per layer that matmul blocks may keep for the backward pass: they keep every
#: score twice (the fp32 softmax and its bf16 copy, 6 bytes) where fused SDPA keeps one number per
#: row; a forward call whose plan would keep more (the LLM-only baseline's 4,096-token sequences
#: of every pair) runs its blocks through SDPA
MATMUL_BLOCKS_MAX_BYTES = 64 * 2**20


@dataclass(frozen=True)
class AttentionBlock:
    """Query rows ``start:end`` of a forward call and the keys any of them sees: a slice of
    the sequence, or the positions to gather (a LongTensor) where they are not contiguous."""

    start: int
    end: int
    keys: slice | Any

    @property
    def n_keys(self) -> int:
        keys = self.keys
        return keys.stop - keys.start if isinstance(keys, slice) else int(keys.numel())


@dataclass(frozen=True)
class AttentionPlan:
    """Which keys each block of query rows of one packed forward call attends to, and the
    kernel that computes a block (a name in :data:`BLOCK_KERNELS`; None: :func:`block_kernel`
    picks by the queries' device and dtype and the scores kept)."""

    length: int
    blocks: tuple[AttentionBlock, ...]
    kernel: str | None = None

    def __post_init__(self) -> None:
        if self.kernel is not None and self.kernel not in BLOCK_KERNELS:
            raise ValueError(f"unknown attention block kernel {self.kernel!r}: expected one "
                             f"of {sorted(BLOCK_KERNELS)} or None (picked by block_kernel)")

    @classmethod
    def of(cls, seq: PackedSequence | PackedBatch, block: int = BLOCK_ROWS,
           device: Any = None, kernel: str | None = None) -> AttentionPlan:
        """The plan of a packed sequence (or a concatenation of them): each sequence's prefix
        and tree in blocks of ``block`` query rows; gather indices on ``device``."""
        import torch

        sequences = seq.sequences if isinstance(seq, PackedBatch) else [seq]
        blocks = []
        offset = 0
        for sequence in sequences:
            prefix, tree = len(sequence.prefix_ids), sequence.tree
            for start in range(0, prefix, block):  # causal: the prefix up to the last row
                end = min(start + block, prefix)
                blocks.append(AttentionBlock(offset + start, offset + end,
                                             slice(offset, offset + end)))
            for start in range(0, len(tree), block):  # the prefix, the rows, their ancestors
                end = min(start + block, len(tree))
                nodes = _ancestors(tree.parents, range(start, end))
                if nodes[-1] == len(nodes) - 1:  # every tree token up to the block's last
                    keys: slice | Any = slice(offset, offset + prefix + len(nodes))
                else:
                    keys = offset + torch.cat([torch.arange(prefix),
                                               prefix + torch.tensor(nodes)]).to(device)
                blocks.append(AttentionBlock(offset + prefix + start, offset + prefix + end,
                                             keys))
            offset += len(sequence)
        return cls(offset, tuple(blocks), kernel)

    @property
    def scores(self) -> int:
        """Query-key scores per head that the plan computes (SDPA over the dense mask:
        ``length`` squared)."""
        return sum((b.end - b.start) * b.n_keys for b in self.blocks)

    def check(self, query: Any, key: Any, mask: Any) -> None:
        """Raise ValueError unless ``query`` and ``key`` are one row of exactly this plan's
        tokens (no KV cache) and ``mask`` is the 4D mask over them."""
        if query.shape[0] != 1:
            raise ValueError(
                f"an attention_plan describes one packed row, but the batch has "
                f"{query.shape[0]} rows: concatenate the sequences (concat_sequences) instead")
        if query.shape[2] != self.length or key.shape[2] != self.length:
            raise ValueError(
                f"attention_plan covers {self.length} tokens but the attention got "
                f"{query.shape[2]} queries over {key.shape[2]} keys: pass attention_plan only "
                "to a forward call over exactly its tokens, without a cache")
        if mask is None or mask.dim() != 4 or tuple(mask.shape[-2:]) != (self.length,) * 2:
            shape = None if mask is None else tuple(mask.shape)
            raise ValueError(
                f"attention_plan needs the dense 4D attention_mask of its {self.length} "
                f"tokens, (1, 1, {self.length}, {self.length}); got {shape}")


def _ancestors(parents: list[int], nodes: range) -> list[int]:
    """``nodes`` and all their ancestors in a token tree (``parents``), in order."""
    seen: set[int] = set()
    for node in nodes:
        while node != ROOT and node not in seen:
            seen.add(node)
            node = parents[node]
    return sorted(seen)


def planned_attention(query: Any, key: Any, value: Any, mask: Any, plan: AttentionPlan,
                      scaling: float | None = None, dropout: float = 0.0) -> Any:
    """SDPA over ``mask`` computing only the keys ``plan`` lists for each block of rows.

    ``query`` is (1, heads, tokens, dim), ``key`` and ``value`` (1, kv_heads, tokens, dim)
    with grouped heads, ``mask`` the additive or bool mask (1, 1, tokens, tokens) the plan was
    made for. Returns (1, tokens, heads, dim), as transformers' attention functions do. Each
    block is computed by the plan's kernel: ``"sdpa"`` (PyTorch's fused attention) or
    ``"matmul"`` (two batched matmuls around an fp32 softmax).
    """
    import torch

    device = query.device.type
    if torch.is_autocast_enabled(device):  # cast once, not each block's keys again
        dtype = torch.get_autocast_dtype(device)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    kernel = plan.kernel or block_kernel(query, plan)
    groups = query.shape[1] // key.shape[1]
    if kernel == "sdpa" and groups > 1 and device != "cpu":
        # CPU flash attention reads grouped key heads in place; elsewhere SDPA may do that only
        # without a mask, so the key and value heads are repeated (once), as transformers does
        key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    attend = BLOCK_KERNELS[kernel]
    outputs = [attend(query, key, value, mask, block, scaling, dropout) for block in plan.blocks]
    return torch.cat(outputs, dim=1)


def block_kernel(query: Any, plan: AttentionPlan) -> str:
    """How to compute ``plan``'s blocks for ``query`` (1, heads, tokens, dim): ``"matmul"``
    in bf16 on CPU where the scores it keeps fit :data:`MATMUL_BLOCKS_MAX_BYTES`, else
    ``"sdpa"``.

    CPU flash attention has no bf16 tile kernels without AMX and its backward is slow on
    128-row blocks: in bf16 two oneDNN batched matmuls and an fp32 softmax compute a block's
    forward and backward in 0.66-0.90 of its time, and RC training runs 1.24-1.36x faster
    (BENCHMARKS.md, "seventh session"). With AMX they tie with SDPA blocks and beat SDPA over
    the dense mask (424 against 363 tokens/s; "ninth session"). In fp32, and on GPUs, the fused
    kernel is the faster.
    """
    import torch

    low_precision = query.dtype in (torch.bfloat16, torch.float16)
    if query.device.type != "cpu" or not low_precision:
        return "sdpa"
    kept_bytes = plan.scores * query.shape[1] * 6
    return "matmul" if kept_bytes <= MATMUL_BLOCKS_MAX_BYTES else "sdpa"


def _block_inputs(key: Any, value: Any, mask: Any,
                  block: AttentionBlock) -> tuple[Any, Any, Any]:
    """The keys, values and mask rows one block attends over."""
    rows, keys = slice(block.start, block.end), block.keys
    if isinstance(keys, slice):
        return key[:, :, keys], value[:, :, keys], mask[..., rows, keys]
    return (key.index_select(2, keys), value.index_select(2, keys),
            mask[..., rows, :].index_select(-1, keys))


def _sdpa_block(query: Any, key: Any, value: Any, mask: Any, block: AttentionBlock,
                scaling: float, dropout: float) -> Any:
    """One block through PyTorch's scaled_dot_product_attention, grouped key heads read in
    place: (1, rows, heads, dim)."""
    import torch.nn.functional as F

    gqa = key.shape[1] != query.shape[1]
    k, v, m = _block_inputs(key, value, mask, block)
    out = F.scaled_dot_product_attention(query[:, :, block.start:block.end], k, v, attn_mask=m,
                                         dropout_p=dropout, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2)


def _matmul_block(query: Any, key: Any, value: Any, mask: Any, block: AttentionBlock,
                  scaling: float, dropout: float) -> Any:
    """One block as ``softmax(q k^T * scaling + mask) v``, the softmax in fp32, each key
    head's query heads in one batched matmul: (1, rows, heads, dim)."""
    import torch
    import torch.nn.functional as F

    k, v, m = _block_inputs(key, value, mask, block)
    heads, kv_heads, dim = query.shape[1], k.shape[1], query.shape[-1]
    rows = block.end - block.start
    # query head h reads key head h // groups (transformers' repeat_kv): a key head's query
    # heads are adjacent, so its rows stack into one (groups * rows, dim) matrix
    q = query[0, :, block.start:block.end].reshape(kv_heads, -1, dim) * scaling
    scores = torch.bmm(q, k[0].transpose(1, 2)).view(kv_heads, -1, rows, k.shape[2])
    if m.dtype == torch.bool:
        scores = scores.masked_fill(~m[0], torch.finfo(scores.dtype).min)
    else:
        scores = scores + m[0]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    if dropout:
        weights = F.dropout(weights, p=dropout)
    out = torch.bmm(weights.view(kv_heads, -1, k.shape[2]), v[0])
    return out.view(heads, rows, dim).transpose(0, 1).unsqueeze(0)


#: how :func:`planned_attention` computes one block, by name
BLOCK_KERNELS = {"sdpa": _sdpa_block, "matmul": _matmul_block}


def packed_sdpa_attention(module: Any, query: Any, key: Any, value: Any,
                          attention_mask: Any, dropout: float = 0.0,
                          scaling: float | None = None,
                          attention_plan: AttentionPlan | None = None,
                          **kwargs: Any) -> tuple[Any, None]:
    """An attention function for transformers' AttentionInterface: :func:`planned_attention`
    where the forward call passes an ``attention_plan``, transformers' SDPA otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise ValueError(f"{PACKED_SDPA} attention has no softcap or position bias: run "
                         "this model without attention_plan")
    attention_plan.check(query, key, attention_mask)
    return planned_attention(query, key, value, attention_mask, attention_plan,
                             scaling=scaling, dropout=dropout), None


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


def uses_packed_attention(model: Any) -> bool:
    """Whether ``model`` (or the model a peft model wraps) runs :data:`PACKED_SDPA`, so its
    packed forward calls should pass an ``attention_plan``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)  # unwrapped from DistributedDataParallel
    return getattr(getattr(base, "config", None), "_attn_implementation", None) == PACKED_SDPA
