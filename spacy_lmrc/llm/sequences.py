"""Text to tokens for the LLM stage, shared by fine-tuning and inference.

A request becomes a prefix and one token block per pair query. Every block attends to the
prefix and to itself only, and its positions continue right after the prefix, so each pair is
read exactly as if it were alone after the prefix. Training packs prefix + every (query,
answer) block of a document into one sequence (:func:`pack_training_sequence`); inference
encodes the prefix once and answers the queries as one batch over its KV cache
(:mod:`spacy_lmrc.llm.decoding`). Both build their attention masks with
:func:`visibility_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .formats import PromptFormat
from .requests import RelationRequest

#: owner of prefix tokens: visible to every block
PREFIX = -1


@dataclass
class EncodedRequest:
    """Token ids of a request: the shared prefix and one list per query."""

    prefix_ids: list[int]
    query_ids: list[list[int]]

    @property
    def prompt_tokens(self) -> int:
        """Tokens the model reads: the prefix once, then every query."""
        return len(self.prefix_ids) + sum(len(ids) for ids in self.query_ids)


def encode_request(tokenizer: Any, fmt: PromptFormat, request: RelationRequest) -> EncodedRequest:
    """Tokenize ``request`` in ``fmt`` (prefix with special tokens, queries without)."""
    prefix_ids = list(tokenizer(fmt.prefix(request), add_special_tokens=True)["input_ids"])
    texts = [fmt.query(query) for query in request.queries]
    query_ids = [list(ids) for ids in
                 tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return EncodedRequest(prefix_ids, query_ids)


def visibility_mask(query_owners: Sequence[int], query_positions: Sequence[int],
                    key_owners: Sequence[int], dtype: Any, device: Any = None) -> Any:
    """Additive 4D attention mask (1, 1, queries, keys) for blocks over a shared prefix.

    ``query_positions[i]`` is the index of query token i among the keys (queries are the last
    keys). Token i sees key j when j <= its index and j is a prefix token or in its own block.
    """
    import torch

    q_owner = torch.tensor(query_owners, device=device).unsqueeze(1)
    q_index = torch.tensor(query_positions, device=device).unsqueeze(1)
    k_owner = torch.tensor(key_owners, device=device).unsqueeze(0)
    k_index = torch.arange(len(key_owners), device=device).unsqueeze(0)
    visible = (k_index <= q_index) & ((k_owner == PREFIX) | (k_owner == q_owner))
    mask = torch.zeros(visible.shape, dtype=dtype, device=device)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass
class PackedSequence:
    """One training sequence: ids, positions, block owners, and answer targets.

    ``target_index[i]`` is the position whose output predicts ``target_ids[i]`` (the token
    before it), so only answer tokens are scored.
    """

    input_ids: list[int]
    position_ids: list[int]
    owners: list[int]
    target_index: list[int]
    target_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_training_sequence(encoded: EncodedRequest,
                           answer_ids: Sequence[Sequence[int]]) -> PackedSequence:
    """Prefix once, then each query followed by its answer, as one sequence."""
    if len(answer_ids) != len(encoded.query_ids):
        raise ValueError(f"{len(answer_ids)} answers for {len(encoded.query_ids)} queries")
    prefix_len = len(encoded.prefix_ids)
    seq = PackedSequence(list(encoded.prefix_ids), list(range(prefix_len)),
                         [PREFIX] * prefix_len, [], [])
    for owner, (query, answer) in enumerate(zip(encoded.query_ids, answer_ids)):
        block = list(query) + list(answer)
        start = len(seq.input_ids)
        seq.input_ids += block
        seq.position_ids += range(prefix_len, prefix_len + len(block))
        seq.owners += [owner] * len(block)
        first_answer = start + len(query)
        seq.target_index += range(first_answer - 1, first_answer - 1 + len(answer))
        seq.target_ids += answer
    return seq
