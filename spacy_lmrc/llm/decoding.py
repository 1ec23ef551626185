"""Constrained decoding of many pair queries over one shared prefix.

The prefix is encoded once; its KV cache is reused by every query. Queries go through the
model in chunks of ``query_batch_size``, laid out as a token tree
(:class:`~spacy_lmrc.llm.sequences.TokenTree`: queries that start alike share those tokens),
which gives each query's first answer distribution in one forward call. Then all unfinished
answers advance together, each token seeing the prefix, its own query and its own answer so
far. Tokens are chosen greedily among
those the answer space allows (:class:`~spacy_lmrc.llm.constraints.AnswerSpace`); a name's
score is the product of its tokens' probabilities and of stopping after it, renormalised over
the allowed tokens, i.e. the model's probability of that relation given that the answer is
valid. Only choices need logits: where the trie allows a single token (the rest of a name
once its first tokens tell it apart, the end after a name that cannot be continued), the token
is taken with probability 1 without a forward call, and a pair's forced tokens are fed
together, so a forward call is spent only where some pair has a choice to make.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from math import exp
from typing import Any

from .constraints import AnswerSpace, DecodeState
from .requests import Answer
from .sequences import ROOT, EncodedRequest, TokenTree


class PackedDecoder:
    """Answers an encoded request's queries with ``model`` (a causal LM), constrained."""

    def __init__(self, model: Any, query_batch_size: int = 64) -> None:
        self.model = model
        self.query_batch_size = query_batch_size
        self.forward_calls = 0
        self.fed_tokens = 0  # tokens the model has read: prefixes, query trees, answers
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
        self.fed_tokens += len(ids)
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
        tree = TokenTree(len(encoded.prefix_ids))
        tips = {owner: tree.add(ROOT, encoded.query_ids[owner], share=True) for owner in chunk}
        logits = self._forward_tree(tree, 0, cache, [tips[owner] for owner in chunk])
        rows = {owner: row for row, owner in enumerate(chunk)}
        states = {owner: spaces[owner].start() for owner in chunk}
        while True:
            feed = self._choose(states, spaces, logits, rows)
            if not feed:
                break
            first = len(tree)
            for owner, tokens in feed:
                tips[owner] = tree.add(tips[owner], tokens)
            logits = self._forward_tree(tree, first, cache, [tips[owner] for owner, _ in feed])
            rows = {owner: row for row, (owner, _) in enumerate(feed)}
        return [[(name, exp(score)) for name, score in zip(states[o].names, states[o].scores)]
                for o in chunk]

    def _forward_tree(self, tree: TokenTree, first: int, cache: Any, keep: list[int]) -> Any:
        """Feed the tree's nodes from ``first`` on; logits at the nodes ``keep``."""
        nodes = range(first, len(tree))
        mask = tree.mask(nodes, self.model.dtype, self.model.device)
        return self._forward([tree.ids[node] for node in nodes], tree.positions(nodes), mask,
                             cache, [node - first for node in keep])

    @staticmethod
    def _choose(states: dict[int, DecodeState], spaces: Sequence[AnswerSpace], logits: Any,
                rows: dict[int, int]) -> list[tuple[int, list[int]]]:
        """Advance every pair that has logits by its best allowed token, then through the
        tokens it is forced to take; return each unfinished pair's tokens to feed.
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
            tokens = [allowed[best]]
            while not state.done and len(allowed := space.allowed(state)) == 1:
                space.advance(state, allowed[0], 0.0)
                tokens.append(allowed[0])
            if not state.done:
                feed.append((owner, tokens))
        return feed
