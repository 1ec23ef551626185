"""LMRC through a real llama.cpp server: a tiny Llama exported to GGUF (the export checked by
reading it back with transformers), served on 127.0.0.1 (started and stopped here) by
``python -m llama_cpp.server`` and, where ``LLAMA_SERVER`` names a built binary, by llama.cpp's
C++ ``llama-server`` (4 slots), answering the ``llm_relation_classifier`` component's
structured requests with GBNF-constrained answers."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gguf", reason="the GGUF export needs the gguf package ([models])")

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport",
          "P17": "country"}


def test_export_reads_back_as_the_same_model(tiny_llama, tmp_path):
    """transformers reads the GGUF back (undoing llama.cpp's rotary layout): the same tokens
    and the same logits; the pre-tokenizer is llama.cpp's name for SmolLM2's."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spacy_lmrc.errors import InputError
    from spacy_lmrc.export import export_gguf

    export_gguf(tiny_llama, tmp_path / "tiny.gguf", dtype="float32")
    fields = gguf.GGUFReader(tmp_path / "tiny.gguf").fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    original = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf").eval()
    text = "Name the relations.\nText: Ada Lovelace was born in 1815.\n\nAda (PER) | 1815 =>"
    ids = AutoTokenizer.from_pretrained(tiny_llama)(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")(text)["input_ids"] == ids
    with torch.no_grad():
        expected = original(torch.tensor([ids])).logits
        assert torch.allclose(loaded(torch.tensor([ids])).logits, expected, atol=1e-5)
    with pytest.raises(InputError, match="unknown dtype"):
        export_gguf(tiny_llama, tmp_path / "x.gguf", dtype="int4")


def test_export_gguf_command(tiny_llama, tmp_path):
    from typer.testing import CliRunner

    from spacy_lmrc.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["export-gguf", tiny_llama, str(tmp_path / "tiny.gguf"),
                               "--dtype", "bfloat16"])
    assert done.exit_code == 0 and (tmp_path / "tiny.gguf").stat().st_size > 0
    refused = runner.invoke(app, ["export-gguf", str(tmp_path), str(tmp_path / "x.gguf")])
    assert refused.exit_code == 1 and "error:" in refused.output


@pytest.fixture(scope="module", params=["llama_cpp.server", "llama-server"])
def llama_server(request, tiny_llama, tmp_path_factory):
    """The tiny Llama as GGUF, served by either server; yields (API root, server). The server
    is stopped whatever the tests do."""
    pytest.importorskip("openai", reason="the OpenAI backend needs the openai package ([serve])")
    binary = None
    if request.param == "llama-server":
        binary = os.environ.get("LLAMA_SERVER")
        if not binary or not Path(binary).is_file():
            pytest.skip("LLAMA_SERVER does not name a llama-server binary (built from "
                        "llama.cpp's sources: cmake --build build --target llama-server)")
    else:
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip "
                            "install 'spacy-lmrc[serve]' (it builds llama.cpp from source)")
    from spacy_lmrc.export import export_gguf
    from spacy_lmrc.llama_server import llama_server as serve

    folder = tmp_path_factory.mktemp("llama_server")
    gguf = export_gguf(tiny_llama, folder / "tiny.gguf")
    with serve(gguf, folder / "server.log", alias="tiny", n_ctx=2048, binary=binary,
               parallel=4) as url:
        yield url, request.param


def classifier_pipeline(backend: dict, min_probability: float | None):
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCTask.v1", "labels": LABELS, "pair_source": "auto",
                 "allow_none": True, "min_probability": min_probability,
                 "prompt_format": {"@misc": "spacy_lmrc.CompactFormat.v1"}},
        "backend": backend})
    return nlp


@pytest.mark.integration
def test_tokens_the_server_reads_are_the_in_process_ones(llama_server, tiny_llama, toy_doc):
    """The text prompt (prefix + query) becomes the ids HFBackend encodes apart."""
    import json

    from spacy_lmrc.llm.loading import load_tokenizer
    from spacy_lmrc.llm.sequences import encode_request

    url, server = llama_server
    endpoint, field = ((url.removesuffix("/v1") + "/extras/tokenize", "input")
                       if server == "llama_cpp.server"
                       else (url.removesuffix("/v1") + "/tokenize", "content"))

    nlp = classifier_pipeline({"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_llama}, None)
    task = nlp.get_pipe("llm_relation_classifier").task
    request, _ = task.build_request(toy_doc)
    encoded = encode_request(load_tokenizer(tiny_llama), task.prompt_format, request)
    prefix = task.prompt_format.prefix(request)
    for query, query_ids in zip(request.queries[:3], encoded.query_ids):
        body = json.dumps({field: prefix + task.prompt_format.query(query)}).encode()
        answer = urllib.request.urlopen(urllib.request.Request(
            endpoint, body, {"Content-Type": "application/json"}), timeout=30).read()
        assert json.loads(answer)["tokens"] == encoded.prefix_ids + query_ids


@pytest.mark.integration
@pytest.mark.parametrize("min_probability", [None, 0.05])
def test_lmrc_through_llama_server(llama_server, tiny_llama, toy_doc, min_probability):
    """Every pair answered with relation names of the space (0 out of set), probabilities in
    (0, 1], and the greedy names those of the in-process backend on the same weights (their
    probabilities differ here: a random model spreads its mass over the whole vocabulary,
    beyond the top tokens a server returns)."""
    backend = {"@misc": "spacy_lmrc.OpenAIBackend.v2", "base_url": llama_server[0],
               "model": "tiny", "concurrency": 4, "timeout": 120.0}
    nlp = classifier_pipeline(backend, min_probability)
    component = nlp.get_pipe("llm_relation_classifier")
    request, pairs = component.task.build_request(toy_doc)
    served = component.backend.answer([request], component.task.prompt_format,
                                      component.stats)[0]
    names = set(request.answer_space) | {request.none_answer}
    assert len(served) == len(pairs) == 12
    assert all(answer for answer in served)
    assert all(name in names and 0.0 < p <= 1.0 + 1e-6 for answer in served for name, p in answer)
    assert component.stats.counts["out_of_set"] == 0
    usage = component.backend.usage()
    assert usage["requests"] == 12 and "timed_out" not in usage and "no_logprobs" not in usage

    if min_probability is None:  # greedy: the argmax of the same weights
        in_process = classifier_pipeline({"@misc": "spacy_lmrc.HFBackend.v1",
                                          "model": tiny_llama}, None)
        component_hf = in_process.get_pipe("llm_relation_classifier")
        local = component_hf.backend.answer([request], component_hf.task.prompt_format)[0]
        assert [[name for name, _ in a] for a in served] == [[name for name, _ in a]
                                                             for a in local]

    doc = nlp(toy_doc)
    assert component.stats.counts["out_of_set"] == 0
    assert all(rel["label"] in LABELS for rel in doc._.relations)
