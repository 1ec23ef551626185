"""Constrained decoding of many pair queries over shared prefixes, several requests at a time.

Work comes in *groups* that share one forward pass. A group is either several whole requests
(short ones: sentences, small documents) or one chunk of ``query_batch_size`` queries of a
request with more queries than that. Within a group:

* the token prefix common to every request of the group (the instruction, for sentences; the
  whole prefix for a group of one request) is the *root*: it is encoded causally and its KV
  cache is kept by the decoder, so the next group (or the next call) reuses the part it shares
  and encodes only the rest;
* what follows the root is one :class:`~spacy_lmrc.llm.sequences.TokenTree`: each request's
  remaining prefix is a chain under the root, its queries hang under the chain's last token
  (requests see only themselves: the visibility is block-diagonal, the tree's ancestors), and
  token sequences that start alike share those tokens. One forward call encodes the whole tree
  and gives every query's first answer distribution;
* then all unfinished answers of the group advance together, each token seeing the root, its
  own request's prefix, its own query and its own answer so far, at the positions it would
  have if its request were alone.

So every query is read exactly as if it were alone after its request's prefix, while the
instruction is encoded once and short requests share forward calls. Tokens are chosen greedily
among those the answer space allows (:class:`~spacy_lmrc.llm.constraints.AnswerSpace`); a
name's score is the product of its tokens' probabilities and of stopping after it, renormalised
over the allowed tokens, i.e. the model's probability of that relation given that the answer is
valid. Only choices need logits: where the trie allows a single token (the rest of a name once
its first tokens tell it apart, the end after a name that cannot be continued), the token is
taken with probability 1 without a forward call, and a pair's forced tokens are fed together,
so a forward call is spent only where some pair has a choice to make.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from math import exp
from typing import Any

from .constraints import AnswerSpace, DecodeState
from .requests import Answer
from .sequences import ROOT, EncodedRequest, TokenTree

#: one query of a call: (request index, query index)
Owner = tuple[int, int]
#: the queries a group decodes: (request index, its query indices) per request
Group = list[tuple[int, range]]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens every one of ``sequences`` has in common."""
    if not sequences:
        return 0
    length = min(len(seq) for seq in sequences)
    first = sequences[0]
    for seq in sequences[1:]:
        for i in range(length):
            if seq[i] != first[i]:
                length = i
                break
    return length


class PackedDecoder:
    """Answers encoded requests' queries with ``model`` (a causal LM), constrained.

    query_batch_size: most queries decoded in one group (a request with more is decoded in
        chunks of this size over its cached prefix).
    batch_tokens: most tokens (root + tree before answers) a group of several requests may
        hold; a request that is longer on its own still forms its own group. It bounds the
        dense attention mask and the attention work spent on the masked-out blocks.

    The decoder keeps the KV cache of the last group's root between calls (see
    :meth:`reset`), so requests that start with the same instruction never encode it again.
    """

    def __init__(self, model: Any, query_batch_size: int = 64, batch_tokens: int = 512) -> None:
        self.model = model
        self.query_batch_size = query_batch_size
        self.batch_tokens = batch_tokens
        self.forward_calls = 0
        self.fed_tokens = 0  # tokens the model has read: roots, query trees, answers
        # transformers 5 names the KV cache argument ``cache`` (``past_key_values`` before)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cache: Any = None
        self._root_ids: list[int] = []

    def reset(self) -> None:
        """Forget the cached root (needed when the model's weights change)."""
        self._cache = None
        self._root_ids = []

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

    def _root_cache(self, root: list[int]) -> Any:
        """The KV cache holding exactly ``root``: the cached root's common start is kept, the
        rest of ``root`` encoded causally after it."""
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache(config=self.model.config)
            self._root_ids = []
        keep = common_prefix_length([self._root_ids, root])
        self._truncate(self._cache, keep)
        if keep < len(root):
            self._forward(root[keep:], list(range(keep, len(root))), None, self._cache,
                          [len(root) - keep - 1])
        self._root_ids = list(root)
        return self._cache

    def decode(self, encoded: EncodedRequest, spaces: Sequence[AnswerSpace]) -> list[Answer]:
        """One answer per query of one request: its relation names with their probabilities."""
        return self.decode_many([encoded], [spaces])[0]

    def decode_many(self, requests: Sequence[EncodedRequest],
                    spaces: Sequence[Sequence[AnswerSpace]]) -> list[list[Answer]]:
        """One answer per query of every request, in order; ``spaces[i][j]`` constrains query
        ``j`` of request ``i``. Consecutive short requests are decoded together."""
        import torch

        if len(spaces) != len(requests):
            raise ValueError(f"{len(spaces)} answer-space lists for {len(requests)} requests")
        for encoded, request_spaces in zip(requests, spaces):
            if len(request_spaces) != len(encoded.query_ids):
                raise ValueError(f"{len(request_spaces)} answer spaces for "
                                 f"{len(encoded.query_ids)} queries")
        answers: list[list[Answer]] = [[[] for _ in encoded.query_ids] for encoded in requests]
        with torch.inference_mode():
            for group in self.groups(requests):
                for (i, j), answer in self._decode_group(requests, spaces, group).items():
                    answers[i][j] = answer
        return answers

    def groups(self, requests: Sequence[EncodedRequest]) -> list[Group]:
        """Consecutive requests packed into groups of at most :attr:`query_batch_size` queries
        and :attr:`batch_tokens` tokens (the common prefix counted once); a request with more
        queries than a group holds is decoded alone, in chunks."""
        groups: list[Group] = []
        current: Group = []
        common: list[int] = []
        queries = prefix_tokens = query_tokens = 0
        for index, encoded in enumerate(requests):
            count = len(encoded.query_ids)
            if not count:
                continue
            if count > self.query_batch_size:
                if current:
                    groups.append(current)
                    current = []
                groups += [[(index, range(start, min(start + self.query_batch_size, count)))]
                           for start in range(0, count, self.query_batch_size)]
                continue
            own = sum(len(ids) for ids in encoded.query_ids)
            shared = (common_prefix_length([common, encoded.prefix_ids]) if current
                      else len(encoded.prefix_ids))
            members = len(current) + 1
            tokens = (shared + prefix_tokens + len(encoded.prefix_ids) - members * shared
                      + query_tokens + own)
            if current and (queries + count > self.query_batch_size
                            or tokens > self.batch_tokens):
                groups.append(current)
                current = []
            if not current:
                common, queries, prefix_tokens, query_tokens = list(encoded.prefix_ids), 0, 0, 0
            else:
                common = common[:shared]
            current.append((index, range(count)))
            queries += count
            prefix_tokens += len(encoded.prefix_ids)
            query_tokens += own
        if current:
            groups.append(current)
        return groups

    def _decode_group(self, requests: Sequence[EncodedRequest],
                      spaces: Sequence[Sequence[AnswerSpace]], group: Group
                      ) -> dict[Owner, Answer]:
        """Answers to the queries of ``group``: root from the cache, the requests' remaining
        prefixes and queries as one tree, then the answer steps of all queries together."""
        prefixes = [requests[index].prefix_ids for index, _ in group]
        root_len = common_prefix_length(prefixes)
        cache = self._root_cache(list(prefixes[0][:root_len]))
        tree = TokenTree(root_len)
        tips: dict[Owner, int] = {}
        for index, queries in group:
            encoded = requests[index]
            # token sequences are a trie: equal tokens under the same parent are the same
            # computation, whichever request they belong to
            start = tree.add(ROOT, encoded.prefix_ids[root_len:], share=True)
            for j in queries:
                tips[index, j] = tree.add(start, encoded.query_ids[j], share=True)
        owners = list(tips)
        group_spaces = {owner: spaces[owner[0]][owner[1]] for owner in owners}
        states = {owner: group_spaces[owner].start() for owner in owners}
        logits = self._forward_tree(tree, 0, cache, [tips[owner] for owner in owners])
        rows = {owner: row for row, owner in enumerate(owners)}
        while True:
            feed = self._choose(states, group_spaces, logits, rows)
            if not feed:
                break
            first = len(tree)
            for owner, tokens in feed:
                tips[owner] = tree.add(tips[owner], tokens)
            logits = self._forward_tree(tree, first, cache, [tips[owner] for owner, _ in feed])
            rows = {owner: row for row, (owner, _) in enumerate(feed)}
        self._truncate(cache, root_len)
        return {owner: [(name, exp(score)) for name, score in
                        zip(states[owner].names, states[owner].scores)] for owner in owners}

    def _forward_tree(self, tree: TokenTree, first: int, cache: Any, keep: list[int]) -> Any:
        """Feed the tree's nodes from ``first`` on; logits at the nodes ``keep``."""
        nodes = range(first, len(tree))
        mask = tree.mask(nodes, self.model.dtype, self.model.device)
        return self._forward([tree.ids[node] for node in nodes], tree.positions(nodes), mask,
                             cache, [node - first for node in keep])

    @staticmethod
    def _choose(states: Mapping[Owner, DecodeState], spaces: Mapping[Owner, AnswerSpace],
                logits: Any, rows: Mapping[Owner, int]) -> list[tuple[Owner, list[int]]]:
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
