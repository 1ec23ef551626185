"""The LLM relation classifier in-process (HFBackend) and on a llama.cpp server (OpenAIBackend):
same relations? how fast at 1, 4 and 16 concurrent requests? (figures for BENCHMARKS.md)

The pipeline's earlier components (the proposer) run once; then its ``llm_relation_classifier``
answers the same documents through its own backend (``HFBackend``, the fine-tuned classifier
folder, run in ``--dtype``) and through ``OpenAIBackend`` on a llama.cpp server serving the
same weights exported unquantized in that type (``spacy-lmrc export-gguf``, float32 by
default), started and stopped here: llama-cpp-python's ``python -m llama_cpp.server``, or with
``--server-binary`` llama.cpp's C++ ``llama-server`` with as many slots as the highest
concurrency. Reported: relations of each (count,
identical, every difference with both backends' answers to that pair, so it can be
explained: a probability on either side of the task's ``min_probability`` or threshold,
another name at a near tie, a tokenisation), docs/s of the classifier stage per backend and
concurrency (the server's CPU threads: ``--threads``), requests (pairs and
``min_probability`` branches) and the server's prompt-cache hits: prompt tokens reused from a
cached prompt and prompt tokens evaluated (llama-cpp-python: its log's ``prefix-match hit``
lines; ``llama-server``: the ``timings`` of every response, ``cache_n`` and ``prompt_n``).

    python bench/bench_server.py --pipeline ../models/lmrc_long --dev ../models/dev100.spacy \\
        --n-docs 20 --out ../models/bench/server.json [--server-binary PATH/llama-server]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RC = "llm_relation_classifier"
CACHE_LINE = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens")


def relation_keys(docs: list[Any]) -> set[tuple[int, int, int, str]]:
    return {(i, rel["head"], rel["tail"], rel["label"])
            for i, doc in enumerate(docs) for rel in doc._.relations}


def run_classifier(nlp: Any, docs: list[Any], backend: Any) -> tuple[list[Any], float, dict]:
    """The classifier on copies of ``docs`` with ``backend``, one document per call as a stream
    runs: the annotated docs, seconds, and every pair's answer by (doc, head, tail)."""
    component = nlp.get_pipe(RC)
    component.backend = backend
    component.reset_stats()
    answers: dict[tuple[int, int | None, int | None], Any] = {}
    current = [0]
    answer = type(backend).answer

    def recording(requests, prompt_format, stats=None):
        given = answer(backend, requests, prompt_format, stats)
        for request, request_answers in zip(requests, given):
            for query, pair_answer in zip(request.queries, request_answers):
                answers[(current[0], query.head_id, query.tail_id)] = pair_answer
        return given

    backend.answer = recording
    docs = [doc.copy() for doc in docs]
    start = time.perf_counter()
    for i, doc in enumerate(docs):
        current[0] = i
        component(doc)
    seconds = time.perf_counter() - start
    del backend.answer
    return docs, seconds, answers


def cache_hits(log: Path, start: int) -> dict[str, int]:
    """Prompt tokens the server reused from its cache, and evaluated, after byte ``start``."""
    text = log.read_bytes()[start:].decode(errors="replace")
    hits = [(int(a), int(b)) for a, b in CACHE_LINE.findall(text)]
    return {"requests_logged": len(hits), "cached_tokens": sum(a for a, _ in hits),
            "evaluated_tokens": sum(b for _, b in hits)}


def count_response_cache(backend: Any) -> Counter:
    """Sum, over the backend's completions from here on, the prompt tokens ``llama-server``
    reports as reused from a slot's cache (``timings.cache_n``) and as evaluated
    (``prompt_n``); requests run on several threads, so the sums take a lock."""
    counts: Counter = Counter()
    lock = threading.Lock()
    create = backend.client.completions.create

    def recording(**kwargs: Any) -> Any:
        response = create(**kwargs)
        timings = (response.model_extra or {}).get("timings") or {}
        with lock:
            counts["requests_logged"] += bool(timings)
            counts["cached_tokens"] += int(timings.get("cache_n", 0))
            counts["evaluated_tokens"] += int(timings.get("prompt_n", 0))
        return response

    backend.client.completions.create = recording
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", required=True, help="a saved pipeline with " + RC)
    parser.add_argument("--dev", required=True, help="dev documents (.spacy)")
    parser.add_argument("--n-docs", type=int, default=20)
    parser.add_argument("--gguf", help="the served model (default: export the classifier)")
    parser.add_argument("--dtype", default="float32",
                        help="the weights' type, exported and in process (float32, bfloat16)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2, help="the server's CPU threads")
    parser.add_argument("--n-ctx", type=int, default=8192, help="the server's context")
    parser.add_argument("--top-logprobs", type=int, default=10)
    parser.add_argument("--server-binary", help="llama.cpp's llama-server (default: "
                        "llama-cpp-python's server)")
    parser.add_argument("--out", type=Path, help="write the results here (JSON)")
    args = parser.parse_args()

    import spacy

    from spacy_lmrc.backends.openai import OpenAIBackend
    from spacy_lmrc.corpus.readers import read_docbin
    from spacy_lmrc.export import export_gguf
    from spacy_lmrc.llama_server import llama_server

    nlp = spacy.load(args.pipeline)
    component = nlp.get_pipe(RC)
    hf_backend = component.backend
    hf_backend.dtype_name = args.dtype  # the served weights' precision (auto may pick bf16)
    gold = read_docbin(args.dev, nlp, first=args.n_docs)
    with nlp.select_pipes(disable=[RC]):
        docs = list(nlp.pipe(gold))  # the proposer's candidates, once for both backends
    results: dict[str, Any] = {"pipeline": args.pipeline, "documents": len(docs),
                               "task": {k: v for k, v in component.task.get_config().items()
                                        if k in ("min_probability", "allow_none", "fusion")}}

    run_classifier(nlp, docs[:1], hf_backend)  # warm: the model is loaded now
    hf_docs, seconds, hf_answers = run_classifier(nlp, docs, hf_backend)
    results["hf"] = {"seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds, 3),
                     "relations": len(relation_keys(hf_docs)), "usage": hf_backend.usage()}
    print(f"HFBackend: {len(docs) / seconds:.3f} docs/s, "
          f"{results['hf']['relations']} relations", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(args.gguf) if args.gguf else export_gguf(
            component.classifier.path if component.classifier else hf_backend.model_name,
            Path(tmp) / "model.gguf", dtype=args.dtype)
        log = Path(tmp) / "server.log"
        with llama_server(gguf, log, alias="rc", n_ctx=args.n_ctx, n_threads=args.threads,
                          binary=args.server_binary,
                          parallel=max(args.concurrency)) as url:
            results["server"] = {}
            results["served_by"] = {
                "server": "llama-server" if args.server_binary else "llama_cpp.server",
                "threads": args.threads, "n_ctx": args.n_ctx,
                "slots": max(args.concurrency) if args.server_binary else 1}
            for concurrency in args.concurrency:
                backend = OpenAIBackend(url, "rc", concurrency=concurrency, timeout=600.0,
                                        top_logprobs=args.top_logprobs)
                start = log.stat().st_size
                response_cache = count_response_cache(backend) if args.server_binary else None
                served_docs, seconds, answers = run_classifier(nlp, docs, backend)
                served = relation_keys(served_docs)
                run = {"seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds, 3),
                       "relations": len(served), "usage": backend.usage(),
                       "parse": component.stats.to_dict(),
                       "cache": dict(response_cache) if args.server_binary
                       else cache_hits(log, start)}
                results["server"][str(concurrency)] = run
                print(f"server, {concurrency} concurrent: {run['docs_per_s']} docs/s, "
                      f"{len(served)} relations, cache {run['cache']}", flush=True)
            compare(results, relation_keys(hf_docs), served, hf_answers, answers)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


def compare(results: dict, hf: set, served: set, hf_answers: dict, answers: dict) -> None:
    """Identical relations, and every difference with both answers to its pair."""
    differences = []
    for doc, head, tail, label in sorted(hf ^ served):
        differences.append({"doc": doc, "head": head, "tail": tail, "label": label,
                            "only_in": "hf" if (doc, head, tail, label) in hf else "server",
                            "hf_answer": hf_answers.get((doc, head, tail)),
                            "server_answer": answers.get((doc, head, tail))})
    results["comparison"] = {"hf": len(hf), "server": len(served), "identical": len(hf & served),
                             "differences": differences,
                             "differing_pairs": len({(d["doc"], d["head"], d["tail"])
                                                     for d in differences}),
                             "answer_names_differ": sum(
                                 [n for n, _ in hf_answers[key]] != [n for n, _ in answers[key]]
                                 for key in hf_answers if key in answers)}
    counts = Counter(d["only_in"] for d in differences)
    print(f"relations: HF {len(hf)}, server {len(served)}, identical {len(hf & served)}, "
          f"only HF {counts['hf']}, only server {counts['server']}", flush=True)


if __name__ == "__main__":
    main()
