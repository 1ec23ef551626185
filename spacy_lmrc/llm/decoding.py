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

With a threshold τ (``RelationRequest.min_probability``) a query is decoded by *branches*: its
greedy answer, decoded as without a threshold, and branches searching the trie of first
names. In a first name a branch forks at every token whose path probability (the product of
the renormalised probabilities of its tokens) is still at least τ, and records the name it
stands on when that name's probability (path times stopping after it) is at least τ. A
prefix's probability bounds that of every name under it, so this finds exactly the names
with P >= τ. Each branch has its own tokens in the tree (several hang under one query); the
open branches of every query advance in the same forward calls, as extra rows of logits
rather than extra calls, and a branch whose name cannot go on stops without one.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import exp, inf, log
from typing import Any

from .constraints import AnswerSpace, DecodeState
from .requests import Answer
from .sequences import ROOT, EncodedRequest, TokenTree

#: one query of a call: (request index, query index)
Owner = tuple[int, int]
#: the queries a group decodes: (request index, its query indices) per request
Group = list[tuple[int, range]]


@dataclass
class QueryDecoding:
    """One query's answer in the making.

    greedy: the state of its greedy answer, always decoded to its end.
    log_threshold: log of the request's ``min_probability``; None: the greedy answer only.
    found: first names whose log-probability reached the threshold, by name.
    """

    space: AnswerSpace
    log_threshold: float | None
    greedy: DecodeState
    found: dict[str, float] = field(default_factory=dict)

    def record(self, closed: DecodeState) -> None:
        """Keep the first name of ``closed`` (a branch ended right after it) if probable enough."""
        name, logprob = closed.names[0], closed.scores[0]
        if logprob >= self.log_threshold and logprob > self.found.get(name, -inf):
            self.found[name] = logprob

    def answer(self) -> Answer:
        """The greedy answer as decoded; with a threshold, merged with the names found (each
        once, at its highest probability), best first."""
        greedy = list(zip(self.greedy.names, self.greedy.scores))
        if self.log_threshold is None:
            return [(name, exp(score)) for name, score in greedy]
        best = dict(self.found)
        for name, score in greedy:
            best[name] = max(score, best.get(name, -inf))
        ranked = sorted(best.items(), key=lambda item: -item[1])
        return [(name, exp(score)) for name, score in ranked]


@dataclass
class Branch:
    """An open path of a query's answer: its state, and its last token in the tree (whose
    logits choose the next one). The greedy branch holds the query's greedy state."""

    query: QueryDecoding
    state: DecodeState
    tip: int

    @property
    def greedy(self) -> bool:
        return self.state is self.query.greedy


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

    def decode(self, encoded: EncodedRequest, spaces: Sequence[AnswerSpace],
               min_probability: float | None = None) -> list[Answer]:
        """One answer per query of one request: its relation names with their probabilities."""
        return self.decode_many([encoded], [spaces], [min_probability])[0]

    def decode_many(self, requests: Sequence[EncodedRequest],
                    spaces: Sequence[Sequence[AnswerSpace]],
                    min_probabilities: Sequence[float | None] | None = None
                    ) -> list[list[Answer]]:
        """One answer per query of every request, in order; ``spaces[i][j]`` constrains query
        ``j`` of request ``i``. Consecutive short requests are decoded together.

        ``min_probabilities[i]`` (default: all None) is request ``i``'s threshold τ: None
        decodes greedily; a value also answers every first name with P >= τ (see the module
        docstring). A query then has at most ceil(1/τ) open branches at a time (the paths of
        open branches are disjoint events, and all but the greedy one have P >= τ), so the
        extra work is bounded by that many rows per forward call, and the number of calls
        by the longer of the greedy answer and the longest name.
        """
        import torch

        if len(spaces) != len(requests):
            raise ValueError(f"{len(spaces)} answer-space lists for {len(requests)} requests")
        if min_probabilities is None:
            min_probabilities = [None] * len(requests)
        if len(min_probabilities) != len(requests):
            raise ValueError(f"{len(min_probabilities)} thresholds for {len(requests)} requests")
        if any(tau is not None and not 0.0 < tau <= 1.0 for tau in min_probabilities):
            raise ValueError(f"thresholds must be None or in (0, 1]: {list(min_probabilities)}")
        log_thresholds = [None if tau is None else log(tau) for tau in min_probabilities]
        for encoded, request_spaces in zip(requests, spaces):
            if len(request_spaces) != len(encoded.query_ids):
                raise ValueError(f"{len(request_spaces)} answer spaces for "
                                 f"{len(encoded.query_ids)} queries")
        answers: list[list[Answer]] = [[[] for _ in encoded.query_ids] for encoded in requests]
        with torch.inference_mode():
            for group in self.groups(requests):
                decoded = self._decode_group(requests, spaces, log_thresholds, group)
                for (i, j), answer in decoded.items():
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
                      spaces: Sequence[Sequence[AnswerSpace]],
                      log_thresholds: Sequence[float | None], group: Group
                      ) -> dict[Owner, Answer]:
        """Answers to the queries of ``group``: root from the cache, the requests' remaining
        prefixes and queries as one tree, then the answer steps of all branches together."""
        prefixes = [requests[index].prefix_ids for index, _ in group]
        root_len = common_prefix_length(prefixes)
        cache = self._root_cache(list(prefixes[0][:root_len]))
        tree = TokenTree(root_len)
        branches: list[Branch] = []
        queries: dict[Owner, QueryDecoding] = {}
        for index, members in group:
            encoded = requests[index]
            # token sequences are a trie: equal tokens under the same parent are the same
            # computation, whichever request they belong to
            start = tree.add(ROOT, encoded.prefix_ids[root_len:], share=True)
            for j in members:
                space = spaces[index][j]
                query = queries[index, j] = QueryDecoding(space, log_thresholds[index],
                                                          space.start())
                tip = tree.add(start, encoded.query_ids[j], share=True)
                branches.append(Branch(query, query.greedy, tip))
        first = 0
        while branches:
            logits = self._forward_tree(tree, first, cache, [branch.tip for branch in branches])
            feed = [fed for row, branch in enumerate(branches)
                    for fed in self._step(branch, logits[row])]
            first = len(tree)
            for branch, tokens in feed:
                branch.tip = tree.add(branch.tip, tokens)
            branches = [branch for branch, _ in feed]
        self._truncate(cache, root_len)
        return {owner: query.answer() for owner, query in queries.items()}

    def _forward_tree(self, tree: TokenTree, first: int, cache: Any, keep: list[int]) -> Any:
        """Feed the tree's nodes from ``first`` on; logits at the nodes ``keep``."""
        nodes = range(first, len(tree))
        mask = tree.mask(nodes, self.model.dtype, self.model.device)
        return self._forward([tree.ids[node] for node in nodes], tree.positions(nodes), mask,
                             cache, [node - first for node in keep])

    @classmethod
    def _step(cls, branch: Branch, logits: Any) -> list[tuple[Branch, list[int]]]:
        """Move ``branch`` on by its row of ``logits``: in a first name with a threshold, record
        the name it stands on and fork its probable continuations; the greedy branch takes its
        best allowed token, then the tokens it is forced to take. Returns the open branches
        with the tokens to feed them."""
        import torch

        query, state = branch.query, branch.state
        space = query.space
        allowed = space.allowed(state)
        logprobs = torch.log_softmax(logits[allowed].float(), dim=-1)
        best = int(torch.argmax(logprobs))
        stops = [i for i, token in enumerate(allowed)
                 if token in (space.end_id, space.separator_id)]
        stop = float(torch.logsumexp(logprobs[stops], dim=0)) if stops else None
        forks = []
        if query.log_threshold is not None and state.decoded == 0:
            taken = allowed[best] if branch.greedy else None
            forks = cls._explore(branch, dict(zip(allowed, logprobs.tolist())), stop, taken)
        if not branch.greedy:  # its continuations are its forks
            return forks
        space.advance(state, allowed[best], float(logprobs[best]), stop)
        tokens = [allowed[best]] + cls._forced(space, state)
        return forks if state.done else [(branch, tokens), *forks]

    @classmethod
    def _explore(cls, branch: Branch, logprobs: dict[int, float], stop: float | None,
                 taken: int | None) -> list[tuple[Branch, list[int]]]:
        """Record the first name ``branch`` stands on (``stop``: log-probability of ending it)
        if probable enough, and fork every continuation but ``taken`` (the greedy token) whose
        path probability stays above the threshold; return the forks still open."""
        query, state = branch.query, branch.state
        space = query.space
        if stop is not None:
            closed = state.copy()
            space.advance(closed, space.end_id, stop, stop)
            query.record(closed)
        forks = []
        for token, logprob in logprobs.items():
            if (token not in state.node.children or token == taken
                    or state.logprob + logprob < query.log_threshold):
                continue
            fork = Branch(query, state.copy(), branch.tip)
            space.advance(fork.state, token, logprob)
            tokens = [token] + cls._forced(space, fork.state)
            if not fork.state.done and not fork.state.node.children:
                space.advance(fork.state, space.end_id, 0.0)  # nothing but stopping is allowed
            if fork.state.done:
                query.record(fork.state)
            else:
                forks.append((fork, tokens))
        return forks

    @staticmethod
    def _forced(space: AnswerSpace, state: DecodeState) -> list[int]:
        """Take the tokens ``state`` is forced to (the only one allowed) with probability 1."""
        tokens = []
        while not state.done and len(allowed := space.allowed(state)) == 1:
            space.advance(state, allowed[0], 0.0)
            tokens.append(allowed[0])
        return tokens
