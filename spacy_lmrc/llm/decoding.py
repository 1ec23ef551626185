"""Constrained decoding of many pair queries over one shared prefix.

The prefix is encoded once; its KV cache is reused by every query. Queries go through the
model in chunks of ``query_batch_size``, packed side by side in one sequence with a block
mask (:func:`~spacy_lmrc.llm.sequences.visibility_mask`), which gives each query's first answer
distribution in one forward call. Then all unfinished answers advance together, one token per
pair per forward call, each token seeing the prefix, its own query and its own answer so far.
Tokens are chosen greedily among those the answer space allows
(:class:`~spacy_lmrc.llm.constraints.AnswerSpace`); a name's score is the product of its
tokens' probabilities and of stopping after it, renormalised over the allowed tokens, i.e. the
model's probability of that relation given that the answer is valid. Steps where only one
token is allowed and the answer ends need no forward call.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from math import exp
from typing import Any

from .constraints import AnswerSpace, DecodeState
from .requests import Answer
from .sequences import PREFIX, EncodedRequest, visibility_mask


class PackedDecoder:
    """Answers an encoded request's queries with ``model`` (a causal LM), constrained."""

    def __init__(self, model: Any, query_batch_size: int = 64) -> None:
        self.model = model
        self.query_batch_size = query_batch_size
        self.forward_calls = 0
        # transformers 5 names the KV cache argument ``cache`` (``past_key_values`` before)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _forward(self, ids: list[int], positions: list[int], mask: Any, cache: Any,
                 keep: list[int]) -> Any:
        """Logits at ``keep`` (indices into ``ids``); ``cache`` grows by ``ids``."""
        import torch

        device = self.model.device
        self.forward_calls += 1
        return self.model(
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([positions], device=device),
            attention_mask=mask, use_cache=True,
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
            **{self._cache_arg: cache},
        ).logits[0]

    @staticmethod
    def _truncate(cache: Any, length: int) -> None:
        """Drop every cached token after the first ``length`` (a negative crop removes)."""
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)

    def decode(self, encoded: EncodedRequest, spaces: Sequence[AnswerSpace]) -> list[Answer]:
        """One answer per query: its relation names with their probabilities."""
        import torch

        if len(spaces) != len(encoded.query_ids):
            raise ValueError(f"{len(spaces)} answer spaces for {len(encoded.query_ids)} queries")
        answers: list[Answer] = []
        if not encoded.query_ids:
            return answers
        from transformers import DynamicCache

        with torch.inference_mode():
            prefix_len = len(encoded.prefix_ids)
            cache = DynamicCache(config=self.model.config)
            self._forward(encoded.prefix_ids, list(range(prefix_len)), None, cache,
                          [prefix_len - 1])
            for start in range(0, len(encoded.query_ids), self.query_batch_size):
                chunk = range(start, min(start + self.query_batch_size, len(encoded.query_ids)))
                self._truncate(cache, prefix_len)
                answers += self._decode_chunk(encoded, chunk, spaces, cache)
        return answers

    def _decode_chunk(self, encoded: EncodedRequest, chunk: range,
                      spaces: Sequence[AnswerSpace], cache: Any) -> list[Answer]:
        prefix_len = len(encoded.prefix_ids)
        dtype = self.model.dtype
        ids, positions, owners, last = [], [], [], []
        for owner in chunk:
            query = encoded.query_ids[owner]
            ids += query
            positions += range(prefix_len, prefix_len + len(query))
            owners += [owner] * len(query)
            last.append(len(ids) - 1)
        key_owners = [PREFIX] * prefix_len + owners
        mask = visibility_mask(owners, range(prefix_len, len(key_owners)), key_owners, dtype,
                               self.model.device)
        logits = self._forward(ids, positions, mask, cache, last)
        states = {owner: spaces[owner].start() for owner in chunk}
        next_position = {owner: prefix_len + len(encoded.query_ids[owner]) for owner in chunk}
        rows = {owner: row for row, owner in enumerate(chunk)}
        while True:
            feed = self._choose(states, spaces, logits, rows)
            if not feed:
                break
            step_owners = [owner for owner, _ in feed]
            step_positions = [next_position[owner] for owner in step_owners]
            first = len(key_owners)
            key_owners += step_owners
            mask = visibility_mask(step_owners, range(first, len(key_owners)), key_owners,
                                   dtype, self.model.device)
            logits = self._forward([token for _, token in feed], step_positions, mask, cache,
                                   list(range(len(feed))))
            rows = {owner: row for row, owner in enumerate(step_owners)}
            for owner in step_owners:
                next_position[owner] += 1
        return [[(name, exp(score)) for name, score in zip(states[o].names, states[o].scores)]
                for o in chunk]

    @staticmethod
    def _choose(states: dict[int, DecodeState], spaces: Sequence[AnswerSpace], logits: Any,
                rows: dict[int, int]) -> list[tuple[int, int]]:
        """Advance every pair that has logits by its best allowed token; return those to feed.

        A chosen token is fed (appended to the cache for the next step) unless the answer
        ended, or can only end now (then the end is taken without a forward call).
        """
        import torch

        feed = []
        for owner, row in rows.items():
            state, space = states[owner], spaces[owner]
            allowed = space.allowed(state)
            logprobs = torch.log_softmax(logits[row, allowed].float(), dim=-1)
            best = int(torch.argmax(logprobs))
            stops = [i for i, token in enumerate(allowed)
                     if token in (space.end_id, space.separator_id)]
            stop = float(torch.logsumexp(logprobs[stops], dim=0)) if stops else None
            space.advance(state, allowed[best], float(logprobs[best]), stop)
            if not state.done and space.allowed(state) == [space.end_id]:
                space.advance(state, space.end_id, 0.0)
            if not state.done:
                feed.append((owner, allowed[best]))
        return feed
