"""Training the RCP model (``spacy-lmrc train-proposer``), with Hugging Face Accelerate.

The recipe of LMRC / ATLOP: AdamW with one learning rate for the encoder and another for the
new layers, linear warmup over the first ``warmup_ratio`` of the steps then linear decay,
gradient clipping, early stopping on dev pair-level F1 (at threshold 0.5, the paper's rule;
ties, as in early epochs where no pair passes 0.5, are broken by the F1 at the best threshold),
or with ``select_kept_fraction`` on dev pair recall at that kept fraction (the proposer is used
as a ranking cut, so the epoch that keeps most related pairs within the budget is the best).
Batches group documents of similar length (less padding), and bf16 autocast runs where the
hardware computes bf16 (``mixed_precision = "auto"``: a bf16 GPU, or a CPU with AMX or
AVX512-BF16); ``max_minutes`` stops before an epoch that would not finish in the budget.
The best epoch is kept in ``<output>/model-best``; after training, its threshold is chosen on
dev by the configured policy and stored with it. ``<output>/checkpoints/step-N`` (the layout of
:mod:`spacy_lmrc.checkpoints`) holds the last epoch's full state (weights, optimiser, scheduler,
RNG, history) so an interrupted run resumes with ``--resume``;
resuming with a larger ``training.epochs`` extends a finished run (the linear decay is then
recomputed over the new total, from the step reached).
The same code runs on one CPU, one GPU or, under ``accelerate launch``, several GPUs (each
process trains on its shard of every epoch and evaluates the whole dev set, so all processes
take the same early-stopping decision).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from confection import Config
from spacy.util import registry
from tqdm.auto import tqdm

from ..checkpoints import CHECKPOINTS_DIR, checkpoint_folders, load_state, save_checkpoint
from ..errors import InputError
from ..training_config import load_config as load_config  # re-exported for the CLI and bench
from ..training_config import settings_from_section
from ..util import bf16_autocast, bf16_is_native, resolve_device
from .model import PairScores, RCPModel, is_rcp_folder
from .threshold import best_f1_threshold, kept_fraction_threshold, pair_prf, recall_vs_kept

REPORT_THRESHOLDS = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)
#: kept fractions each epoch reports the recall at: the ATLOP peer's operating point (BRIEF
#: section 8) and the LMRC target's budget
REPORT_KEPT = (0.033, 0.15)
#: the m of the hints head's top-m recall of the gold relation on dev gold pairs
REPORT_TOP_M = (1, 3, 5, 10)
MIXED_PRECISION = ("auto", "no", "bf16")
#: the epoch records' fields that checkpoints written before pair_prf returned fractions
#: hold in percent (converted on ``--resume``)
PERCENT_BEFORE = ("dev_p", "dev_r", "dev_f1", "dev_kept_fraction", "dev_f1_tuned")


@dataclass
class TrainSettings:
    """The ``[training]`` section of the config."""

    seed: int = 66
    epochs: int = 30
    batch_size: int = 4
    encoder_lr: float = 3e-5
    head_lr: float = 1e-4
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    adam_eps: float = 1e-6
    weight_decay: float = 0.0
    patience: int = 5
    eval_batch_size: int = 8
    device: str = "cpu"
    mixed_precision: str = "auto"
    max_steps: int | None = None
    max_minutes: float | None = None
    group_by_length: bool = True
    ranking_weight: float = 0.0
    evidence_weight: float = 0.0
    select_kept_fraction: float | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TrainSettings:
        """The ``[training]`` section, checked: unknown keys and a bad precision are errors."""
        settings = settings_from_section(cls, section, "training")
        if settings.mixed_precision not in MIXED_PRECISION:
            raise InputError(f"must be one of {MIXED_PRECISION}, got "
                             f"{settings.mixed_precision!r}", field="training.mixed_precision")
        for name in ("ranking_weight", "evidence_weight"):
            if getattr(settings, name) < 0:
                raise InputError(f"must be >= 0, got {getattr(settings, name)!r}",
                                 field=f"training.{name}")
        kept = settings.select_kept_fraction
        if kept is not None and not 0 < kept <= 1:
            raise InputError(f"must be in (0, 1] or null, got {kept!r}",
                             field="training.select_kept_fraction")
        return settings

    def selection_key(self, record: dict[str, Any]) -> list[float]:
        """What ranks an epoch's dev record for ``model-best`` (larger is better): pair F1 at
        0.5 then at the best threshold, or, with ``select_kept_fraction``, the pair recall at
        that kept fraction first."""
        key = [record["dev_f1"], record["dev_f1_tuned"]]
        if self.select_kept_fraction is None:
            return key
        return [record["dev_recall_at_kept"][str(self.select_kept_fraction)], *key]


def _docs(reader, nlp) -> list:
    return [eg.reference for eg in reader(nlp)]


def _build_model(section: dict[str, Any], train_docs: list) -> RCPModel:
    """The ``[model]`` section's proposer: a saved one to train further, or a new head over
    an encoder (with ``relation_hints``, a hints head over the train split's relation types)."""
    encoder = str(section["encoder"])
    if is_rcp_folder(encoder):
        return RCPModel.from_pretrained(encoder)
    types = (sorted({rel["label"] for doc in train_docs for rel in doc._.relations})
             if section.get("relation_hints", False) else [])
    return RCPModel.from_encoder(encoder, emb_size=section.get("emb_size", 768),
                                 block_size=section.get("block_size", 64),
                                 window=section.get("window"),
                                 attention_dropout=section.get("attention_dropout"),
                                 relation_types=types)


def evaluate_scores(model: RCPModel, features: list, batch_size: int,
                    bf16: bool) -> tuple[np.ndarray, np.ndarray, list[PairScores]]:
    """Dev probabilities and labels of every candidate pair (concatenated), and the scores
    per document (for the hints)."""
    scores = model.predict_scores(features, batch_size=batch_size, bf16=bf16)
    flat = np.concatenate([s.relation for s in scores]) if scores else np.zeros(0)
    labels = np.array([x for f in features for x in f.labels], dtype=np.float32)
    return flat, labels, scores


def hint_recall(features: list, scores: list[PairScores], relation_types: list[str],
                top_m: tuple[int, ...] = REPORT_TOP_M) -> dict[int, float]:
    """Per m, the fraction of gold relations (pair, label) of the gold pairs whose label is
    among the pair's m best-scored types ({} without a hints head)."""
    if not relation_types or not features:
        return {}
    column = {label: i for i, label in enumerate(relation_types)}
    ranks = []
    for feats, doc_scores in zip(features, scores):
        for i, labels in enumerate(feats.pair_relations or []):
            if not labels or doc_scores.types is None:
                continue
            order = np.argsort(-doc_scores.types[i], kind="stable")
            rank_of = {int(c): r for r, c in enumerate(order)}
            ranks += [rank_of[column[label]] if label in column else len(column)
                      for label in labels]
    ranks_array = np.array(ranks)
    return {m: float((ranks_array < m).mean()) if len(ranks) else 0.0 for m in top_m}


@dataclass
class _Run:
    """What one training run works with: settings, Accelerate and the prepared objects."""

    settings: TrainSettings
    accelerator: Any
    model: Any
    optimizer: Any
    loader: Any
    scheduler: Any
    dev_feats: list
    generator: torch.Generator
    output: Path
    best_folder: Path

    @property
    def bf16(self) -> bool:
        """Whether training and evaluation compute in bf16 autocast."""
        precision = self.settings.mixed_precision
        if precision == "auto":
            return bf16_is_native(self.accelerator.device)
        return precision == "bf16"

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def out_of_steps(self, step: int) -> bool:
        """Whether ``step`` reached ``max_steps`` (never without one)."""
        return bool(self.settings.max_steps and step >= self.settings.max_steps)

    def out_of_time(self, elapsed: float, history: list[dict[str, Any]]) -> bool:
        """Whether another epoch, as long as the slowest so far, would pass ``max_minutes``."""
        if not self.settings.max_minutes or not history:
            return False
        epoch_seconds = max(h["train_seconds"] + h["eval_seconds"] for h in history)
        return elapsed + epoch_seconds > 60 * self.settings.max_minutes


def train_proposer(config: Config, output: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train, keep the best epoch, choose its threshold on dev; returns the final metrics."""
    output = Path(output)
    settings = TrainSettings.from_config(dict(config.get("training", {})))
    accelerator = _accelerator(settings)
    train_docs, dev_docs, policy = _corpora_and_policy(config)
    started = time.perf_counter()
    run = _prepare(settings, accelerator, _build_model(dict(config["model"]), train_docs),
                   train_docs, dev_docs, output)
    state = _resume_state(run) if resume else {
        "epoch": 0, "step": 0, "best": [-1.0, -1.0], "best_epoch": 0, "bad_epochs": 0,
        "history": [], "metrics_in": "fractions"}
    provenance = {"config": config.interpolate().to_str(), "settings": asdict(settings)}
    stopped = state["bad_epochs"] >= settings.patience
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        if stopped or run.out_of_steps(state["step"]):
            break
        if run.out_of_time(time.perf_counter() - started, state["history"]):
            accelerator.print(f"stopping before epoch {epoch}: training.max_minutes "
                              f"{settings.max_minutes} would be passed")
            break
        losses, train_seconds = _train_epoch(run, state, epoch)
        _evaluate_epoch(run, state, epoch, losses, train_seconds, provenance)
        stopped = state["bad_epochs"] >= settings.patience
        _save_checkpoint(run, state)
    return _choose_threshold(run, state, policy, len(dev_docs), output)


def _accelerator(settings: TrainSettings) -> Any:
    """Accelerate on the configured device, seeded (before the model's new layers exist)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # bf16 is the loop's own autocast (see _Run.bf16), not Accelerate's mixed precision: that
    # is process-wide state, and an LLM fine-tuned later in the same process needs another
    accelerator = Accelerator(cpu=resolve_device(settings.device).type == "cpu")
    set_seed(settings.seed)
    return accelerator


def _corpora_and_policy(config: Config) -> tuple[list, list, Any]:
    """The train and dev Docs of ``[corpora]`` and the ``[threshold]`` policy."""
    import spacy

    resolved = registry.resolve({"corpora": config["corpora"], "threshold": config["threshold"]})
    corpora, policy = resolved["corpora"], resolved["threshold"]
    for split in ("train", "dev"):
        if split not in corpora:
            raise InputError(f"the config needs a [corpora.{split}] reader", field="corpora")
    nlp = spacy.blank("en")
    train_docs, dev_docs = _docs(corpora["train"], nlp), _docs(corpora["dev"], nlp)
    if not train_docs or not dev_docs:
        raise InputError(f"empty corpus: {len(train_docs)} train and {len(dev_docs)} dev "
                         f"documents", field="corpora")
    return train_docs, dev_docs, policy


def _prepare(settings: TrainSettings, accelerator: Any, model: RCPModel, train_docs: list,
             dev_docs: list, output: Path) -> _Run:
    """Features of both splits, the shuffled loader, AdamW with two learning rates and the
    linear schedule, all prepared by Accelerate."""
    from transformers import get_linear_schedule_with_warmup

    quiet = not accelerator.is_main_process
    train_feats = [model.featurize(d, with_labels=True)
                   for d in tqdm(train_docs, desc="featurize train", disable=quiet)]
    dev_feats = [model.featurize(d, with_labels=True)
                 for d in tqdm(dev_docs, desc="featurize dev", disable=quiet)]
    train_feats = [f for f in train_feats if f.pairs]
    accelerator.print(f"train: {len(train_docs)} docs ({len(train_feats)} with >= 2 entities), "
                      f"{sum(len(f.pairs) for f in train_feats)} pairs; dev: {len(dev_docs)} docs, "
                      f"{sum(len(f.pairs) for f in dev_feats)} pairs; encoder window "
                      f"{model.window} wordpieces")

    generator = torch.Generator().manual_seed(settings.seed)
    loader = _loader(train_feats, settings, model, generator)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder_params = [p for n, p in trainable if n.startswith("encoder.")]
    head_params = [p for n, p in trainable if not n.startswith("encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": settings.encoder_lr},
         {"params": head_params, "lr": settings.head_lr}],
        eps=settings.adam_eps, weight_decay=settings.weight_decay)
    total_steps = settings.epochs * len(loader)
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(settings.warmup_ratio * total_steps), total_steps)
    prepared = accelerator.prepare(model, optimizer, loader, scheduler)
    return _Run(settings, accelerator, *prepared, dev_feats=dev_feats,
                generator=generator, output=output, best_folder=output / "model-best")


def _loader(train_feats: list, settings: TrainSettings, model: RCPModel,
            generator: torch.Generator | None = None) -> Any:
    """Shuffled batches; with ``group_by_length``, each batch holds documents of similar
    length (transformers' ``LengthGroupedSampler``: shuffled, then sorted within mega-batches
    of 50 batches), so little of a batch is padding."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = generator or torch.Generator().manual_seed(settings.seed)
    if not settings.group_by_length:
        return torch.utils.data.DataLoader(train_feats, batch_size=settings.batch_size,
                                           shuffle=True, collate_fn=model.collate,
                                           generator=generator)
    sampler = LengthGroupedSampler(settings.batch_size,
                                   lengths=[len(f.input_ids) for f in train_feats],
                                   generator=generator)
    return torch.utils.data.DataLoader(train_feats, batch_size=settings.batch_size,
                                       sampler=sampler, collate_fn=model.collate)


def _resume_state(run: _Run) -> dict[str, Any]:
    """Restore the last epoch's full state from the newest checkpoint; its trainer state."""
    folders = checkpoint_folders(run.output)
    if not folders:
        raise FileNotFoundError(f"--resume: no checkpoint in {run.output / CHECKPOINTS_DIR}")
    saved = load_state(folders[-1])
    weights = RCPModel.from_pretrained(folders[-1]).state_dict()
    run.accelerator.unwrap_model(run.model).load_state_dict(weights)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    run.generator.set_state(saved["loader_rng"])
    state = in_fractions(saved["trainer_state"])
    run.accelerator.print(f"resumed after epoch {state['epoch']} (step {state['step']})")
    return state


def in_fractions(state: dict[str, Any]) -> dict[str, Any]:
    """A trainer state with its dev metrics as fractions: states written before
    :func:`pair_prf` returned fractions (no ``metrics_in``) hold percent."""
    if state.get("metrics_in", "percent") == "percent":
        state["best"] = [value / 100 if value > 0 else value for value in state["best"]]
        for record in state["history"]:
            for key in PERCENT_BEFORE:
                record[key] /= 100
        state["metrics_in"] = "fractions"
    return state


def _train_epoch(run: _Run, state: dict[str, Any], epoch: int) -> tuple[list[float], float]:
    """One pass over the loader (or up to ``max_steps``); the losses and the seconds taken."""
    settings, model = run.settings, run.model
    model.train()
    started, losses = time.perf_counter(), []
    bar = tqdm(run.loader, desc=f"epoch {epoch}/{settings.epochs}", disable=not run.main)
    for batch in bar:
        with bf16_autocast(run.accelerator.device, run.bf16):
            loss = model(**batch, ranking_weight=settings.ranking_weight,
                         evidence_weight=settings.evidence_weight)["loss"]
        run.accelerator.backward(loss)
        if settings.max_grad_norm:
            run.accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
        losses.append(loss.item())
        state["step"] += 1
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if run.out_of_steps(state["step"]):
            break
    return losses, time.perf_counter() - started


def _kept_fractions(settings: TrainSettings) -> tuple[float, ...]:
    """The kept fractions each epoch reports the recall at: :data:`REPORT_KEPT` and the
    selection's own."""
    extra = settings.select_kept_fraction
    return REPORT_KEPT if extra is None or extra in REPORT_KEPT else (*REPORT_KEPT, extra)


def _evaluate_epoch(run: _Run, state: dict[str, Any], epoch: int, losses: list[float],
                    train_seconds: float, provenance: dict[str, Any]) -> None:
    """Dev pair metrics of the epoch into the history; ``model-best`` when it is the best.

    :meth:`TrainSettings.selection_key` decides: dev pair F1 at 0.5, and while it ties (early
    epochs: nothing above 0.5 yet) the F1 at the best threshold; or first the recall at
    ``select_kept_fraction``.
    """
    unwrapped = run.accelerator.unwrap_model(run.model)
    started = time.perf_counter()
    probs, labels, scores = evaluate_scores(unwrapped, run.dev_feats,
                                            run.settings.eval_batch_size, run.bf16)
    dev = pair_prf(probs, labels, 0.5)
    tuned = pair_prf(probs, labels, best_f1_threshold(probs, labels))
    record = {"epoch": epoch, "step": state["step"], "loss": float(np.mean(losses)),
              "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - started,
              "dev_p": dev["precision"], "dev_r": dev["recall"], "dev_f1": dev["f1"],
              "dev_kept_fraction": dev["kept_fraction"], "dev_f1_tuned": tuned["f1"],
              "dev_threshold_tuned": tuned["threshold"],
              "dev_recall_at_kept": {
                  str(f): pair_prf(probs, labels, kept_fraction_threshold(probs, f))["recall"]
                  for f in _kept_fractions(run.settings)},
              "dev_hint_recall": {str(m): r for m, r in hint_recall(
                  run.dev_feats, scores, unwrapped.settings.relation_types).items()}}
    state["history"].append(record)
    run.accelerator.print(_epoch_line(record, train_seconds))
    key = run.settings.selection_key(record)
    if key > state["best"]:
        state.update(best=key, best_epoch=epoch, bad_epochs=0)
        if run.main:
            unwrapped.settings.trained = True
            unwrapped.settings.training = {**provenance, "epoch": epoch, "dev": dev}
            unwrapped.save_pretrained(run.best_folder)
    else:
        state["bad_epochs"] += 1
    state["epoch"] = epoch


def _epoch_line(record: dict[str, Any], train_seconds: float) -> str:
    """One line per epoch: the pair scores at 0.5 and at the best threshold, the recall at
    the reported kept fractions, the hints' top-m recall."""
    at_kept = ", ".join(f"{100 * r:.1f}% at {100 * float(f):.1f}% kept"
                        for f, r in record["dev_recall_at_kept"].items())
    hints = ", ".join(f"top-{m} {100 * r:.1f}" for m, r in record["dev_hint_recall"].items())
    return (f"epoch {record['epoch']}: loss {record['loss']:.4f}  dev pair P "
            f"{100 * record['dev_p']:.2f} R {100 * record['dev_r']:.2f} F1 "
            f"{100 * record['dev_f1']:.2f} (threshold 0.5, kept "
            f"{100 * record['dev_kept_fraction']:.2f}% of pairs); best F1 "
            f"{100 * record['dev_f1_tuned']:.2f} at threshold "
            f"{record['dev_threshold_tuned']:.3f}; recall {at_kept}"
            + (f"; hints {hints}" if hints else "") + f"  train {train_seconds:.0f}s")


def _save_checkpoint(run: _Run, state: dict[str, Any]) -> None:
    """The full state (weights, optimiser, scheduler, RNG) and the trainer state, so
    ``--resume`` continues after this epoch; only the newest checkpoint is kept."""
    run.accelerator.wait_for_everyone()
    if run.main:
        save_checkpoint(run.output, state["step"], run.accelerator.unwrap_model(run.model),
                        {"optimizer": run.optimizer.state_dict(),
                         "scheduler": run.scheduler.state_dict(),
                         "rng": torch.get_rng_state(), "loader_rng": run.generator.get_state(),
                         "trainer_state": state}, keep=1)
    run.accelerator.wait_for_everyone()


def _choose_threshold(run: _Run, state: dict[str, Any], policy: Any, dev_docs: int,
                      output: Path) -> dict[str, Any]:
    """The policy's threshold for the best epoch, stored with it; the final metrics, also
    written to ``<output>/metrics.json``."""
    if not run.best_folder.exists():
        raise RuntimeError(f"no epoch finished, nothing saved in {run.best_folder}")
    best = RCPModel.from_pretrained(run.best_folder, device=run.accelerator.device)
    probs, labels, _ = evaluate_scores(best, run.dev_feats, run.settings.eval_batch_size,
                                       run.bf16)
    threshold = float(policy(probs, labels))
    metrics = {
        "best_epoch": state["best_epoch"],
        "dev_docs": dev_docs,
        "dev_pairs": int(len(probs)),
        "dev_relation_pairs": int(labels.sum()),
        "threshold": threshold,
        "at_0.5": pair_prf(probs, labels, 0.5),
        "at_threshold": pair_prf(probs, labels, threshold),
        "recall_vs_kept": recall_vs_kept(
            probs, labels, sorted(set(REPORT_THRESHOLDS) | {threshold}, reverse=True)),
        "history": state["history"],
    }
    if run.main:
        best.settings.threshold = threshold
        best.settings.training["threshold_metrics"] = {
            k: metrics[k] for k in ("at_0.5", "at_threshold")}
        best.save_pretrained(run.best_folder)
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    chosen = metrics["at_threshold"]
    run.accelerator.print(
        f"best epoch {metrics['best_epoch']}; threshold {threshold:.4f}: dev pair "
        f"P {100 * chosen['precision']:.2f} R {100 * chosen['recall']:.2f} "
        f"F1 {100 * chosen['f1']:.2f}, kept {100 * chosen['kept_fraction']:.2f}% of "
        f"{metrics['dev_pairs']} pairs")
    run.accelerator.print(f"model: {run.best_folder}")
    return metrics
