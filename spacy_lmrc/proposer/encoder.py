"""Encoding documents longer than the encoder's window: overlapping windows, stitched back.

Generalises ATLOP's ``long_seq``: a sequence that fits is encoded in one pass; a longer one is
cut into overlapping windows (the first keeps the sequence's own start tokens and gets the end
tokens appended, the last gets the start tokens prepended, middle windows get both). Up to
``2 * window - start - end`` tokens this is exactly ATLOP's two windows; beyond that, evenly
spaced middle windows are added. Hidden states are averaged where windows overlap; last-layer
attention maps are summed in place and each row renormalised to a distribution over the real
tokens (the special tokens added to a window are dropped, as ATLOP does).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .features import SpecialTokens

#: the attention implementation that computes every layer with SDPA except the last one, whose
#: attention map the localized context pooling needs (see :func:`load_encoder`)
LAST_LAYER_MAPS = "lmrc_sdpa_last_layer_maps"
#: the attribute marking the attention modules whose maps are kept
_KEEP_MAPS = "lmrc_keep_attention_maps"

# model types whose position ids start at padding_idx + 1 (max_position_embeddings counts them)
_POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                          "data2vec-text", "mpnet", "roberta-prelayernorm", "luke", "ibert"}


def _attention_keeping_last_maps(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                                 value: torch.Tensor, attention_mask: torch.Tensor | None,
                                 dropout: float = 0.0, scaling: float | None = None,
                                 **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA for the layers whose maps nobody reads; the explicit softmax for the marked ones.

    Returns the attention map before dropout (what the pooling should see).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("output_attentions", None)
    if not getattr(module, _KEEP_MAPS, False):
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    scaling = scaling if scaling is not None else query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    maps = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    dropped = nn.functional.dropout(maps, p=dropout, training=module.training)
    output = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return output, maps


def _register_attention() -> None:
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(LAST_LAYER_MAPS, _attention_keeping_last_maps)
    AttentionMaskInterface.register(LAST_LAYER_MAPS, sdpa_mask)


def _last_attention_modules(encoder: nn.Module) -> list[nn.Module]:
    """The modules of the last layer that call the attention interface (``layer_idx`` set)."""
    last = getattr(encoder.config, "num_hidden_layers", 0) - 1
    return [m for m in encoder.modules() if getattr(m, "layer_idx", None) == last]


def load_encoder(name_or_path: str, attention_dropout: float | None = None) -> nn.Module:
    """A Hugging Face encoder whose last layer returns its attention maps.

    Models on the attention interface of transformers (BERT, RoBERTa and most others) run every
    layer but the last with SDPA, so only the maps the pooling reads are materialised (1.5x
    faster inference on 2 CPU cores, BENCHMARKS.md); others load with eager attention.
    ``attention_dropout`` replaces the encoder's attention-probability dropout (None: keep it);
    0 saves the random masks over every ``[heads, L, L]`` map, a quarter of a CPU training step.
    The encoder is loaded whole, pooler included, so checkpoints load without missing or
    unexpected weights; the pooler is unused and frozen (see :class:`RCPModel`).
    """
    from transformers import AutoModel

    _register_attention()
    try:
        encoder = AutoModel.from_pretrained(name_or_path, attn_implementation=LAST_LAYER_MAPS)
    except (ValueError, NotImplementedError):
        encoder = None
    keep = _last_attention_modules(encoder) if encoder is not None else []
    if not keep:
        encoder = AutoModel.from_pretrained(name_or_path, attn_implementation="eager")
    for module in keep:
        setattr(module, _KEEP_MAPS, True)
    if attention_dropout is not None:
        _set_attention_dropout(encoder, attention_dropout)
    return encoder


def _set_attention_dropout(encoder: nn.Module, p: float) -> None:
    """Set the dropout applied to the attention probabilities of every layer."""
    n_layers = getattr(encoder.config, "num_hidden_layers", 0)
    for module in encoder.modules():
        if getattr(module, "layer_idx", None) is None or not 0 <= module.layer_idx < n_layers:
            continue
        for child in module.children():
            if isinstance(child, nn.Dropout):
                child.p = p


def encoder_window(config, tokenizer=None) -> int:
    """The longest sequence the encoder accepts (RoBERTa's 514 positions give 512)."""
    size = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", None) in _POSITION_OFFSET_TYPES:
        size -= (getattr(config, "pad_token_id", None) or 1) + 1
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 100_000:
        size = min(size, limit)
    return size


def plan_windows(length: int, window: int, n_start: int, n_end: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans of the sequence covered by each window (one span when it fits)."""
    if length <= window:
        return [(0, length)]
    inner = window - n_start - n_end
    if inner < 2:
        raise ValueError(f"window {window} leaves no room for tokens between the special tokens")
    first, last = window - n_end, window - n_start
    if length <= first + last:
        return [(0, first), (length - last, length)]
    # middle windows of ``inner`` tokens at evenly spaced starts, consecutive ones overlapping
    k = math.ceil((length - inner) / (inner - 1)) + 1
    step = (length - inner) / (k - 1)
    middle = [(math.floor(i * step), math.floor(i * step) + inner) for i in range(1, k - 1)]
    return [(0, first)] + middle + [(length - last, length)]


#: one window of the batch: (sequence, span start, span end, offset of the span in the window)
Owner = tuple[int, int, int, int]


def encode_windowed(
    encoder: torch.nn.Module,
    input_ids: torch.Tensor,
    lengths: list[int],
    special: SpecialTokens,
    window: int,
    pad_token_id: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Last hidden states ``[L, d]`` and last-layer attention ``[H, L, L]`` of each sequence.

    ``input_ids`` is ``[B, Lmax]`` (special tokens included, right-padded); ``lengths`` gives
    each sequence's real length. All windows of the batch go through the encoder in one pass.
    """
    batch, mask, owners, plans = window_batch(input_ids, lengths, special, window,
                                              pad_token_id)
    out = encoder(input_ids=batch, attention_mask=mask, output_attentions=True)
    return stitch_windows(out.last_hidden_state, out.attentions[-1], lengths, plans, owners)


def window_batch(
    input_ids: torch.Tensor, lengths: list[int], special: SpecialTokens, window: int,
    pad_token_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[Owner], list[list[tuple[int, int]]]]:
    """Every window of every sequence as one padded batch: ids, attention mask, which span
    of which sequence each window holds, and each sequence's :func:`plan_windows`."""
    device = input_ids.device
    start = torch.tensor(special.start, dtype=input_ids.dtype, device=device)
    end = torch.tensor(special.end, dtype=input_ids.dtype, device=device)
    pieces: list[torch.Tensor] = []
    owners: list[Owner] = []
    plans = []
    for i, length in enumerate(lengths):
        spans = plan_windows(length, window, len(special.start), len(special.end))
        plans.append(spans)
        for a, b in spans:
            parts = []
            offset = 0
            if a > 0:
                parts.append(start)
                offset = len(special.start)
            parts.append(input_ids[i, a:b])
            if b < length:
                parts.append(end)
            pieces.append(torch.cat(parts))
            owners.append((i, a, b, offset))
    width = max(len(p) for p in pieces)
    batch = torch.full((len(pieces), width), pad_token_id, dtype=input_ids.dtype, device=device)
    mask = torch.zeros((len(pieces), width), dtype=torch.long, device=device)
    for j, piece in enumerate(pieces):
        batch[j, :len(piece)] = piece
        mask[j, :len(piece)] = 1
    return batch, mask, owners, plans


def stitch_windows(
    hidden_all: torch.Tensor, att_all: torch.Tensor, lengths: list[int],
    plans: list[list[tuple[int, int]]], owners: list[Owner],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each sequence's hidden states (averaged over its windows) and attention (summed, rows
    renormalised over the real tokens) from the encoder output of :func:`window_batch`."""
    hiddens: list[torch.Tensor] = []
    attentions: list[torch.Tensor] = []
    j = 0
    for i, length in enumerate(lengths):
        spans = plans[i]
        if len(spans) == 1:
            hiddens.append(hidden_all[j, :length])
            attentions.append(att_all[j, :, :length, :length])
            j += 1
            continue
        dim, heads = hidden_all.size(-1), att_all.size(1)
        hidden = hidden_all.new_zeros((length, dim))
        count = hidden_all.new_zeros((length, 1))
        att = att_all.new_zeros((heads, length, length))
        for _ in spans:
            _, a, b, off = owners[j]
            n = b - a
            hidden[a:b] = hidden[a:b] + hidden_all[j, off:off + n]
            count[a:b] = count[a:b] + 1
            att[:, a:b, a:b] = att[:, a:b, a:b] + att_all[j, :, off:off + n, off:off + n]
            j += 1
        hiddens.append(hidden / count)
        attentions.append(att / (att.sum(-1, keepdim=True) + 1e-10))
    return hiddens, attentions
