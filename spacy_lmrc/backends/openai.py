"""An OpenAI-compatible server (llama.cpp, vLLM, SGLang) answering structured requests.

Each pair query is one ``/v1/completions`` request whose prompt is the task's prompt format
rendered as text, ``prefix(request) + query(pair)``: the text :class:`HFBackend
<spacy_lmrc.backends.hf.HFBackend>` tokenizes (prefix and query apart; the formats end the
prefix with a line break, where a BPE pre-tokenizer splits anyway, so the server reads the
same tokens), with the
document prefix first and identical across a document's requests, which are sent one after the
other so the server's prefix cache reuses it. The answer is constrained by the server's own
mechanism (``server``):

========== ============================================== ===================================
server     request field (``extra_body``)                 constraint
========== ============================================== ===================================
llama.cpp  ``grammar``                                    a GBNF grammar
vllm       ``structured_outputs``: ``{"choice": [...]}``  the answers, or ``{"regex": ...}``
           (vLLM >= 0.10.2; ``guided_*`` before)          when several relations may be named
sglang     ``regex``                                      a regular expression
========== ============================================== ===================================

The language is the one :class:`~spacy_lmrc.llm.constraints.AnswerSpace` decodes: relation
names of the pair's space written ``" " + name``, joined by the format's separator (at most
``max_names``, only with ``multi_label``), the ``none_answer`` alone. Decoding is greedy
(temperature 0).

Probabilities come from the ``logprobs`` the server returns (the ``top_logprobs`` best tokens
of every answer step, from the model's unconstrained distribution). As in ``HFBackend`` they
are renormalised over the tokens that keep the answer valid (here: among the returned ones,
matched as text), a name's probability is the product of its tokens' and of stopping after it
(end or separator; the end token is the empty string servers return for it). A server returns
no step for the end token it stops on: stopping there counts as certain where no longer name
goes on, and is left out (an upper bound) after a name that a longer one extends (``country``
before ``country of citizenship``) unless ``min_probability`` asks for it. A server that
returns no log-probabilities gives names with probability None (counted as
``no_logprobs``).

``RelationRequest.min_probability`` τ is honoured by searching the first names as
``HFBackend`` does, with requests instead of tree branches: every step of an answer whose path
probability times an alternative token's (from the top ``top_logprobs``) is at least τ opens a
branch, one more request whose prompt ends with the branch's text and whose constraint allows
only the names going on from there; a name is listed when its probability with the stop is at
least τ. Alternatives outside the returned top tokens cannot be seen: with ``top_logprobs`` >=
1/τ none with P >= τ is missed at a step. A branch ends the prompt within the answer, where
the server tokenizes it again: names split at word starts, as the vocabularies of BPE models
split them, read the same.

Errors: a server that cannot be reached (after ``max_retries`` tries with exponential back-off)
or that answers with an error status other than 400 (a bad model name or key) ends the call
with an :class:`~spacy_lmrc.errors.InputError` naming ``base_url`` or the field; a request that
times out after its retries, or that the server refuses as bad (400: e.g. a prompt longer than
its context), leaves its pair unanswered, counted as ``timed_out`` or ``refused`` in
:meth:`usage` and ``stats`` with the server's message as a sample (when every request of a call
fails so, the call fails with the reason); an answer outside the pair's space
(a server ignoring the constraint) is dropped and counted as ``out_of_set`` in ``stats`` and
:meth:`usage`, the first ones kept as samples.

Long documents: with a fine-tuned classifier (:meth:`OpenAIBackend.use_classifier`, the
folder whose export the server serves) the backend measures requests as ``HFBackend`` does
(:meth:`OpenAIBackend.context_fit`: prefix, longest query and ``max_tokens`` for the answer,
in the classifier's tokens, which are the served model's), against the smaller of
``context_length`` (the server's context: ``--n_ctx`` of llama-cpp-python's server,
``--ctx-size`` of ``llama-server``, vLLM's ``--max-model-len``) and the model's
``max_position_embeddings``. So the LMRC tasks ask a document longer than that over windows
of its sentences (:mod:`spacy_lmrc.tasks.lmrc.windows`) instead of sending it whole to be
refused. Without a classifier there is no tokenizer to count with: no limit is known and every
request is sent whole (the server refuses what it cannot hold: counted as ``refused``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import srsly
from spacy.util import registry

from ..errors import InputError
from ..llm.formats import PromptFormat
from ..llm.parsing import ParseStats
from ..llm.requests import Answer, PairQuery, RelationRequest
from ..llm.sequences import ContextFit, measure_request, text_token_counts
from .base import LLMBackend

if TYPE_CHECKING:
    from ..classifier.model import RCModel

SETTINGS_FILE = "openai_backend.json"
SERVERS = ("llama.cpp", "vllm", "sglang")
#: the text servers return for the end token in log-probabilities (special tokens are skipped)
STOP_TEXT = ""


class AnswerLanguage:
    """The valid answers of one pair as text, for constraints, parsing and renormalising.

    names: the pair's relation names (the ``none_answer`` among them when it is allowed).
    """

    def __init__(self, names: Sequence[str], separator: str, none_answer: str | None,
                 multi_label: bool, max_names: int) -> None:
        self.names = list(dict.fromkeys(names))
        self.texts = {f" {name}": name for name in self.names}
        self.separator = separator
        self.none_answer = none_answer
        self.most = max_names if multi_label else 1
        for text in self.texts:
            if separator in text:
                raise InputError(f"the relation name {text.strip()!r} holds the separator "
                                 f"{separator!r}: answers could not be read back",
                                 field="prompt_format.separator")

    # text -----------------------------------------------------------------------------------

    def parse(self, text: str) -> tuple[list[str], list[str]]:
        """The names of an answer, and its parts that are no name of the space."""
        names, bad = [], []
        for part in text.split(self.separator):
            name = self.texts.get(part)
            if name is None:
                bad.append(part)
            elif name not in names:
                names.append(name)
        if self.none_answer in names and len(names) > 1:
            names.remove(self.none_answer)
            bad.append(f" {self.none_answer}")
        return names, bad

    def _parts(self, text: str) -> tuple[list[str], str] | None:
        """Complete names and the part being written, or None if ``text`` cannot start an
        answer."""
        *done, last = text.split(self.separator)
        names = [self.texts.get(part) for part in done]
        if None in names or len(done) + 1 > self.most:
            return None
        if done and self.none_answer is not None and self.none_answer in names:
            return None
        return names, last

    def is_prefix(self, text: str) -> bool:
        """Whether ``text`` starts a valid answer."""
        parts = self._parts(text)
        if parts is None:
            return False
        done, last = parts
        if done and last == f" {self.none_answer}":
            return False
        return any(candidate.startswith(last) for candidate in self.texts)

    def name_at(self, text: str) -> str | None:
        """The name ``text`` ends on (its last part complete), else None."""
        parts = self._parts(text)
        if parts is None:
            return None
        return self.texts.get(parts[1])

    def may_continue(self, text: str) -> bool:
        """Whether a longer name starts with the last part of ``text``."""
        parts = self._parts(text)
        return parts is not None and any(t.startswith(parts[1]) and t != parts[1]
                                         for t in self.texts)

    def renormalise(self, text: str, top: dict[str, float]) -> dict[str, float]:
        """``top`` (a step's best tokens and log-probabilities, after ``text``) restricted to
        the tokens that keep the answer valid, as log-probabilities summing to one."""
        complete = self.name_at(text) is not None
        allowed = {token: logprob for token, logprob in top.items()
                   if (token == STOP_TEXT and complete)
                   or (token != STOP_TEXT and self.is_prefix(text + token))}
        if not allowed:
            return {}
        total = _logsumexp(list(allowed.values()))
        return {token: logprob - total for token, logprob in allowed.items()}

    def stop_logprob(self, steps: dict[str, float]) -> float | None:
        """Log-probability of stopping a name (end or separator) among renormalised ``steps``."""
        stops = [logprob for token, logprob in steps.items()
                 if token in (STOP_TEXT, self.separator)]
        return _logsumexp(stops) if stops else None

    # constraints ----------------------------------------------------------------------------

    def continuations(self, text: str) -> list[str]:
        """What completes a first name begun by ``text`` (non-empty, one name only)."""
        return [t[len(text):] for t in self.texts if t.startswith(text) and t != text]

    def gbnf(self, alternatives: Sequence[str] | None = None) -> str:
        """A llama.cpp GBNF grammar: the whole answer, or one of ``alternatives``."""
        if alternatives is not None:
            return "root ::= " + " | ".join(_gbnf_string(a) for a in alternatives)
        relations = [t for t, name in self.texts.items() if name != self.none_answer]
        rules = ["name ::= " + " | ".join(_gbnf_string(t) for t in relations)]
        answer = "name" + (f" ({_gbnf_string(self.separator)} name){{0,{self.most - 1}}}"
                           if self.most > 1 else "")
        if self.none_answer is not None:
            answer = f"{_gbnf_string(' ' + self.none_answer)} | {answer}"
        return "\n".join([f"root ::= {answer}", *rules])

    def regex(self, alternatives: Sequence[str] | None = None) -> str:
        """The same language as a regular expression (vLLM, SGLang)."""
        if alternatives is not None:
            return "(" + "|".join(_regex_escape(a) for a in alternatives) + ")"
        relations = [t for t, name in self.texts.items() if name != self.none_answer]
        name = "(" + "|".join(_regex_escape(t) for t in relations) + ")"
        answer = name + (f"({_regex_escape(self.separator)}{name}){{0,{self.most - 1}}}"
                         if self.most > 1 else "")
        if self.none_answer is not None:
            answer = f"{_regex_escape(' ' + self.none_answer)}|{answer}"
        return f"({answer})"


def _regex_escape(text: str) -> str:
    """``text`` as a literal of the regex dialects servers read (Python's, Rust's, xgrammar's):
    only metacharacters escaped (``re.escape`` escapes spaces, which Rust's regex refuses)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def _gbnf_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def token_logprobs(logprobs: Any) -> tuple[list[str] | None, list[dict[str, float]] | None]:
    """A completion's chosen tokens and each step's best tokens with their log-probabilities,
    from either shape servers answer ``/v1/completions`` with: the legacy OpenAI one (vLLM,
    SGLang, llama-cpp-python: ``tokens`` and ``top_logprobs`` as token -> logprob maps) or
    the chat one that llama.cpp's ``llama-server`` uses (``content``: one entry per step with
    ``token`` and ``top_logprobs`` as a list of ``{token, logprob}``). (None, None) without."""
    if logprobs is None:
        return None, None
    if getattr(logprobs, "tokens", None) and getattr(logprobs, "top_logprobs", None):
        return list(logprobs.tokens), [dict(t or {}) for t in logprobs.top_logprobs]
    steps = (getattr(logprobs, "model_extra", None) or {}).get("content")
    if not steps:
        return None, None
    tokens, top = [], []
    for step in steps:
        tokens.append(str(step.get("token", "")))
        best: dict[str, float] = {}
        for alternative in step.get("top_logprobs") or []:  # best first: a text's best id
            best.setdefault(str(alternative.get("token", "")), float(alternative["logprob"]))
        top.append(best)
    return tokens, top


@dataclass
class Completion:
    """One answer read from the server: its text and, per step, the chosen token and the
    step's best tokens (None when the server gave no log-probabilities)."""

    text: str
    tokens: list[str] | None
    top: list[dict[str, float]] | None
    prompt_tokens: int = 0


@dataclass
class QueryResult:
    """A query's answer and the counts of what getting it did (merged by the caller)."""

    answer: Answer
    counts: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    refusal: str | None = None


class OpenAIBackend(LLMBackend):
    """Relation requests answered by an OpenAI-compatible completions server.

    base_url: the server's API root, e.g. ``http://127.0.0.1:8080/v1``.
    model: the model name the server serves (its ``--model`` or ``--served-model-name``).
    server: ``llama.cpp``, ``vllm`` or ``sglang``: how the answer constraint is sent.
    api_key_env: the environment variable holding the API key (read when the client is made;
        the key is never saved). Unset: no key (local servers).
    concurrency: requests in flight at once.
    timeout: seconds one request may take; max_retries: tries after the first on connection
        errors, timeouts, 429 and 5xx answers, with exponential back-off (the openai client's).
    top_logprobs: best tokens returned per answer step (vLLM allows 20 by default).
    max_names: most relation names in one answer (``HFBackend``'s answer space has 4).
    max_tokens: most tokens of one answer (the room a request keeps for it in the context).
    context_length: the server's context in tokens (llama.cpp's ``--n_ctx``, vLLM's
        ``--max-model-len``); with a fine-tuned classifier (:meth:`use_classifier`) requests
        are measured against it, or against the model's ``max_position_embeddings`` where
        that is smaller or it is unset, so that longer documents are asked over windows.
        Without a classifier nothing is measured (see the module's description).
    """

    def __init__(self, base_url: str, model: str, server: str = "llama.cpp",
                 api_key_env: str | None = None, concurrency: int = 4, timeout: float = 60.0,
                 max_retries: int = 2, top_logprobs: int = 10, max_names: int = 4,
                 max_tokens: int = 64, context_length: int | None = None) -> None:
        if server not in SERVERS:
            raise InputError(f"unknown server {server!r} (expected one of {', '.join(SERVERS)})",
                             field="server")
        if concurrency < 1 or top_logprobs < 1 or max_names < 1:
            raise InputError("concurrency, top_logprobs and max_names must be at least 1",
                             field="concurrency")
        if context_length is not None and context_length < 1:
            raise InputError(f"context_length must be at least 1 token (got {context_length})",
                             field="context_length")
        self.base_url = base_url
        self.model = model
        self.server = server
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.top_logprobs = top_logprobs
        self.max_names = max_names
        self.max_tokens = max_tokens
        self.context_length = context_length
        self.counts: Counter = Counter()
        self._client: Any = None
        #: the fine-tuned classifier the server serves an export of: its tokenizer measures
        self.classifier: RCModel | None = None
        self._tokenizer: Any = None
        self._position_limit: int | None = None  # 0: read, and the model states none

    # the client ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client (made on first use)."""
        if self._client is None:
            try:
                import openai
            except ImportError as err:
                raise InputError("the OpenAI backend needs the openai package: pip install "
                                 "'spacy-lmrc[serve]'", field="backend") from err
            key = "none"
            if self.api_key_env:
                key = os.environ.get(self.api_key_env, "")
                if not key:
                    raise InputError(f"the environment variable {self.api_key_env} holding the "
                                     "API key is not set", field="api_key_env")
            self._client = openai.OpenAI(base_url=self.base_url, api_key=key,
                                         timeout=self.timeout, max_retries=self.max_retries)
        return self._client

    def use_classifier(self, classifier: RCModel) -> None:
        """A fine-tuned classifier runs on the server: serve its export (``spacy-lmrc
        export-gguf`` for llama.cpp, the merged folder for vLLM/SGLang) as ``model``; the
        component takes the task (relation set, prompt format) from the folder. The backend
        keeps the folder to measure requests with its tokenizer (the served model's), loaded
        when a request is first measured."""
        self.classifier = classifier
        self._tokenizer = None
        self._position_limit = None

    # measuring (long documents) -------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The classifier's tokenizer, loaded on first use; requests are measured with it."""
        if self.classifier is None:
            raise InputError("OpenAIBackend measures requests with a fine-tuned classifier's "
                             "tokenizer, and it has none (use_classifier)", field="model")
        if self._tokenizer is None:
            self._tokenizer = self.classifier.load_tokenizer()
        return self._tokenizer

    def _context_limit(self) -> int | None:
        """The smaller of ``context_length`` and the classifier's position limit, where known
        (None: neither is)."""
        if self.classifier is not None and self._position_limit is None:
            self._position_limit = _position_limit(self.classifier) or 0
        limits = [self.context_length, self._position_limit]
        return min((x for x in limits if x), default=None)

    def context_fit(self, request: RelationRequest,
                    prompt_format: PromptFormat) -> ContextFit | None:
        """How ``request`` fits the server's context: its prefix, longest query and
        ``max_tokens`` for the answer, in the classifier's tokens (``HFBackend``'s measure).
        None without a classifier (no tokenizer to count with) or without a known limit: the
        request is sent whole."""
        limit = self._context_limit()
        if self.classifier is None or not limit:
            return None
        fit, _ = measure_request(self.tokenizer, prompt_format, request, limit, self.max_tokens)
        return fit

    def text_tokens(self, texts: Sequence[str]) -> list[int]:
        """The length of each of ``texts`` in the classifier's tokens (no special tokens):
        what a piece of a document takes in a prompt."""
        return text_token_counts(self.tokenizer, texts)

    def _constraint(self, language: AnswerLanguage,
                    alternatives: Sequence[str] | None) -> dict[str, Any]:
        if self.server == "llama.cpp":
            return {"grammar": language.gbnf(alternatives)}
        if self.server == "sglang":
            return {"regex": language.regex(alternatives)}
        if alternatives is not None or language.most == 1:
            choices = (list(alternatives) if alternatives is not None
                       else list(language.texts))
            return {"structured_outputs": {"choice": choices}}
        return {"structured_outputs": {"regex": language.regex()}}

    def _complete(self, prompt: str, language: AnswerLanguage,
                  alternatives: Sequence[str] | None = None, answered: str = "") -> Completion:
        """One constrained greedy completion; raises ``openai`` errors after the retries.
        ``answered``: the part of the answer the prompt already ends with (a branch), whose
        tokens come off the answer's budget, so prompt and answer fit where the request did."""
        response = self.client.completions.create(
            model=self.model, prompt=prompt, max_tokens=self._answer_budget(answered),
            temperature=0.0,
            logprobs=self.top_logprobs, extra_body=self._constraint(language, alternatives))
        if not response.choices:
            return Completion("", None, None)
        choice = response.choices[0]
        tokens, top = token_logprobs(choice.logprobs)
        if tokens is not None and ("".join(tokens) != choice.text or len(top) != len(tokens)):
            tokens = top = None  # tokens that do not spell the answer: no probabilities
        used = response.usage.prompt_tokens if response.usage is not None else 0
        return Completion(choice.text, tokens, top, used)

    def _answer_budget(self, answered: str) -> int:
        """``max_tokens`` less the tokens of ``answered`` (with one for where the server's
        tokenizer joins it to the prompt), counted with the classifier's tokenizer; the whole
        ``max_tokens`` without a classifier (no context is known then)."""
        if not answered or self.classifier is None:
            return self.max_tokens
        used = len(self.tokenizer(answered, add_special_tokens=False)["input_ids"]) + 1
        return max(1, self.max_tokens - used)

    # answering ------------------------------------------------------------------------------

    def answer(self, requests: Sequence[RelationRequest], prompt_format: PromptFormat,
               stats: ParseStats | None = None) -> list[list[Answer]]:
        """Constrained answers to every query of every request, in order; requests of a
        document go out one after another (``concurrency`` at a time) after the same prefix.
        """
        jobs = [(r, q, request, query, prompt_format.prefix(request))
                for r, request in enumerate(requests) for q, query in enumerate(request.queries)]
        results: list[list[Answer]] = [[[] for _ in request.queries] for request in requests]
        if not jobs:
            return results
        self.client  # noqa: B018  (a missing package or key is reported before any request)
        import openai

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._answer_query, prefix + prompt_format.query(query),
                                   request, query, prompt_format.separator)
                       for _, _, request, query, prefix in jobs]
            outcomes = []
            try:
                for future in futures:
                    outcomes.append(future.result())
            except openai.APIConnectionError as err:
                for future in futures:
                    future.cancel()
                raise InputError(f"no OpenAI-compatible server answers at {self.base_url} "
                                 f"({err.__cause__ or err}) after {self.max_retries + 1} tries: "
                                 "is it running, and is base_url right?",
                                 field="base_url") from err
            except openai.APIStatusError as err:
                for future in futures:
                    future.cancel()
                raise InputError(f"the server at {self.base_url} refused a request with "
                                 f"status {err.status_code}: {_server_message(err)}",
                                 field="model" if err.status_code == 404 else "server") from err
        failed, refusals = 0, []
        for (r, q, *_), outcome in zip(jobs, outcomes):
            results[r][q] = outcome.answer
            self.counts.update(outcome.counts)
            failed += outcome.counts["timed_out"] + outcome.counts["refused"]
            if outcome.refusal is not None:
                refusals.append(outcome.refusal)
            if stats is not None:
                for key, count in outcome.counts.items():
                    if key in ("out_of_set", "timed_out", "refused", "no_logprobs",
                               "timed_out_branches", "refused_branches"):
                        stats.add(key, count)
                for sample in outcome.samples:
                    stats.sample("out_of_set", sample)
                if outcome.refusal is not None:
                    stats.sample("refused", outcome.refusal)
        if failed == len(jobs) and refusals:
            raise InputError(f"the server at {self.base_url} refused {len(refusals)} of "
                             f"{len(jobs)} requests (status 400): {refusals[0]}", field="server")
        if failed == len(jobs):
            raise InputError(f"every one of {len(jobs)} requests to {self.base_url} timed out "
                             f"({self.timeout} s, {self.max_retries + 1} tries): raise timeout or "
                             "lower concurrency", field="timeout")
        return results

    def _answer_query(self, prompt: str, request: RelationRequest, query: PairQuery,
                      separator: str) -> QueryResult:
        """The greedy answer of one query and, with ``min_probability``, the first names found
        by branching (see the module's description); a timeout or a refusal (400) is counted,
        not raised."""
        import openai

        language = AnswerLanguage(request.space_of(query), separator, request.none_answer,
                                  request.multi_label, self.max_names)
        result = QueryResult([])
        try:
            greedy = self._complete(prompt, language)
        except openai.APITimeoutError:
            result.counts["timed_out"] += 1
            return result
        except openai.BadRequestError as err:
            result.counts["refused"] += 1
            result.refusal = _server_message(err)
            return result
        result.counts["requests"] += 1
        result.counts["prompt_tokens"] += greedy.prompt_tokens
        names, bad = language.parse(greedy.text)
        if bad or not names:
            result.counts["out_of_set"] += len(bad) or 1
            result.samples.append(greedy.text)
        if greedy.tokens is None:
            result.counts["no_logprobs"] += 1
            result.answer = [(name, None) for name in names]
            return result
        scores = self._greedy_scores(language, greedy)
        answer = {name: scores.get(name) for name in names}
        if request.min_probability is not None and names:
            found = self._search(prompt, language, greedy, math.log(request.min_probability),
                                 result)
            for name, logprob in found.items():
                known = answer.get(name)
                # the search's probability of the greedy first name has the stop a server
                # may not return: it replaces the greedy one, which can lack it
                keep = known is not None and name != names[0]
                answer[name] = max(known, logprob) if keep else logprob
            ranked = sorted(answer.items(), key=lambda item: -(item[1] or -math.inf))
            result.answer = [(name, _prob(score)) for name, score in ranked]
        else:
            result.answer = [(name, _prob(answer[name])) for name in names]
        return result

    def _greedy_scores(self, language: AnswerLanguage, completion: Completion
                       ) -> dict[str, float | None]:
        """Each name's log-probability in the greedy answer: its tokens, the separator before
        it and the stop after it, renormalised over the valid tokens."""
        scores: dict[str, float | None] = {}
        text, logprob = "", 0.0
        for token, top in zip(completion.tokens, completion.top):
            steps = language.renormalise(text, top)
            name = language.name_at(text)
            if name is not None and token == language.separator:
                stop = language.stop_logprob(steps)
                scores.setdefault(name, logprob + (stop or 0.0))
                logprob = 0.0
            logprob += steps.get(token, 0.0)
            text += token
        name = language.name_at(text)
        if name is not None:
            scores.setdefault(name, logprob)
        return scores

    def _search(self, prompt: str, language: AnswerLanguage, greedy: Completion,
                log_threshold: float, result: QueryResult) -> dict[str, float]:
        """First names with log-probability >= ``log_threshold``: the greedy answer's first
        name steps, then one request per branch (an alternative token whose path is probable
        enough), each exploring what goes on from its text."""
        import openai

        found: dict[str, float] = {}
        seen: set[str] = set()
        pending: list[tuple[str, float, Completion | None]] = [("", 0.0, greedy)]
        while pending:
            start, logprob, completion = pending.pop()
            if completion is None and not language.may_continue(start):
                name = language.name_at(start)  # a name no longer one extends: it stops
                if name is not None:
                    found[name] = max(found.get(name, -math.inf), logprob)
                continue
            if completion is None:
                try:
                    completion = self._complete(prompt + start, language,
                                                language.continuations(start), answered=start)
                except openai.APITimeoutError:
                    result.counts["timed_out_branches"] += 1
                    continue
                except openai.BadRequestError as err:
                    result.counts["refused_branches"] += 1
                    result.refusal = result.refusal or _server_message(err)
                    continue
                result.counts["branch_requests"] += 1
                result.counts["prompt_tokens"] += completion.prompt_tokens
                if completion.tokens is None:
                    result.counts["no_logprobs"] += 1
                    continue
            text = start
            for token, top in zip(completion.tokens, completion.top):
                steps = language.renormalise(text, top)
                name = language.name_at(text)
                if name is not None:
                    stop = language.stop_logprob(steps)
                    if stop is not None and logprob + stop >= log_threshold:
                        found[name] = max(found.get(name, -math.inf), logprob + stop)
                    if token == language.separator or token == STOP_TEXT:
                        break  # the first name ends here
                for alternative, alt_logprob in steps.items():
                    branch = text + alternative
                    if (alternative in (token, STOP_TEXT) or language.separator in alternative
                            or logprob + alt_logprob < log_threshold or branch in seen):
                        continue
                    seen.add(branch)
                    pending.append((branch, logprob + alt_logprob, None))
                logprob += steps.get(token, 0.0)
                text += token
            else:  # the completion stopped where the server gives no step
                name = language.name_at(text)
                if name is not None and language.may_continue(text):
                    if logprob >= log_threshold and text not in seen:
                        seen.add(text)  # ask what follows: the stop and longer names
                        pending.append((text, logprob, None))
                elif name is not None and logprob >= log_threshold:
                    found[name] = max(found.get(name, -math.inf), logprob)
        return found

    def usage(self) -> dict[str, int]:
        """Requests sent (``requests``: one per pair; ``branch_requests``: the
        ``min_probability`` search), prompt tokens the server counted, and what was skipped:
        ``timed_out`` and ``refused`` pairs, ``timed_out_branches`` and ``refused_branches``
        of the search (their names are missing from the pair's answer), ``out_of_set``
        answers, answers with ``no_logprobs``."""
        return dict(self.counts)

    # saving ---------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The constructor settings, as :meth:`to_disk` stores them (the key's variable's name,
        never the key)."""
        return {"base_url": self.base_url, "model": self.model, "server": self.server,
                "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "timeout": self.timeout, "max_retries": self.max_retries,
                "top_logprobs": self.top_logprobs, "max_names": self.max_names,
                "max_tokens": self.max_tokens, "context_length": self.context_length}

    def to_disk(self, path: Path) -> None:
        """The settings, as JSON."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / SETTINGS_FILE, self.settings())

    def from_disk(self, path: Path) -> OpenAIBackend:
        """The settings :meth:`to_disk` wrote; a folder without them (another backend's) leaves
        the configured ones. The classifier in use is kept: a saved pipeline's component
        hands it over before the backend's settings are read."""
        settings_path = Path(path) / SETTINGS_FILE
        if settings_path.exists():
            classifier = self.classifier
            self.__init__(**srsly.read_json(settings_path))
            if classifier is not None:
                self.use_classifier(classifier)
        return self


def _position_limit(classifier: RCModel) -> int | None:
    """``max_position_embeddings`` of the classifier's model: from its folder's config.json
    (full fine-tuning), else from its base model's where that is a local folder (a LoRA
    adapter); None where neither states it."""
    for folder in (classifier.path, Path(classifier.base_model)):
        config = folder / "config.json"
        if config.is_file():
            return srsly.read_json(config).get("max_position_embeddings")
    return None


def _prob(logprob: float | None) -> float | None:
    return None if logprob is None else math.exp(logprob)


def _server_message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        detail = body.get("error", body.get("detail", body))
        return str(detail.get("message", detail) if isinstance(detail, dict) else detail)[:500]
    return str(err)[:500]


@registry.misc("spacy_lmrc.OpenAIBackend.v2")
def make_openai_backend(base_url: str, model: str, server: str = "llama.cpp",
                        api_key_env: str | None = None, concurrency: int = 4,
                        timeout: float = 60.0, max_retries: int = 2, top_logprobs: int = 10,
                        max_names: int = 4, max_tokens: int = 64,
                        context_length: int | None = None) -> OpenAIBackend:
    """An OpenAI-compatible completions server (llama.cpp, vLLM, SGLang) as the LLM backend:
    one constrained request per pair query, ``concurrency`` at a time; the API key is read
    from the environment variable ``api_key_env``. ``context_length``: the server's context
    in tokens, against which a fine-tuned classifier's requests are measured (longer
    documents are asked over windows of their sentences)."""
    return OpenAIBackend(base_url=base_url, model=model, server=server,
                         api_key_env=api_key_env, concurrency=concurrency, timeout=timeout,
                         max_retries=max_retries, top_logprobs=top_logprobs,
                         max_names=max_names, max_tokens=max_tokens,
                         context_length=context_length)


@registry.misc("spacy_lmrc.OpenAIBackend.v1")
def make_openai_backend_v1(base_url: str, model: str, server: str = "llama.cpp",
                           api_key_env: str | None = None, concurrency: int = 4,
                           timeout: float = 60.0, max_retries: int = 2, top_logprobs: int = 10,
                           max_names: int = 4, max_tokens: int = 64) -> OpenAIBackend:
    """``spacy_lmrc.OpenAIBackend.v2`` without ``context_length`` (no limit is known, so
    every document is sent whole), for configs that name v1."""
    return make_openai_backend(base_url=base_url, model=model, server=server,
                               api_key_env=api_key_env, concurrency=concurrency,
                               timeout=timeout, max_retries=max_retries,
                               top_logprobs=top_logprobs, max_names=max_names,
                               max_tokens=max_tokens)
