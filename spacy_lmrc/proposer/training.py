"""Training the RCP model (``spacy-lmrc train-proposer``), with Hugging Face Accelerate.

The recipe of LMRC / ATLOP: AdamW with one learning rate for the encoder and another for the
new layers, linear warmup over the first ``warmup_ratio`` of the steps then linear decay,
gradient clipping, early stopping on dev pair-level F1 (at threshold 0.5, the paper's rule;
ties, as in early epochs where no pair passes 0.5, are broken by the F1 at the best threshold).
The best epoch is kept in ``<output>/model-best``; after training, its threshold is chosen on
dev by the configured policy and stored with it. ``<output>/checkpoint`` holds the last epoch's
full state (weights, optimiser, scheduler, RNG) so an interrupted run resumes with ``--resume``;
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

from ..errors import InputError
from ..util import resolve_device
from .model import RCPModel, is_rcp_folder
from .threshold import best_f1_threshold, pair_prf, recall_vs_kept

REPORT_THRESHOLDS = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)


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
    mixed_precision: str = "no"
    max_steps: int | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TrainSettings:
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown setting(s) {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}", field="training")
        settings = cls(**section)
        if settings.mixed_precision not in ("no", "bf16"):
            raise InputError(f"must be 'no' or 'bf16', got {settings.mixed_precision!r}",
                             field="training.mixed_precision")
        return settings


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a ``.cfg`` file with spaCy-style dotted overrides (``{"training.epochs": 3}``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    return Config().from_disk(path, overrides=overrides or {}, interpolate=True)


def _docs(reader, nlp) -> list:
    return [eg.reference for eg in reader(nlp)]


def _build_model(section: dict[str, Any]) -> RCPModel:
    encoder = str(section["encoder"])
    if is_rcp_folder(encoder):
        return RCPModel.from_pretrained(encoder)
    return RCPModel.from_encoder(encoder, emb_size=section.get("emb_size", 768),
                                 block_size=section.get("block_size", 64),
                                 window=section.get("window"))


def evaluate(model: RCPModel, features: list, batch_size: int,
             bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    """Dev probabilities and labels of every candidate pair, concatenated."""
    probs = model.predict_proba(features, batch_size=batch_size, bf16=bf16)
    flat = np.concatenate(probs) if probs else np.zeros(0)
    labels = np.array([x for f in features for x in f.labels], dtype=np.float32)
    return flat, labels


def train_proposer(config: Config, output: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train, keep the best epoch, choose its threshold on dev; returns the final metrics."""
    import spacy
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    output = Path(output)
    settings = TrainSettings.from_config(dict(config.get("training", {})))
    use_cpu = resolve_device(settings.device).type == "cpu"
    if settings.mixed_precision == "bf16" and use_cpu:
        raise InputError("'bf16' needs CUDA; use 'no' on CPU", field="training.mixed_precision")
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=settings.mixed_precision)
    set_seed(settings.seed)
    main = accelerator.is_main_process
    bf16 = settings.mixed_precision == "bf16"

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

    model = _build_model(dict(config["model"]))
    train_feats = [model.featurize(d, with_labels=True)
                   for d in tqdm(train_docs, desc="featurize train", disable=not main)]
    dev_feats = [model.featurize(d, with_labels=True)
                 for d in tqdm(dev_docs, desc="featurize dev", disable=not main)]
    train_feats = [f for f in train_feats if f.pairs]
    accelerator.print(f"train: {len(train_docs)} docs ({len(train_feats)} with >= 2 entities), "
                      f"{sum(len(f.pairs) for f in train_feats)} pairs; dev: {len(dev_docs)} docs, "
                      f"{sum(len(f.pairs) for f in dev_feats)} pairs; encoder window "
                      f"{model.window} wordpieces")

    generator = torch.Generator().manual_seed(settings.seed)
    loader = torch.utils.data.DataLoader(train_feats, batch_size=settings.batch_size,
                                         shuffle=True, collate_fn=model.collate,
                                         generator=generator)
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
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": [-1.0, -1.0], "best_epoch": 0,
                             "bad_epochs": 0, "history": []}
    checkpoint = output / "checkpoint"
    if resume:
        if not (checkpoint / "trainer_state.json").exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint}")
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        accelerator.print(f"resumed after epoch {state['epoch']} (step {state['step']})")

    provenance = {"config": config.interpolate().to_str(), "settings": asdict(settings)}
    stopped = state["bad_epochs"] >= settings.patience
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        if stopped or (settings.max_steps and state["step"] >= settings.max_steps):
            break
        model.train()
        started, losses = time.perf_counter(), []
        bar = tqdm(loader, desc=f"epoch {epoch}/{settings.epochs}", disable=not main)
        for batch in bar:
            loss = model(**batch)["loss"]
            accelerator.backward(loss)
            if settings.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            state["step"] += 1
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if settings.max_steps and state["step"] >= settings.max_steps:
                break
        train_seconds = time.perf_counter() - started

        unwrapped = accelerator.unwrap_model(model)
        started = time.perf_counter()
        probs, labels = evaluate(unwrapped, dev_feats, settings.eval_batch_size, bf16)
        dev = pair_prf(probs, labels, 0.5)
        tuned = pair_prf(probs, labels, best_f1_threshold(probs, labels))
        record = {"epoch": epoch, "step": state["step"], "loss": float(np.mean(losses)),
                  "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - started,
                  "dev_p": dev["precision"], "dev_r": dev["recall"], "dev_f1": dev["f1"],
                  "dev_kept_fraction": dev["kept_fraction"], "dev_f1_tuned": tuned["f1"],
                  "dev_threshold_tuned": tuned["threshold"]}
        state["history"].append(record)
        accelerator.print(
            f"epoch {epoch}: loss {record['loss']:.4f}  dev pair P {dev['precision']:.2f} "
            f"R {dev['recall']:.2f} F1 {dev['f1']:.2f} (threshold 0.5, kept "
            f"{dev['kept_fraction']:.2f}% of pairs); best F1 {tuned['f1']:.2f} at threshold "
            f"{tuned['threshold']:.3f}  train {train_seconds:.0f}s")
        # dev pair F1 at 0.5 decides; while it ties (early epochs: nothing above 0.5 yet), the
        # F1 at the best threshold does
        if [dev["f1"], tuned["f1"]] > state["best"]:
            state.update(best=[dev["f1"], tuned["f1"]], best_epoch=epoch, bad_epochs=0)
            if main:
                unwrapped.settings.trained = True
                unwrapped.settings.training = {**provenance, "epoch": epoch, "dev": dev}
                unwrapped.save_pretrained(output / "model-best")
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        stopped = state["bad_epochs"] >= settings.patience
        accelerator.wait_for_everyone()
        accelerator.save_state(str(checkpoint))
        if main:
            (checkpoint / "trainer_state.json").write_text(json.dumps(state, indent=2))
        accelerator.wait_for_everyone()

    if not (output / "model-best").exists():
        raise RuntimeError(f"no epoch finished, nothing saved in {output / 'model-best'}")
    best = RCPModel.from_pretrained(output / "model-best", device=accelerator.device)
    probs, labels = evaluate(best, dev_feats, settings.eval_batch_size, bf16)
    threshold = float(policy(probs, labels))
    metrics = {
        "best_epoch": state["best_epoch"],
        "dev_docs": len(dev_docs),
        "dev_pairs": int(len(probs)),
        "dev_relation_pairs": int(labels.sum()),
        "threshold": threshold,
        "at_0.5": pair_prf(probs, labels, 0.5),
        "at_threshold": pair_prf(probs, labels, threshold),
        "recall_vs_kept": recall_vs_kept(
            probs, labels, sorted(set(REPORT_THRESHOLDS) | {threshold}, reverse=True)),
        "history": state["history"],
    }
    if main:
        best.settings.threshold = threshold
        best.settings.training["threshold_metrics"] = {
            k: metrics[k] for k in ("at_0.5", "at_threshold")}
        best.save_pretrained(output / "model-best")
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    accelerator.print(
        f"best epoch {metrics['best_epoch']}; threshold {threshold:.4f}: dev pair "
        f"P {metrics['at_threshold']['precision']:.2f} R {metrics['at_threshold']['recall']:.2f} "
        f"F1 {metrics['at_threshold']['f1']:.2f}, kept "
        f"{metrics['at_threshold']['kept_fraction']:.2f}% of {metrics['dev_pairs']} pairs")
    accelerator.print(f"model: {output / 'model-best'}")
    return metrics

