"""The answer space as a token trie: decoding can only produce valid answers.

An answer is one or more relation names, each written as the tokens of ``" " + name``, joined
by the separator token and closed by the end token (the tokenizer's EOS). A name that means
"no relation" (``none_answer``) can only stand alone. At every step :meth:`AnswerSpace.allowed`
gives the tokens that keep the answer valid, so an out-of-set or unparsable answer cannot be
decoded, whatever the model; :meth:`AnswerSpace.encode` gives the training targets with the
same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class TrieNode:
    """Children by token id; ``name`` is set where a relation name ends."""

    children: dict[int, TrieNode] = field(default_factory=dict)
    name: str | None = None


@dataclass
class DecodeState:
    """Where one pair's answer stands: the trie node and the names completed so far."""

    node: TrieNode
    names: list[str] = field(default_factory=list)
    logprob: float = 0.0  # of the name being decoded
    scores: list[float] = field(default_factory=list)
    decoded: int = 0  # names closed so far, repeats included (bounds the answer's length)
    done: bool = False

    def copy(self) -> DecodeState:
        """A state that advances independently of this one: a fork of the answer."""
        return replace(self, names=list(self.names), scores=list(self.scores))


class AnswerSpace:
    """Valid answers over ``names`` for one tokenizer.

    none_answer: a name that ends the answer at once (cannot be combined with others).
    multi_label: whether the separator may join several names.
    max_names: most names in one answer (a bound on decoding steps).
    """

    def __init__(self, tokenizer: Any, names: Sequence[str], *, separator: str = ";",
                 none_answer: str | None = None, multi_label: bool = True,
                 max_names: int = 4) -> None:
        if not names:
            raise ValueError("the answer space is empty: give at least one relation name")
        self.names = list(dict.fromkeys(names))
        self.none_answer = none_answer
        self.multi_label = multi_label
        self.max_names = max_names
        self.end_id = int(tokenizer.eos_token_id)
        separator_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
        if len(separator_ids) != 1:
            raise ValueError(f"the separator {separator!r} must be one token for this tokenizer, "
                             f"not {len(separator_ids)}")
        self.separator_id = int(separator_ids[0])
        encoded = tokenizer([f" {name}" for name in self.names], add_special_tokens=False)
        self.name_ids = {name: list(ids) for name, ids in zip(self.names, encoded["input_ids"])}
        self.root = TrieNode()
        for name, ids in self.name_ids.items():
            if not ids or {ids[0]} & {self.end_id, self.separator_id}:
                raise ValueError(f"relation name {name!r} cannot be told apart from the "
                                 "separator or end token")
            node = self.root
            for token in ids:
                node = node.children.setdefault(token, TrieNode())
            node.name = name

    # training targets ------------------------------------------------------------------

    def encode(self, names: Sequence[str]) -> list[int]:
        """Answer token ids for ``names`` (in order), separator-joined, end token last.

        Only answers the decoder can produce are accepted: names of the space, at most
        ``max_names`` (one without ``multi_label``), the ``none_answer`` alone.
        """
        unknown = [name for name in names if name not in self.name_ids]
        if unknown:
            raise ValueError(f"{unknown} are not in the answer space ({len(self.names)} names)")
        limit = self.max_names if self.multi_label else 1
        if not names or len(names) > limit:
            raise ValueError(f"an answer holds 1 to {limit} names, not {len(names)}")
        if self.none_answer in names and len(names) > 1:
            raise ValueError(f"{self.none_answer!r} cannot be combined with other names")
        ids: list[int] = []
        for i, name in enumerate(names):
            if i:
                ids.append(self.separator_id)
            ids += self.name_ids[name]
        return ids + [self.end_id]

    # decoding ---------------------------------------------------------------------------

    def start(self) -> DecodeState:
        return DecodeState(node=self.root)

    def allowed(self, state: DecodeState) -> list[int]:
        """Token ids that keep ``state`` a prefix of a valid answer."""
        options = list(state.node.children)
        name = state.node.name
        if name is not None:  # a complete name: the answer may end or go on
            options.append(self.end_id)
            can_add = (self.multi_label and name != self.none_answer
                       and state.decoded + 1 < self.max_names)
            if can_add:
                options.append(self.separator_id)
        return options

    def advance(self, state: DecodeState, token: int, logprob: float,
                stop_logprob: float | None = None) -> None:
        """Take ``token`` into ``state``; ``logprob`` is its log-probability among the allowed
        tokens.

        A name's score is the probability of its tokens and of stopping after them
        (``stop_logprob``: end or separator, so ``country`` does not get the mass of
        ``country of origin``); a name after a separator also carries the separator's.
        """
        if token in state.node.children:
            state.node = state.node.children[token]
            state.logprob += logprob
            return
        if state.node.name is None or token not in (self.end_id, self.separator_id):
            raise ValueError(f"token {token} is not allowed here")
        name = state.node.name
        late_none = name == self.none_answer and state.names
        if name not in state.names and not late_none:
            state.names.append(name)
            state.scores.append(state.logprob + (logprob if stop_logprob is None
                                                 else stop_logprob))
        state.decoded += 1
        state.node = self.root
        state.logprob = logprob if token == self.separator_id else 0.0
        state.done = token == self.end_id
