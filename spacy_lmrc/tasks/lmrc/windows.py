"""Documents longer than the LLM's context: each pair asked over the sentences that hold it.

A document whose request (prefix, longest pair query, room for the answer) does not fit the
model's context is neither cut at some token nor refused. Each of its pairs gets an
evidence-style context, the sentences holding its head's and tail's mentions and their
neighbours, and the pairs are grouped into **windows**: sets of sentences that fit the
context, one request per window, so the pairs of a window share one prefix. Every pair is
asked once, in one window; documents that fit are never windowed (their request is unchanged).

Why evidence windows rather than overlapping slices of the document whose answers are merged:

* a pair whose entities are mentioned far apart (one in the first sentence, the other in the
  last) never meets in a slice shorter than the document, but its mention sentences are one
  short context; reading a pair on its evidence sentences, joined as a pseudo document, is
  what evidence-based DocRE does (EIDER, Xie et al. 2022);
* each pair is asked once: no rule to merge several answers (a maximum, a vote) to choose and
  tune, no pair asked in a slice that lacks one of its entities, and the work grows with the
  pairs, not with slices x pairs;
* DocRED's relations rest on one to three sentences in most cases (its evidence annotations),
  and those hold the mentions of the pair's entities.

A pair's context: the nearest sentences holding a head mention and a tail mention (one
sentence where they co-occur; a pair whose nearest sentences alone exceed the budget fits no
window: it is not asked, and it is counted and named in the report), then its other mention
sentences, nearest first, while they fit the text budget. Windows are built best-fit
decreasing: the pairs with the largest contexts first, each joining the window its context
adds the fewest tokens to while the window still fits, else opening one. The room a window has
left then takes the neighbours of its sentences, up to ``neighbours`` either side, nearest
first. A window's text is its sentences in document order, as the document writes them, runs
of consecutive sentences joined by a space.

Neighbours fill room rather than belong to each pair's context because they seldom hold what
a relation rests on and cost windows: on 12 Re-DocRED dev documents end to end (2,440 words,
3,031 tokens, 584 candidate pairs) and a context of 1,024 tokens, this plan asks the pairs in
10 windows, and the window of each gold pair holds 229 of its 231 evidence sentences; with a
neighbour either side of every mention in each pair's context, all 231, but in 22 windows
(2.2 times the prompt tokens).

The budget comes from the backend (:class:`ContextMeter`, e.g.
:class:`~spacy_lmrc.backends.hf.HFBackend`): the model's context less what the request needs
besides its text, and each sentence's length in the model's tokens (plus
:data:`SENTENCE_SLACK`, for the joins). Every window's request is measured again, exactly,
before it is sent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from spacy.tokens import Doc

from ...llm.formats import PromptFormat
from ...llm.requests import RelationRequest
from ...llm.sequences import ContextFit

#: tokens added to each sentence's own length when a window's text is estimated: a sentence
#: may take a token more inside the joined text than alone
SENTENCE_SLACK = 1
#: sentences that fit no window named in a document's report (the count is always whole)
MAX_NAMED_SENTENCES = 10


@runtime_checkable
class ContextMeter(Protocol):
    """A backend that measures requests against its model's context."""

    def context_fit(self, request: RelationRequest,
                    prompt_format: PromptFormat) -> ContextFit | None:
        """How ``request`` fits the context (None: no known limit)."""

    def text_tokens(self, texts: Sequence[str]) -> list[int]:
        """The length of each text in the model's tokens."""


@dataclass(frozen=True)
class Window:
    """Sentences (indices, in document order) and the pairs (indices into the document's
    pairs) asked over them."""

    sentences: tuple[int, ...]
    pairs: tuple[int, ...]


@dataclass
class WindowPlan:
    """A document's windows, and the pairs that fit none (their nearest head and tail
    sentences alone exceed the budget) with those sentences."""

    windows: list[Window]
    unfit: list[int]
    unfit_sentences: list[int]


@dataclass
class WindowedRequests:
    """A document's requests: each asks the pairs of ``pair_indices`` (indices into the
    document's pairs), in order. ``report`` says what was windowed (see
    :func:`window_requests`); None for a document sent whole."""

    requests: list[RelationRequest]
    pair_indices: list[list[int]]
    report: dict[str, Any] | None = None


@runtime_checkable
class WindowingTask(Protocol):
    """A task that can ask a document's pairs over windows of its sentences (the LMRC tasks)."""

    def window_requests(self, doc: Doc, pairs: list[tuple[int, int]], fit: ContextFit,
                        meter: ContextMeter) -> WindowedRequests:
        """``doc``'s requests for ``pairs`` in windows fitting ``fit.context``."""


def _nearest(head: set[int], tail: set[int]) -> tuple[int, ...]:
    """The closest (head sentence, tail sentence), earliest first among equals."""
    _, first, second = min((abs(h - t), min(h, t), max(h, t)) for h in head for t in tail)
    return (first,) if first == second else (first, second)


def pair_context(head: set[int], tail: set[int], costs: Sequence[int],
                 budget: int) -> tuple[int, ...] | None:
    """The sentences a pair must be read over: its nearest head and tail sentences, then its
    other mention sentences, nearest first, while they fit ``budget`` (each costing
    ``costs``); None when the nearest ones alone exceed it."""
    if not head or not tail:
        return None
    core = _nearest(head, tail)
    used = sum(costs[s] for s in core)
    if used > budget:
        return None
    chosen = set(core)
    mentions = sorted((head | tail) - chosen,
                      key=lambda s: (min(abs(s - c) for c in core), s))
    for sentence in mentions:
        if used + costs[sentence] <= budget:
            chosen.add(sentence)
            used += costs[sentence]
    return tuple(sorted(chosen))


def _neighbours(anchors: Sequence[int], width: int, n_sentences: int) -> list[int]:
    """The sentences up to ``width`` either side of ``anchors``, nearest first, then in the
    order of their anchors (the previous sentence before the next)."""
    return [s for step in range(1, width + 1) for anchor in anchors
            for s in (anchor - step, anchor + step) if 0 <= s < n_sentences]


def plan_windows(sentence_tokens: Sequence[int], pair_sentences: Sequence[tuple[set[int],
                 set[int]]], budget: int, neighbours: int = 1) -> WindowPlan:
    """Windows of at most ``budget`` tokens for pairs whose head and tail are mentioned in
    ``pair_sentences`` (sentence indices), with sentences of ``sentence_tokens`` tokens each
    (see the module docstring)."""
    costs = [tokens + SENTENCE_SLACK for tokens in sentence_tokens]
    contexts: dict[int, tuple[int, ...]] = {}
    unfit: list[int] = []
    unfit_sentences: set[int] = set()
    for index, (head, tail) in enumerate(pair_sentences):
        context = pair_context(head, tail, costs, budget)
        if context is None:
            unfit.append(index)
            if head and tail:
                unfit_sentences.update(_nearest(head, tail))
        else:
            contexts[index] = context
    windows: list[tuple[set[int], list[int], int]] = []  # sentences, pairs, tokens
    order = sorted(contexts, key=lambda i: (-sum(costs[s] for s in contexts[i]), contexts[i], i))
    for index in order:
        context = contexts[index]
        best: tuple[int, int] | None = None  # (tokens added, window)
        for number, (sentences, _, used) in enumerate(windows):
            added = sum(costs[s] for s in context if s not in sentences)
            if used + added <= budget and (best is None or added < best[0]):
                best = (added, number)
                if added == 0:
                    break
        if best is None:
            windows.append((set(context), [index], sum(costs[s] for s in context)))
        else:
            sentences, members, used = windows[best[1]]
            sentences.update(context)
            members.append(index)
            windows[best[1]] = (sentences, members, used + best[0])
    for sentences, _, used in windows:  # the room left: the neighbours, nearest first
        for sentence in _neighbours(sorted(sentences), neighbours, len(costs)):
            if sentence not in sentences and used + costs[sentence] <= budget:
                sentences.add(sentence)
                used += costs[sentence]
    planned = sorted((Window(tuple(sorted(sentences)), tuple(sorted(members)))
                      for sentences, members, _ in windows),
                     key=lambda window: (window.sentences, window.pairs))
    return WindowPlan(planned, unfit, sorted(unfit_sentences))


def sentence_spans(doc: Doc) -> list[tuple[int, int]]:
    """The token span of each sentence (the whole Doc as one without sentence boundaries)."""
    if not doc.has_annotation("SENT_START"):
        return [(0, len(doc))]
    return [(sent.start, sent.end) for sent in doc.sents]


def entity_sentences(doc: Doc, spans: Sequence[tuple[int, int]]) -> list[set[int]]:
    """The sentences holding each entity's mentions (by the mention's first token)."""
    starts = [start for start, _ in spans]
    return [{bisect_right(starts, mention["start"]) - 1 for mention in entity["mentions"]}
            for entity in doc._.entities]


def window_text(doc: Doc, spans: Sequence[tuple[int, int]], sentences: Sequence[int]) -> str:
    """The text of ``sentences`` (in order) as ``doc`` writes them, runs of consecutive
    sentences joined by a space."""
    runs: list[list[int]] = []
    for sentence in sentences:
        if runs and sentence == runs[-1][-1] + 1:
            runs[-1].append(sentence)
        else:
            runs.append([sentence])
    return " ".join(doc[spans[run[0]][0]:spans[run[-1]][1]].text for run in runs)


def window_requests(doc: Doc, pairs: Sequence[tuple[int, int]], fit: ContextFit,
                    build: Callable[[list[tuple[int, int]]], RelationRequest],
                    meter: ContextMeter, prompt_format: PromptFormat,
                    neighbours: int = 1) -> WindowedRequests:
    """The requests asking ``pairs`` of ``doc`` (whose whole request does not ``fit``) over
    windows of its sentences: ``build`` makes the request for some of the pairs (the task's,
    on the whole document), whose text is then the window's.

    ``report``: the prompt tokens the whole document needed and the context, the budget
    for a window's text, the document's sentences and pairs, the windows, and the pairs that
    fit no window (``pairs_over_context``: not asked, their answers stay empty) with the
    sentences that were too long for them (``sentences_over_context``, the first
    :data:`MAX_NAMED_SENTENCES`) and why, when the document has no sentence boundaries.
    """
    spans = sentence_spans(doc)
    tokens = meter.text_tokens([" " + doc[start:end].text for start, end in spans])
    mentions = entity_sentences(doc, spans)
    plan = plan_windows(tokens, [(mentions[head], mentions[tail]) for head, tail in pairs],
                        fit.text_budget, neighbours)
    requests, indices, unfit = [], [], list(plan.unfit)
    for window in plan.windows:
        chosen = [pairs[i] for i in window.pairs]
        request = replace(build(chosen), text=window_text(doc, spans, window.sentences))
        measured = meter.context_fit(request, prompt_format)
        if measured is not None and not measured.fits:  # the estimate fell short: not sent
            unfit += window.pairs
            continue
        requests.append(request)
        indices.append(list(window.pairs))
    report: dict[str, Any] = {
        "prompt_tokens": fit.needed, "context": fit.context, "text_budget": fit.text_budget,
        "sentences": len(spans), "pairs": len(pairs), "windows": len(requests),
        "pairs_over_context": len(unfit),
    }
    if unfit and fit.text_budget <= 0:
        report["reason"] = ("the prompt leaves the document's text no room: the instruction, "
                            "examples or a pair query alone fill the context")
    elif unfit:
        report["sentences_over_context"] = plan.unfit_sentences[:MAX_NAMED_SENTENCES]
        if len(spans) == 1:
            report["reason"] = ("the document has no sentence boundaries to window it by: add "
                                "a sentencizer or parser before the relation classifier")
    return WindowedRequests(requests, indices, report)


def describe_windowed(entry: dict[str, Any]) -> str:
    """One line on a windowed document, from the component's report of it (its ``index`` in
    the stream and ``title`` added to :func:`window_requests`'s ``report``)."""
    line = (f"document {entry['index']} ({entry['title']!r}): its prompt needs "
            f"{entry['prompt_tokens']} tokens, over the LLM's context of {entry['context']}, "
            f"so its {entry['pairs']} pairs were asked in {entry['windows']} windows of its "
            f"{entry['sentences']} sentences")
    if entry.get("pairs_over_context"):
        line += f"; {entry['pairs_over_context']} pairs fit no window and were not asked"
        if entry.get("sentences_over_context"):
            line += (f" (sentences {entry['sentences_over_context']} exceed the "
                     f"{entry['text_budget']} tokens left for text)")
        if entry.get("reason"):
            line += f": {entry['reason']}"
    return line
