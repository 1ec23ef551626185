"""OpenAIBackend against a real HTTP server on 127.0.0.1 that answers as scripted: the
constraint and prompts it receives, the probabilities read from its log-probabilities, the
``min_probability`` search, each failure (nothing listening, a timeout, a refused request, an
answer outside the space) ending in a clear error or a counted skip, and a document longer
than the server's context asked over windows measured with the classifier's tokenizer."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import spacy

pytest.importorskip("openai", reason="the OpenAI backend needs the openai package ([serve])")

from spacy_lmrc.backends.hf import ANSWER_ROOM, HFBackend  # noqa: E402
from spacy_lmrc.backends.openai import AnswerLanguage, OpenAIBackend  # noqa: E402
from spacy_lmrc.classifier.model import RCModel  # noqa: E402
from spacy_lmrc.errors import InputError  # noqa: E402
from spacy_lmrc.llm.formats import CompactFormat  # noqa: E402
from spacy_lmrc.llm.parsing import ParseStats  # noqa: E402
from spacy_lmrc.llm.requests import PairQuery, RelationRequest  # noqa: E402
from spacy_lmrc.tasks.lmrc import LMRCTask  # noqa: E402

from .test_windows import CANDIDATES, LABELS, _input, long_record  # noqa: E402

NAMES = ["country", "country of citizenship", "place of birth", "place of death"]
FORMAT = CompactFormat()


def completion(tokens: list[str], tops: list[dict[str, float]] | None = None) -> dict:
    """A completions response spelling ``tokens``, with per-step best tokens (probabilities)."""
    logprobs = None
    if tops is not None:
        logprobs = {"tokens": tokens, "token_logprobs": [math.log(t[k]) for t, k in
                                                         zip(tops, tokens)],
                    "top_logprobs": [{k: math.log(v) for k, v in t.items()} for t in tops],
                    "text_offset": [0] * len(tokens)}
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "stop",
                         "logprobs": logprobs}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(tokens), "total_tokens": 8}}


Responder = Callable[[dict], "tuple[int, dict | str, float]"]


@contextmanager
def server(respond: Responder) -> Iterator[tuple[str, list[dict]]]:
    """A threaded HTTP server on a free 127.0.0.1 port: ``respond(body)`` gives the status, the
    JSON (or raw text) answer and a delay; yields the base URL and the bodies received."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            status, answer, delay = respond(body)
            time.sleep(delay)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", received
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_request(min_probability: float | None = None) -> RelationRequest:
    return RelationRequest(
        text="Ada Lovelace was born in London.",
        queries=[PairQuery("Ada Lovelace", "London", "PER", "LOC"),
                 PairQuery("London", "Ada Lovelace", "LOC", "PER")],
        answer_space=NAMES, none_answer="None", min_probability=min_probability)


def backend(url: str, **settings) -> OpenAIBackend:
    return OpenAIBackend(base_url=url, model="m", **{"max_retries": 0, **settings})


def test_language_constraints_and_parsing():
    language = AnswerLanguage(NAMES + ["None"], ";", "None", True, 3)
    assert language.gbnf().splitlines() == [
        'root ::= " None" | name (";" name){0,2}',
        'name ::= " country" | " country of citizenship" | " place of birth" '
        '| " place of death"']
    assert language.regex() == ("( None|( country| country of citizenship| place of birth"
                                 "| place of death)(;( country| country of citizenship"
                                 "| place of birth| place of death)){0,2})")
    assert AnswerLanguage(["a.b (c)"], ";", None, False, 4).regex() == r"(( a\.b \(c\)))"
    assert language.parse(" place of birth; country") == (["place of birth", "country"], [])
    assert language.parse(" Paris; country") == (["country"], [" Paris"])
    assert language.parse(" None; country") == (["country"], [" None"])
    assert language.is_prefix(" place of b") and language.is_prefix(" country;")
    assert not language.is_prefix(" None;") and not language.is_prefix(" plac e")
    assert language.continuations(" country") == [" of citizenship"]
    # renormalised over the valid tokens: the end and " of" after " country", not "!"
    steps = language.renormalise(" country", {"": math.log(0.3), " of": math.log(0.3),
                                              "!": math.log(0.4)})
    assert set(steps) == {"", " of"}
    assert math.exp(steps[""]) == pytest.approx(0.5)
    single = AnswerLanguage(["a", "b"], ";", None, False, 4)
    assert single.gbnf() == 'root ::= name\nname ::= " a" | " b"'


def test_answers_with_probabilities_and_shared_prefix():
    def respond(body):
        return 200, completion([" place", " of", " birth"],
                               [{" place": 0.8, " country": 0.1, "!": 0.1},
                                {" of": 1.0}, {" birth": 0.6, " death": 0.4}]), 0.0

    with server(respond) as (url, received):
        answers = backend(url, concurrency=2).answer([make_request()], FORMAT, ParseStats())
    (first, second), = answers
    assert [name for name, _ in first] == ["place of birth"]
    # renormalised over the valid tokens: 0.8/0.9 x 1 x 0.6, the end certain after a leaf
    assert first[0][1] == pytest.approx(0.8 / 0.9 * 0.6)
    prefix = FORMAT.prefix(make_request())
    assert len(received) == 2 and all(body["prompt"].startswith(prefix) for body in received)
    assert {body["prompt"] for body in received} == {
        prefix + FORMAT.query(query) for query in make_request().queries}
    assert received[0]["grammar"].startswith('root ::= " None" | name')
    assert received[0]["temperature"] == 0.0 and received[0]["logprobs"] == 10


def llama_server_completion(tokens: list[str], tops: list[dict[str, float]]) -> dict:
    """The same response as :func:`completion` in the shape llama.cpp's ``llama-server`` gives
    ``/v1/completions``: ``logprobs.content``, one entry per step, best alternatives listed."""
    response = completion(tokens)
    response["choices"][0]["logprobs"] = {"content": [
        {"id": i, "token": token, "logprob": math.log(top[token]), "bytes": [],
         "top_logprobs": [{"id": j, "token": k, "logprob": math.log(v), "bytes": []}
                          for j, (k, v) in enumerate(sorted(top.items(),
                                                            key=lambda kv: -kv[1]))]}
        for i, (token, top) in enumerate(zip(tokens, tops))]}
    response["timings"] = {"cache_n": 5, "prompt_n": 2}
    return response


def test_llama_server_s_logprobs_shape_gives_the_same_probabilities():
    tokens = [" place", " of", " birth"]
    tops = [{" place": 0.8, " country": 0.1, "!": 0.1}, {" of": 1.0},
            {" birth": 0.6, " death": 0.4}]
    results = []
    for shape in (completion, llama_server_completion):
        with server(lambda body, shape=shape: (200, shape(tokens, tops), 0.0)) as (url, _):
            results.append(backend(url).answer([make_request()], FORMAT, ParseStats()))
    legacy, chat_shaped = results
    assert [[(n, pytest.approx(p)) for n, p in answer] for answer in chat_shaped[0]] == [
        [(n, pytest.approx(p)) for n, p in answer] for answer in legacy[0]]
    assert chat_shaped[0][0][0][1] == pytest.approx(0.8 / 0.9 * 0.6)


def test_min_probability_branches_find_every_name_above_it():
    """Greedy " country" (it stops: a longer name goes on, so what follows is asked), and the
    alternative " place" (0.3) opens a branch that finds place of birth (0.3 x 0.6)."""

    def respond(body):
        prompt = body["prompt"]
        if prompt.endswith("=>"):
            return 200, completion([" country"], [{" country": 0.6, " place": 0.3, "x": 0.1}]), 0
        if prompt.endswith("=> country"):  # forced on: the stop's share is in the top tokens
            return 200, completion([" of", " citizenship"],
                                   [{"": 0.5, " of": 0.5}, {" citizenship": 1.0}]), 0
        assert prompt.endswith("=> place")
        assert body["grammar"] == 'root ::= " of birth" | " of death"'
        return 200, completion([" of", " birth"], [{" of": 1.0},
                                                   {" birth": 0.6, " death": 0.4}]), 0

    request = make_request(min_probability=0.1)
    request.queries = request.queries[:1]
    with server(respond) as (url, received):
        client = backend(url)
        (answer,), = client.answer([request], FORMAT, ParseStats())
    probabilities = dict(answer)
    p_country = 0.6 / 0.9  # " country" renormalised over the valid first tokens
    p_place = 0.3 / 0.9
    assert probabilities["country"] == pytest.approx(p_country * 0.5)
    assert probabilities["country of citizenship"] == pytest.approx(p_country * 0.5)
    assert probabilities["place of birth"] == pytest.approx(p_place * 0.6)
    assert probabilities["place of death"] == pytest.approx(p_place * 0.4)
    assert [name for name, _ in answer][0] in ("country", "country of citizenship")
    assert client.usage()["branch_requests"] == 2 and len(received) == 3


def test_answer_outside_the_space_is_counted_not_kept():
    def respond(body):
        return 200, completion([" banana", ";", " country"]), 0.0

    stats = ParseStats()
    with server(respond) as (url, _):
        client = backend(url)
        answers = client.answer([make_request()], FORMAT, stats)
    assert answers == [[[("country", None)], [("country", None)]]]
    assert stats.counts["out_of_set"] == 2 and stats.counts["no_logprobs"] == 2
    assert stats.samples["out_of_set"] == [" banana; country", " banana; country"]
    assert client.usage()["out_of_set"] == 2


def test_nothing_listening_is_a_clear_error():
    with socket.socket() as sock:  # a free port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(InputError, match=f"no OpenAI-compatible server answers at {url}") as err:
        backend(url).answer([make_request()], FORMAT)
    assert err.value.field == "base_url"


def test_timeouts_are_counted_and_all_timeouts_fail():
    def respond(body):
        slow = "London (LOC) | Ada" in body["prompt"]
        return 200, completion([" country"], [{" country": 1.0}]), 2.0 if slow else 0.0

    stats = ParseStats()
    with server(respond) as (url, _):
        client = backend(url, timeout=0.5)
        (first, second), = client.answer([make_request()], FORMAT, stats)
        assert first == [("country", 1.0)] and second == []
        assert client.usage()["timed_out"] == 1 and stats.counts["timed_out"] == 1
        request = make_request()
        request.queries = request.queries[1:]
        with pytest.raises(InputError, match="every one of 1 requests .* timed out"):
            client.answer([request], FORMAT)


def test_refused_requests_are_counted_and_all_refused_fail():
    def respond(body):
        if "London (LOC) | Ada" in body["prompt"]:
            return 400, {"error": {"message": "Requested tokens (9000) exceed context window",
                                   "type": "invalid_request_error"}}, 0.0
        if "Babbage" in body["prompt"]:
            return 400, {"error": {"message": "invalid grammar", "type": "invalid_request"}}, 0.0
        return 200, completion([" country"], [{" country": 1.0}]), 0.0

    stats = ParseStats()
    with server(respond) as (url, _):
        client = backend(url)
        (first, second), = client.answer([make_request()], FORMAT, stats)
        assert first == [("country", 1.0)] and second == []
        assert client.usage()["refused"] == 1 and stats.counts["refused"] == 1
        assert stats.samples["refused"] == ["Requested tokens (9000) exceed context window"]
        request = make_request()
        request.text = "Babbage designed the Analytical Engine."
        with pytest.raises(InputError, match=r"refused 2 of 2 requests \(status 400\): "
                                             "invalid grammar"):
            client.answer([request], FORMAT)


def test_other_error_status_is_a_clear_error():
    def respond(body):
        return 404, {"error": {"message": "The model `m` does not exist.", "type": "x"}}, 0.0

    with server(respond) as (url, _):
        with pytest.raises(InputError, match="status 404: The model `m` does not exist") as err:
            backend(url).answer([make_request()], FORMAT)
    assert err.value.field == "model"


def test_vllm_and_sglang_constraints():
    def respond(body):
        return 200, completion([" country"], [{" country": 1.0}]), 0.0

    with server(respond) as (url, received):
        backend(url, server="vllm").answer([make_request()], FORMAT)
        single = make_request()
        single.multi_label = False
        backend(url, server="vllm").answer([single], FORMAT)
        backend(url, server="sglang").answer([make_request()], FORMAT)
    assert "regex" in received[0]["structured_outputs"]
    assert received[2]["structured_outputs"]["choice"][0] == " country"
    assert received[4]["regex"].startswith("( None|( country")


def test_settings_round_trip_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LMRC_TEST_KEY", "secret-key")
    original = OpenAIBackend("http://127.0.0.1:1/v1", "m", server="vllm",
                             api_key_env="LMRC_TEST_KEY", concurrency=3, timeout=5.0)
    assert original.client.api_key == "secret-key"
    original.to_disk(tmp_path)
    assert "secret-key" not in "".join(p.read_text() for p in tmp_path.iterdir())
    loaded = OpenAIBackend("http://other/v1", "x").from_disk(tmp_path)
    assert loaded.settings() == original.settings() and loaded.context_length is None
    monkeypatch.delenv("LMRC_TEST_KEY")
    with pytest.raises(InputError, match="LMRC_TEST_KEY"):
        loaded.client  # noqa: B018


def test_registered():
    from spacy.util import registry

    made = registry.misc.get("spacy_lmrc.OpenAIBackend.v2")(base_url="http://127.0.0.1:1/v1",
                                                            model="m", context_length=512)
    assert isinstance(made, OpenAIBackend) and made.context_length == 512
    legacy = registry.misc.get("spacy_lmrc.OpenAIBackend.v1")(base_url="http://127.0.0.1:1/v1",
                                                              model="m")
    assert legacy.context_length is None and legacy.settings()["model"] == "m"


# long documents: requests measured with the classifier's tokenizer ------------------------

#: the server's context in tokens (the tiny Llama's positions go to 2048), and the answer room
CONTEXT = 128
MAX_TOKENS = 32


def classifier_folder(tiny_llama: str, folder: Path, method: str = "full") -> Path:
    """A classifier folder for the windowing tests' relation set: the tiny Llama's config and
    tokenizer (full fine-tuning), or an adapter on it as the base model (LoRA)."""
    task = LMRCTask(labels=LABELS, pair_source="candidates", allow_none=False,
                    prompt_format=CompactFormat())
    folder.mkdir(parents=True)
    names = [p.name for p in Path(tiny_llama).iterdir() if p.name.startswith("tokenizer")]
    if method == "full":
        names.append("config.json")
    else:
        (folder / "adapter_config.json").write_text("{}")
    for name in names:
        (folder / name).write_bytes((Path(tiny_llama) / name).read_bytes())
    (folder / "lmrc_training.json").write_text(json.dumps({
        "base_model": tiny_llama, "method": method, "task_kind": "lmrc",
        "task": task.get_config()}))
    return folder


def served_pipeline(url: str, classifier: Path | None, **backend) -> spacy.Language:
    """The relation classifier on the server at ``url``: the classifier folder's, or without
    one the same task."""
    task = {"@misc": "spacy_lmrc.LMRCTask.v1", "labels": LABELS, "pair_source": "candidates",
            "allow_none": False, "min_probability": None,
            "prompt_format": {"@misc": "spacy_lmrc.CompactFormat.v1"}}
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "model": str(classifier) if classifier else None,
        "task": None if classifier else task,
        "backend": {"@misc": "spacy_lmrc.OpenAIBackend.v2", "base_url": url, "model": "rc",
                    "max_retries": 0, "max_tokens": MAX_TOKENS, **backend}})
    return nlp


def place_of_birth(body: dict) -> tuple[int, dict, float]:
    return 200, completion([" place", " of", " birth"],
                           [{" place": 1.0}, {" of": 1.0}, {" birth": 1.0}]), 0.0


def test_a_document_three_times_the_context_is_asked_over_windows_that_fit(tiny_llama,
                                                                            tmp_path):
    folder = classifier_folder(tiny_llama, tmp_path / "rc")
    with server(place_of_birth) as (url, received):
        nlp = served_pipeline(url, folder, context_length=CONTEXT)
        rc = nlp.get_pipe("llm_relation_classifier")
        assert rc.backend._tokenizer is None  # loaded when a request is first measured
        doc = _input(nlp, long_record())
        tokenizer = rc.backend.tokenizer
        assert len(tokenizer(doc.text)["input_ids"]) >= 3 * CONTEXT
        doc = nlp(doc)
    # every pair asked once, in a window whose prompt and answer fit the server's context
    assert len(received) == len(CANDIDATES)
    assert all(len(tokenizer(body["prompt"])["input_ids"]) + MAX_TOKENS <= CONTEXT
               for body in received)
    assert all(body["max_tokens"] == MAX_TOKENS for body in received)
    (entry,) = rc.report()["windowed"]
    assert entry["title"] == "Letters" and entry["context"] == CONTEXT
    assert entry["prompt_tokens"] > CONTEXT and entry["pairs_over_context"] == 0
    assert entry["windows"] == rc.stats.counts["windows"] > 1
    assert sorted((r["head"], r["tail"], r["label"]) for r in doc._.relations) == sorted(
        (head, tail, "P19") for head, tail in CANDIDATES)
    assert "refused" not in rc.usage


def test_the_context_is_the_smaller_of_the_server_s_and_the_model_s(tiny_llama, tmp_path):
    request, _ = LMRCTask(labels=LABELS).build_request(_input(spacy.blank("en"),
                                                              long_record()))
    hf_fit = HFBackend(model=tiny_llama).context_fit(request, FORMAT)
    for method in ("full", "lora"):  # the position limit: the folder's, or its base model's
        classifier = RCModel.from_pretrained(classifier_folder(tiny_llama, tmp_path / method,
                                                               method))
        for context_length, limit in ((CONTEXT, CONTEXT), (None, 2048), (4096, 2048)):
            backend = OpenAIBackend("http://127.0.0.1:1/v1", "rc", context_length=context_length,
                                    max_tokens=MAX_TOKENS)
            backend.use_classifier(classifier)
            fit = backend.context_fit(request, FORMAT)
            assert fit.context == limit
            # HFBackend's measure of the same tokens, with its own room for the answer
            assert fit.needed - MAX_TOKENS == hf_fit.needed - ANSWER_ROOM
            assert fit.text == hf_fit.text == backend.text_tokens([request.text])[0]


def test_without_a_classifier_the_document_is_sent_whole(tmp_path):
    with server(place_of_birth) as (url, received):
        nlp = served_pipeline(url, None, context_length=CONTEXT)
        rc = nlp.get_pipe("llm_relation_classifier")
        doc = _input(nlp, long_record())
        whole, _ = rc.task.build_request(doc)
        assert rc.backend.context_fit(whole, rc.task.prompt_format) is None
        with pytest.raises(InputError, match="tokenizer"):
            rc.backend.text_tokens(["no tokenizer to count with"])
        doc = nlp(doc)
    assert len(received) == len(CANDIDATES)
    assert all(body["prompt"].startswith(FORMAT.prefix(whole)) for body in received)
    assert rc.report()["windowed"] == [] and "windowed_documents" not in rc.stats.counts
    assert len(doc._.relations) == len(CANDIDATES)


def test_context_length_round_trips_and_the_classifier_stays(tiny_llama, tmp_path):
    original = OpenAIBackend("http://127.0.0.1:1/v1", "rc", context_length=4096)
    original.to_disk(tmp_path / "backend")
    assert json.loads((tmp_path / "backend" / "openai_backend.json").read_text())[
        "context_length"] == 4096
    loaded = OpenAIBackend("http://other/v1", "x")
    classifier = RCModel.from_pretrained(classifier_folder(tiny_llama, tmp_path / "rc"))
    loaded.use_classifier(classifier)  # the component hands it over before from_disk
    loaded = loaded.from_disk(tmp_path / "backend")
    assert loaded.settings() == original.settings() and loaded.context_length == 4096
    assert loaded.classifier is classifier
    with pytest.raises(InputError, match="context_length"):
        OpenAIBackend("http://127.0.0.1:1/v1", "rc", context_length=0)
    # a saved pipeline: the classifier folder and the backend's context_length come back
    served_pipeline("http://127.0.0.1:1/v1", tmp_path / "rc",
                    context_length=CONTEXT).to_disk(tmp_path / "pipe")
    restored = spacy.load(tmp_path / "pipe").get_pipe("llm_relation_classifier").backend
    assert restored.context_length == CONTEXT and restored.classifier is not None


def test_a_branch_keeps_its_prompt_and_answer_within_the_request_s_and_a_refusal_is_counted(
        tiny_llama, tmp_path):
    """A branch's prompt ends with part of the answer: those tokens come off its max_tokens (so
    a request filled to the context stays within it, as vLLM checks prompt + max_tokens), and
    a branch the server refuses anyway leaves the pair its greedy answer, counted."""

    def respond(body):
        if body["prompt"].endswith("=>"):
            return 200, completion([" country"], [{" country": 0.6, " place": 0.4}]), 0
        if body["prompt"].endswith("=> country"):
            return 200, completion([""], [{"": 1.0}]), 0
        return 400, {"error": {"message": "maximum context length exceeded",
                               "type": "invalid_request_error"}}, 0.0

    request = make_request(min_probability=0.1)
    request.queries = request.queries[:1]
    stats = ParseStats()
    classifier = RCModel.from_pretrained(classifier_folder(tiny_llama, tmp_path / "rc"))
    with server(respond) as (url, received):
        client = backend(url, max_tokens=MAX_TOKENS)
        client.use_classifier(classifier)
        (answer,), = client.answer([request], FORMAT, stats)
    assert [name for name, _ in answer] == ["country"]
    def tokens(text):
        return len(client.tokenizer(text, add_special_tokens=False)["input_ids"])

    budgets = {body["prompt"].rsplit("=>", 1)[1]: body["max_tokens"] for body in received}
    assert budgets == {"": MAX_TOKENS, " country": MAX_TOKENS - tokens(" country") - 1,
                       " place": MAX_TOKENS - tokens(" place") - 1}
    assert client.usage()["refused_branches"] == 1 and stats.counts["refused_branches"] == 1
    assert stats.samples["refused"] == ["maximum context length exceeded"]
