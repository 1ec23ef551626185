"""Fine-tuning the retriever's embedder so that neighbours share a relation, not a topic.

sentence-transformers' own training (``SentenceTransformerTrainer``) with the relation labels as
classes: every training sentence is embedded in a :mod:`.representation` view (``marked`` by
default: the direction of the relation is in the text), batches are drawn by
``GroupByLabelBatchSampler`` (at least two sentences of each label in a batch) and a batch loss
pulls sentences of one label together and pushes the others apart:

``supervised_contrastive``  :class:`.losses.SupervisedContrastiveLoss` (the default): a softmax
                            over each sentence's cosine similarities in the batch, the same
                            label's sentences as the targets (``temperature``);
``batch_all``               ``BatchAllTripletLoss``: every valid triplet of the batch;
``batch_hard_soft_margin``  ``BatchHardSoftMarginTripletLoss``: the hardest positive and
                            negative of each anchor, no margin to set.

The triplet losses' Euclidean margin does not suit a normalised embedder such as
all-MiniLM-L6-v2 (see :mod:`.losses`); they are kept for embedders without ``Normalize``.

``pooling`` makes the sentence vector:

``mean``          the base model's own pooling module (the mean of the tokens for
                  all-MiniLM-L6-v2), as published;
``entity_start``  :class:`.pooling.EntityStartPooling` in place of it: the hidden states at the
                  ``<e1>`` and ``<e2>`` markers side by side (Baldini Soares et al. 2019), for the
                  views that keep the markers (``marked``, ``span``, ``pair``); a ``Normalize``
                  after the pooling is kept.

With ``held_out_fold`` the sentences of that fold (:func:`.folds.fold_of`, ``folds`` in all)
are left out of training: the cross-fitted retrievers that build the generator's training
prompts (see :mod:`.folds`).

The negative label (``Other``) is a class like the others. The model is written as a
sentence-transformers folder with ``rag4re_embedder.json`` (how it was trained), which
``build-index`` and ``rag4re_retriever`` read to embed in the same representation.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import srsly
from spacy.tokens import Doc

from ..corpus.sentence import sentence_label
from ..util import DEFAULT_ENCODER, resolve_device, resolve_model_name
from .embedder import TRAINING_FILE, canonical_name
from .folds import fold_of
from .losses import SupervisedContrastiveLoss
from .representation import Representation

LOSSES = ("supervised_contrastive", "batch_all", "batch_hard_soft_margin")
POOLINGS = ("mean", "entity_start")


@dataclass
class EmbedderSettings:
    """How ``train-retriever`` fine-tunes the embedder (see the module docstring)."""

    base_model: str = DEFAULT_ENCODER
    representation: str = "marked"
    loss: str = "supervised_contrastive"
    temperature: float = 0.025
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 64
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    seed: int = 0
    device: str = "cpu"
    pooling: str = "mean"
    folds: int = 1
    held_out_fold: int | None = None

    def check(self) -> None:
        """Reject settings the trainer would fail on later, naming the setting."""
        representation = Representation.parse(self.representation)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        if self.pooling == "entity_start" and representation.name == "sentence":
            raise ValueError("pooling entity_start reads the entity markers: the sentence "
                             "representation has none (use marked, span or pair)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature}: expected more than 0")
        if self.batch_size < 4 or self.batch_size % 2:
            raise ValueError(f"batch_size {self.batch_size}: the label-grouped batches need an "
                             f"even size of at least 4")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError(f"epochs {self.epochs}: expected more than 0 (or max_steps)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio {self.warmup_ratio}: expected 0 <= ratio < 1")
        if self.held_out_fold is not None and not 0 <= self.held_out_fold < self.folds:
            raise ValueError(f"held_out_fold {self.held_out_fold}: expected 0 <= fold < folds "
                             f"({self.folds}); set folds to 2 or more to hold one out")
        if self.held_out_fold is None and self.folds != 1:
            raise ValueError(f"folds {self.folds}: name the fold to hold out (held_out_fold)")


def _loss(settings: EmbedderSettings, model: Any) -> Any:
    from sentence_transformers.sentence_transformer import losses

    if settings.loss == "supervised_contrastive":
        return SupervisedContrastiveLoss(model, temperature=settings.temperature)
    if settings.loss == "batch_all":
        return losses.BatchAllTripletLoss(model)
    return losses.BatchHardSoftMarginTripletLoss(model)


def train_embedder(docs: Sequence[Doc], output: str | Path, settings: EmbedderSettings,
                   negative_label: str, source: str = "") -> dict[str, Any]:
    """Fine-tune ``settings.base_model`` on one-pair sentence Docs and save it to ``output``.

    Labels with a single sentence cannot form a positive pair: they are counted and left out
    of the batches (the sampler's rule). With ``settings.held_out_fold`` that fold's sentences
    are left out (counted as ``held_out_sentences``). Returns the summary also written to
    ``rag4re_embedder.json``.
    """
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    from .pooling import EntityStartPooling, load_sentence_transformer, use_entity_start_pooling

    settings.check()
    representation = Representation.parse(settings.representation)
    held_out = 0
    if settings.held_out_fold is not None:
        kept = [doc for doc in docs if fold_of(doc.text, settings.folds) != settings.held_out_fold]
        held_out, docs = len(docs) - len(kept), kept
    labels = [sentence_label(doc, negative_label) for doc in docs]
    classes = sorted(set(labels))
    counts = Counter(labels)
    if sum(1 for c in counts.values() if c >= 2) < 2:
        raise ValueError(f"training the embedder needs at least 2 labels with 2 sentences each; "
                         f"got {dict(counts)}")
    dataset = Dataset.from_dict({
        "text": [representation(doc) for doc in docs],
        "label": [classes.index(label) for label in labels],
    })
    device = resolve_device(settings.device)
    model = load_sentence_transformer(resolve_model_name(canonical_name(settings.base_model)),
                                      device=str(device))
    if settings.pooling == "entity_start":
        use_entity_start_pooling(model)
    elif any(isinstance(module, EntityStartPooling) for module in model):
        raise ValueError(f"the base model {settings.base_model} pools at the entity markers: "
                         f"train it with pooling entity_start")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rag4re_embedder_run_") as run_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=run_dir,
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps or -1,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            warmup_steps=settings.warmup_ratio,
            batch_sampler=BatchSamplers.GROUP_BY_LABEL,
            seed=settings.seed,
            save_strategy="no",
            report_to="none",
            logging_steps=10,
            use_cpu=device.type == "cpu",
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                             loss=_loss(settings, model))
        result = trainer.train()
    seconds = time.perf_counter() - start
    losses = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history
              if "loss" in entry]
    output = Path(output)
    model.save_pretrained(str(output))
    summary = {
        **asdict(settings), "representation": str(representation),
        "base_model": canonical_name(settings.base_model),
        "negative_label": negative_label, "source": source, "sentences": len(docs),
        "held_out_sentences": held_out,
        "labels": {label: counts[label] for label in classes},
        "labels_left_out": sorted(label for label in classes if counts[label] < 2),
        "steps": int(trainer.state.global_step), "train_seconds": round(seconds, 1),
        "train_loss": float(result.training_loss), "loss_curve": losses,
    }
    srsly.write_json(output / TRAINING_FILE, summary)
    return summary
