"""Text to tokens for the LLM stage, shared by fine-tuning and inference.

A request becomes a prefix and one token list per pair query. What follows the prefix is laid
out as a :class:`TokenTree`: queries that start with the same tokens (pairs with the same head
entity) share them, each answer hangs under its query's last token, and every token attends
to the prefix and to its own ancestors only, at the position it would have right after the
prefix. So each pair is read exactly as if it were alone after the prefix, and shared query
tokens are computed once. Training packs prefix + tree of a document into one sequence
(:func:`pack_training_sequence`), or into several that each repeat the prefix when its pairs
do not fit one (:func:`pack_training_sequences`); inference encodes the prefix once and grows
a tree over its KV cache (:mod:`spacy_lmrc.llm.decoding`). Both take their attention masks
from the tree. Short packed sequences (one sentence each) are concatenated for training
(:func:`concat_sequences`): block-diagonal visibility, positions restarting per sequence, one
forward call for a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .formats import PromptFormat
from .requests import RelationRequest


@dataclass
class EncodedRequest:
    """Token ids of a request: the shared prefix and one list per query."""

    prefix_ids: list[int]
    query_ids: list[list[int]]

    @property
    def prompt_tokens(self) -> int:
        """Tokens the model reads: the prefix once, then every query."""
        return len(self.prefix_ids) + sum(len(ids) for ids in self.query_ids)

    @property
    def longest_path(self) -> int:
        """Tokens before the longest query's answer: the prefix and that query (what the
        model's context must hold, besides the answer)."""
        return len(self.prefix_ids) + max((len(ids) for ids in self.query_ids), default=0)


@dataclass(frozen=True)
class ContextFit:
    """How a request fits a model's context, in the model's tokens.

    context: the most tokens the model reads at once (its position limit, or a configured
        bound).
    needed: what the request needs of it: its prefix, its longest query and room for the
        answer (a text-only model's longest prompt).
    text: the tokens of the request's text (the document) within ``needed``.
    """

    context: int
    needed: int
    text: int

    @property
    def fits(self) -> bool:
        return self.needed <= self.context

    @property
    def text_budget(self) -> int:
        """The most tokens the request's text may take for the rest of it to still fit."""
        return self.context - (self.needed - self.text)


def encode_request(tokenizer: Any, fmt: PromptFormat, request: RelationRequest) -> EncodedRequest:
    """Tokenize ``request`` in ``fmt`` (prefix with special tokens, queries without)."""
    prefix_ids = list(tokenizer(fmt.prefix(request), add_special_tokens=True)["input_ids"])
    texts = [fmt.query(query) for query in request.queries]
    query_ids = [list(ids) for ids in
                 tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return EncodedRequest(prefix_ids, query_ids)


def text_token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """The length in tokens of each of ``texts`` (no special tokens): what a piece of a
    document takes in a prompt."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def measure_request(tokenizer: Any, fmt: PromptFormat, request: RelationRequest, context: int,
                    answer_room: int) -> tuple[ContextFit, EncodedRequest]:
    """How ``request`` in ``fmt`` fits a ``context`` of that many tokens, and its encoding.

    What it needs is its prefix, its longest query and ``answer_room`` tokens for the answer;
    every backend that prompts with prefix + query measures so (one rule for a local model and
    a server serving the same weights). The encoding is returned for a caller that sends the
    request it measured without tokenizing it again.
    """
    encoded = encode_request(tokenizer, fmt, request)
    text = text_token_counts(tokenizer, [request.text])[0]
    fit = ContextFit(context=context, needed=encoded.longest_path + answer_room, text=text)
    return fit, encoded


#: parent of a tree token that follows the prefix directly
ROOT = -1


class TokenTree:
    """Tokens after a shared prefix of ``prefix_len`` tokens, as a tree.

    A token sees the whole prefix, its ancestors and itself; its position is ``prefix_len`` +
    its depth. Tokens are stored in the order they are added (the order they enter the model
    and its KV cache); a parent is always added before its children.
    """

    def __init__(self, prefix_len: int) -> None:
        self.prefix_len = prefix_len
        self.ids: list[int] = []
        self.parents: list[int] = []
        self.depths: list[int] = []
        self._paths: list[list[int]] = []  # ancestors and self, root first
        self._shared: dict[tuple[int, int], int] = {}  # (parent, token) -> node, for merging

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, parent: int, tokens: Sequence[int], share: bool = False) -> int:
        """Append ``tokens`` as a chain under ``parent``; return the last node.

        With ``share``, a token that ``parent`` already has as a shared child is reused (queries
        that start alike); answers are never shared, each belongs to its own pair.
        """
        node = parent
        for token in tokens:
            key = (node, token)
            if share and key in self._shared:
                node = self._shared[key]
                continue
            new = len(self.ids)
            self.ids.append(token)
            self.parents.append(node)
            self.depths.append(self.depths[node] + 1 if node != ROOT else 0)
            self._paths.append((self._paths[node] if node != ROOT else []) + [new])
            if share:
                self._shared[key] = new
            node = new
        return node

    def positions(self, nodes: Sequence[int]) -> list[int]:
        """Position ids of ``nodes``."""
        return [self.prefix_len + self.depths[node] for node in nodes]

    def mask(self, nodes: Sequence[int], dtype: Any, device: Any = None) -> Any:
        """Additive 4D attention mask (1, 1, len(nodes), prefix + tree) for the rows ``nodes``
        over the prefix and every tree token added so far."""
        return additive_mask(self.visible(nodes, device), dtype)

    def visible(self, nodes: Sequence[int], device: Any = None) -> Any:
        """Which keys (prefix + tree) each of ``nodes`` sees, as a bool matrix."""
        import torch

        rows = [row for row, node in enumerate(nodes) for _ in self._paths[node]]
        cols = [self.prefix_len + key for node in nodes for key in self._paths[node]]
        visible = torch.zeros(len(nodes), self.prefix_len + len(self.ids), dtype=torch.bool,
                              device=device)
        visible[:, : self.prefix_len] = True
        visible[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
        return visible


def additive_mask(visible: Any, dtype: Any) -> Any:
    """``visible`` (queries x keys, bool) as an additive 4D mask in ``dtype``."""
    import torch

    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass
class PackedSequence:
    """One training sequence: prefix + token tree, and the answer targets.

    ``target_index[i]`` is the position in the sequence whose output predicts
    ``target_ids[i]`` (the token before it), so only answer tokens are scored.
    """

    prefix_ids: list[int]
    tree: TokenTree
    target_index: list[int]
    target_ids: list[int]

    def __len__(self) -> int:
        return len(self.prefix_ids) + len(self.tree)

    @property
    def input_ids(self) -> list[int]:
        return self.prefix_ids + self.tree.ids

    @property
    def position_ids(self) -> list[int]:
        return list(range(len(self.prefix_ids))) + self.tree.positions(range(len(self.tree)))

    @property
    def target_weights(self) -> list[float]:
        """Each answer token's share of the loss: the mean over the sequence's targets."""
        return [1.0 / max(1, len(self.target_ids))] * len(self.target_ids)

    def visible(self, device: Any = None) -> Any:
        """Which tokens each token sees (bool, len x len): the prefix causal, tree tokens as in
        the tree."""
        import torch

        prefix_len = len(self.prefix_ids)
        visible = torch.zeros(len(self), len(self), dtype=torch.bool, device=device)
        visible[:prefix_len, :prefix_len] = torch.ones(
            prefix_len, prefix_len, dtype=torch.bool, device=device).tril()
        visible[prefix_len:] = self.tree.visible(range(len(self.tree)), device)
        return visible

    def mask(self, dtype: Any, device: Any = None) -> Any:
        """The whole sequence's additive 4D mask (see :meth:`visible`)."""
        return additive_mask(self.visible(device), dtype)


@dataclass
class PackedBatch:
    """Several packed sequences laid end to end, trained in one forward call.

    Visibility is block-diagonal: each sequence sees only its own tokens (inside its block,
    exactly its own mask) and its positions restart at 0, so every sequence is read as if it
    were alone. Short sequences (one sentence each) would otherwise cost one small forward call
    apiece. The loss weights give each sequence the same share, so the batch's loss is the mean
    of the per-sequence losses, as separate calls would give.
    """

    sequences: list[PackedSequence]

    def __len__(self) -> int:
        return sum(len(seq) for seq in self.sequences)

    @property
    def input_ids(self) -> list[int]:
        return [token for seq in self.sequences for token in seq.input_ids]

    @property
    def position_ids(self) -> list[int]:
        return [position for seq in self.sequences for position in seq.position_ids]

    @property
    def target_index(self) -> list[int]:
        indices, offset = [], 0
        for seq in self.sequences:
            indices += [offset + i for i in seq.target_index]
            offset += len(seq)
        return indices

    @property
    def target_ids(self) -> list[int]:
        return [token for seq in self.sequences for token in seq.target_ids]

    @property
    def target_weights(self) -> list[float]:
        share = 1.0 / len(self.sequences)
        return [w * share for seq in self.sequences for w in seq.target_weights]

    def visible(self, device: Any = None) -> Any:
        """Block-diagonal visibility: each sequence's own matrix on the diagonal, else False."""
        import torch

        visible = torch.zeros(len(self), len(self), dtype=torch.bool, device=device)
        offset = 0
        for seq in self.sequences:
            end = offset + len(seq)
            visible[offset:end, offset:end] = seq.visible(device)
            offset = end
        return visible

    def mask(self, dtype: Any, device: Any = None) -> Any:
        """The additive 4D mask of :meth:`visible`."""
        return additive_mask(self.visible(device), dtype)


def concat_sequences(sequences: Sequence[PackedSequence]) -> PackedBatch:
    """``sequences`` as one block-diagonal training sequence (see :class:`PackedBatch`)."""
    if not sequences:
        raise ValueError("nothing to concatenate: give at least one packed sequence")
    return PackedBatch(list(sequences))


def group_sequences(sequences: Sequence[PackedSequence], max_tokens: int) -> list[PackedBatch]:
    """``sequences`` in order, concatenated into batches of at most ``max_tokens`` tokens each
    (a longer sequence goes alone), so the dense mask of one forward call stays bounded."""
    groups: list[list[PackedSequence]] = []
    size = 0
    for seq in sequences:
        if groups and size + len(seq) <= max_tokens:
            groups[-1].append(seq)
            size += len(seq)
        else:
            groups.append([seq])
            size = len(seq)
    return [PackedBatch(group) for group in groups]


def pack_training_sequence(encoded: EncodedRequest,
                           answer_ids: Sequence[Sequence[int]]) -> PackedSequence:
    """Prefix once, then every query (shared where queries start alike) with its answer."""
    if len(answer_ids) != len(encoded.query_ids):
        raise ValueError(f"{len(answer_ids)} answers for {len(encoded.query_ids)} queries")
    prefix_len = len(encoded.prefix_ids)
    seq = PackedSequence(list(encoded.prefix_ids), TokenTree(prefix_len), [], [])
    for query, answer in zip(encoded.query_ids, answer_ids):
        predictor = seq.tree.add(ROOT, query, share=True)
        for i, token in enumerate(answer):
            seq.target_index.append(prefix_len + predictor)
            seq.target_ids.append(token)
            if i + 1 < len(answer):  # the last token predicts nothing: it is not read
                predictor = seq.tree.add(predictor, [token])
    return seq


def pack_training_sequences(encoded: EncodedRequest, answer_ids: Sequence[Sequence[int]],
                            max_length: int | None) -> list[PackedSequence]:
    """The request as few packed sequences of at most ``max_length`` tokens as it takes: each
    holds the whole prefix and the next queries (in order) with their answers that fit.

    This is the LMRC paper's n(n-1)/k inputs per document with k as large as the length
    allows, so the LLM-only baseline can train on every pair of a document. Lengths are exact
    (a query's tokens shared with an earlier query of its sequence are not counted twice); a
    sequence whose prefix and first query alone exceed ``max_length`` holds that query only
    (the caller skips it as too long).
    """
    if len(answer_ids) != len(encoded.query_ids):
        raise ValueError(f"{len(answer_ids)} answers for {len(encoded.query_ids)} queries")
    if max_length is None:
        return [pack_training_sequence(encoded, answer_ids)]
    chunks: list[list[int]] = [[]]
    seen: set[tuple[int, ...]] = set()  # query prefixes already in the current sequence
    used = len(encoded.prefix_ids)
    for i, (query, answer) in enumerate(zip(encoded.query_ids, answer_ids)):
        shared = next((k for k in range(len(query), 0, -1) if tuple(query[:k]) in seen), 0)
        cost = len(query) - shared + max(0, len(answer) - 1)
        if chunks[-1] and used + cost > max_length:  # full: the next sequence starts
            chunks.append([])
            seen.clear()
            used = len(encoded.prefix_ids)
            cost = len(query) + max(0, len(answer) - 1)
        chunks[-1].append(i)
        seen.update(tuple(query[:k]) for k in range(1, len(query) + 1))
        used += cost
    return [pack_training_sequence(
        EncodedRequest(encoded.prefix_ids, [encoded.query_ids[i] for i in chunk]),
        [answer_ids[i] for i in chunk]) for chunk in chunks]
