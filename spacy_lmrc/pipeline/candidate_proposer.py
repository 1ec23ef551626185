"""``lmrc_candidate_proposer``: LMRC's relation candidate proposal (RCP) as a spaCy component.

Scores every ordered entity pair of ``doc._.entities`` with the RCP model
(:mod:`spacy_lmrc.proposer`) and writes the pairs whose P(relation) exceeds the threshold to
``doc._.relation_candidates`` as ``{"head", "tail", "score"}``, in (head, tail) order. The
``llm_relation_classifier`` then only asks the LLM about those pairs. A proposer trained with
relation-type hints also stores each kept pair's ``hint_top_m`` most likely relation types,
``"hints": [{"label", "score"}, ...]``, best first.

``model`` is either a trained proposer folder (``<output>/model-best`` of
``spacy-lmrc train-proposer``) or an encoder name / path. With an encoder, the component holds
an *untrained* proposer (random head): it can be saved, loaded and trained further, but
predicting with it raises an error, because its candidates would be noise, unless
``allow_untrained = true`` says that is intended (tests, smoke runs). ``threshold = null`` uses
the threshold chosen on dev and stored with the model.

Training happens in ``spacy-lmrc train-proposer`` (Accelerate, multi-GPU), not in
``spacy train``; ``nlp.initialize`` only loads or builds the model. Usage::

    nlp = spacy.blank("en")
    nlp.add_pipe("lmrc_candidate_proposer", config={"model": "training/proposer/model-best"})
    doc = nlp(doc_with_entities)   # doc._.relation_candidates == [{"head", "tail", "score"}, ...]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from spacy import util
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import SimpleFrozenList, make_tempdir

from ..doc import Candidate, ordered_pairs
from ..errors import InputError
from ..metrics import scorers  # noqa: F401  (registers spacy_lmrc.candidate_scorer.v1)
from ..proposer.model import PairScores, RCPModel, is_rcp_folder
from ..util import DEFAULT_ENCODER, bf16_is_native, resolve_device
from .batched import BatchedPipe

MODEL_DIR = "model"
CFG_FILE = "cfg.json"


class UntrainedProposerError(RuntimeError):
    """Raised when an untrained proposer is asked for predictions."""


@Language.factory(
    "lmrc_candidate_proposer",
    default_config={
        "model": DEFAULT_ENCODER,
        "threshold": None,
        "batch_size": 8,
        "device": "cpu",
        "bf16": None,
        "hint_top_m": 5,
        "allow_untrained": False,
        "scorer": {"@scorers": "spacy_lmrc.candidate_scorer.v1"},
    },
    assigns=["doc._.relation_candidates"],
    requires=["doc._.entities"],
    default_score_weights={"cand_f1": 1.0, "cand_p": 0.0, "cand_r": 0.0,
                           "cand_kept_fraction": None},
)
def make_candidate_proposer(
    nlp: Language,
    name: str,
    model: str,
    threshold: float | None,
    batch_size: int,
    device: str,
    bf16: bool | None,
    hint_top_m: int,
    allow_untrained: bool,
    scorer: Callable | None,
) -> CandidateProposer:
    """LMRC relation candidate proposer.

    model: trained proposer folder, or encoder name / path (untrained head, see module doc).
    threshold: keep pairs with P(relation) > threshold; null = the model's stored threshold.
    batch_size: documents per forward pass. device: cpu, cuda, cuda:N or auto.
    bf16: bfloat16 autocast; null = where the hardware computes bf16 (a bf16 GPU, or a CPU with
    AMX or AVX512-BF16). hint_top_m: relation types stored per kept pair (models with a hints
    head; 0 = none). allow_untrained: predict with an untrained head.
    """
    return CandidateProposer(nlp.vocab, name, model=model, threshold=threshold,
                             batch_size=batch_size, device=device, bf16=bf16,
                             hint_top_m=hint_top_m, allow_untrained=allow_untrained,
                             scorer=scorer)


class CandidateProposer(BatchedPipe):
    """Writes ``doc._.relation_candidates`` (pairs likely to hold a relation, with P(relation)).

    A :class:`~spacy.pipeline.Pipe` rather than a ``TrainablePipe``: the torch model trains in
    ``spacy-lmrc train-proposer``, not through ``nlp.update``.
    """

    def __init__(self, vocab: Any, name: str = "lmrc_candidate_proposer", *,
                 model: str = DEFAULT_ENCODER, threshold: float | None = None,
                 batch_size: int = 8, device: str = "cpu", bf16: bool | None = None,
                 hint_top_m: int = 5, allow_untrained: bool = False,
                 scorer: Callable | None = None) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{name}: threshold must be in [0, 1] or null, got {threshold}")
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
        if hint_top_m < 0:
            raise ValueError(f"{name}: hint_top_m must be >= 0, got {hint_top_m}")
        self.vocab = vocab
        self.name = name
        self.device = resolve_device(device)
        self.bf16 = bf16_is_native(self.device) if bf16 is None else bf16
        self.scorer = scorer
        self.cfg: dict[str, Any] = {"model_source": str(model), "threshold": threshold,
                                    "batch_size": batch_size, "hint_top_m": hint_top_m,
                                    "allow_untrained": allow_untrained}
        self._model: RCPModel | None = None

    # settings (in ``cfg``, saved as cfg.json)
    @property
    def model_source(self) -> str:
        """Where the model comes from: a trained proposer folder, or an encoder."""
        return self.cfg["model_source"]

    @model_source.setter
    def model_source(self, value: str) -> None:
        self.cfg["model_source"] = str(value)

    @property
    def threshold_override(self) -> float | None:
        """The configured threshold (None: the one stored with the model)."""
        return self.cfg["threshold"]

    @threshold_override.setter
    def threshold_override(self, value: float | None) -> None:
        self.cfg["threshold"] = value

    @property
    def batch_size(self) -> int:
        """Documents per forward pass."""
        return self.cfg["batch_size"]

    @property
    def hint_top_m(self) -> int:
        """Relation types stored per kept pair (when the model has a hints head)."""
        return self.cfg.get("hint_top_m", 0)

    @property
    def allow_untrained(self) -> bool:
        """Whether an untrained head may predict (tests, smoke runs)."""
        return self.cfg["allow_untrained"]

    # model
    @property
    def rcp(self) -> RCPModel:
        """The RCP model, loaded (or built over the encoder) on first use.

        Not called ``model``: spaCy probes components' ``model`` attribute while it builds a
        pipeline, before ``from_disk`` has pointed this one at its saved weights.
        """
        if self._model is None:
            self._model = self._load(self.model_source)
        return self._model

    def _load(self, source: str) -> RCPModel:
        if is_rcp_folder(source):
            model = RCPModel.from_pretrained(source, device=self.device)
        else:
            model = RCPModel.from_encoder(source).to(self.device).eval()
        return model

    @property
    def is_trained(self) -> bool:
        """Whether the model's head was trained (``spacy-lmrc train-proposer``)."""
        return bool(self.rcp.settings.trained)

    @property
    def threshold(self) -> float:
        """The threshold in use: the configured one, else the one stored with the model."""
        if self.threshold_override is not None:
            return self.threshold_override
        return float(self.rcp.settings.threshold)

    def initialize(self, get_examples: Callable[[], Iterable[Example]] | None = None, *,
                   nlp: Language | None = None, model: str | None = None) -> None:
        """Load the proposer (``model`` overrides the configured source) and check the input.

        With an encoder name the head is untrained; see the module docstring.
        """
        if model is not None:
            self.model_source = str(model)
        self._model = self._load(self.model_source)
        if get_examples is not None:
            for i, eg in enumerate(get_examples()):
                try:
                    self.rcp.featurize(eg.predicted)
                except (KeyError, IndexError, TypeError) as err:
                    raise InputError(f"{self.name}: cannot mark the entity mentions ({err!r})",
                                     index=i, title=eg.predicted._.title,
                                     field="doc._.entities") from None

    # prediction
    def _check_trained(self) -> None:
        if not self.is_trained and not self.allow_untrained:
            raise UntrainedProposerError(
                f"{self.name}: the proposer over {self.rcp.settings.encoder!r} has an untrained "
                f"head, so its candidates would be noise. Set the component's 'model' to a "
                f"trained proposer folder (the model-best folder of `spacy-lmrc train-proposer`), "
                f"or set allow_untrained = true if random candidates are what you want."
            )

    def predict(self, docs: list[Doc]) -> list[PairScores]:
        """The scores of every ordered entity pair of each Doc (``ordered_pairs`` order):
        P(relation), and P(type) with a hints head."""
        self._check_trained()
        model = self.rcp
        features = [model.featurize(doc) for doc in docs]
        scored = [i for i, f in enumerate(features) if f.pairs]
        scores = model.predict_scores([features[i] for i in scored],
                                      batch_size=self.batch_size, bf16=self.bf16)
        result = [PairScores(np.zeros(0, dtype=np.float32)) for _ in docs]
        for i, doc_scores in zip(scored, scores):
            result[i] = doc_scores
        return result

    def set_annotations(self, docs: list[Doc], scores: list[PairScores]) -> None:
        """Write the pairs above the threshold to ``doc._.relation_candidates``, with their
        top relation types when the model has a hints head."""
        threshold = self.threshold
        types = self.rcp.settings.relation_types
        for doc, doc_scores in zip(docs, scores):
            candidates: list[Candidate] = []
            for i, ((h, t), p) in enumerate(zip(ordered_pairs(doc), doc_scores.relation)):
                if p <= threshold:
                    continue
                candidate: Candidate = {"head": int(h), "tail": int(t), "score": float(p)}
                if doc_scores.types is not None and self.hint_top_m:
                    candidate["hints"] = _top_types(doc_scores.types[i], types, self.hint_top_m)
                candidates.append(candidate)
            doc._.relation_candidates = candidates

    # serialization
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        """Weights, tokenizer and model settings in ``model/``, component settings in
        ``cfg.json``; ``exclude`` names either."""
        # json, not srsly: srsly rounds floats to 10 digits, and the threshold must come back
        util.to_disk(path, {CFG_FILE: lambda p: p.write_text(json.dumps(self.cfg, indent=2)),
                            MODEL_DIR: lambda p: self.rcp.save_pretrained(p)}, exclude)

    def from_disk(self, path: str | Path, *,
                  exclude: Iterable[str] = SimpleFrozenList()) -> CandidateProposer:
        """Read back what :meth:`to_disk` wrote."""

        def read_model(p: Path) -> None:
            if not is_rcp_folder(p):
                raise FileNotFoundError(f"{self.name}: no saved proposer in {p}")
            self._model = RCPModel.from_pretrained(p, device=self.device)

        util.from_disk(path, {CFG_FILE: lambda p: self.cfg.update(json.loads(p.read_text())),
                              MODEL_DIR: read_model}, exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = SimpleFrozenList()) -> bytes:
        """What :meth:`to_disk` writes, as bytes (for ``nlp.to_bytes()``): the settings and
        the model folder's files as ``{relative path: contents}``; ``exclude`` may name
        ``"cfg"`` and ``"model"``, as for :meth:`to_disk`."""
        return util.to_bytes({CFG_FILE: lambda: json.dumps(self.cfg),
                              MODEL_DIR: lambda: _folder_bytes(self.rcp.save_pretrained)},
                             exclude)

    def from_bytes(self, bytes_data: bytes, *,
                   exclude: Iterable[str] = SimpleFrozenList()) -> CandidateProposer:
        """Read back what :meth:`to_bytes` wrote."""

        def read_model(files: dict[str, bytes]) -> None:
            with make_tempdir() as tmp:
                for name, content in files.items():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / name).write_bytes(content)
                if not is_rcp_folder(tmp):
                    raise ValueError(f"{self.name}: the serialized component holds no proposer "
                                     f"model (its {MODEL_DIR!r} files are {sorted(files)})")
                self._model = RCPModel.from_pretrained(tmp, device=self.device)

        util.from_bytes(bytes_data, {CFG_FILE: lambda s: self.cfg.update(json.loads(s)),
                                     MODEL_DIR: read_model}, exclude)
        return self


def _folder_bytes(save: Callable[[Path], None]) -> dict[str, bytes]:
    """The files ``save`` writes into an empty folder, as ``{relative path: contents}``."""
    with make_tempdir() as tmp:
        save(tmp)
        return {p.relative_to(tmp).as_posix(): p.read_bytes()
                for p in sorted(tmp.rglob("*")) if p.is_file()}


def _top_types(probs: np.ndarray, labels: list[str], top_m: int) -> list[dict[str, Any]]:
    """The ``top_m`` relation types of one pair, best first, as ``{"label", "score"}``."""
    best = np.argsort(-probs, kind="stable")[:top_m]
    return [{"label": labels[k], "score": float(probs[k])} for k in best]
