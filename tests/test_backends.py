"""Backends: scripted, Hugging Face (tiny random Llama and T5), spacy-llm both ways."""

from __future__ import annotations

from typing import Iterable  # noqa: UP035  (spacy-llm checks typing.Iterable annotations)

import pytest
import spacy
from spacy_llm.registry import registry as llm_registry

from spacy_lmrc.backends.base import LLMBackend
from spacy_lmrc.backends.hf import HFBackend, make_hf_backend
from spacy_lmrc.backends.scripted import ScriptedModel, make_scripted_backend
from spacy_lmrc.backends.spacy_llm import SpacyLLMModel
from spacy_lmrc.corpus import docred_record_to_doc

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}


@llm_registry.llm_models("spacy_lmrc.test.EchoModel.v1")
def echo_model(answer: str):
    """A spacy-llm model answering every prompt with ``answer``."""

    def run(prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        return [[answer for _ in doc_prompts] for doc_prompts in prompts]

    return run


class _ContextEchoModel:
    """An echo model that declares a context length, as spacy-llm's REST models do."""

    def __init__(self, answer: str, context_length: int) -> None:
        self.answer = answer
        self._context_length = context_length

    @property
    def context_length(self) -> int:
        return self._context_length

    def __call__(self, prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        return [[self.answer for _ in doc_prompts] for doc_prompts in prompts]


@llm_registry.llm_models("spacy_lmrc.test.ContextEchoModel.v1")
def context_echo_model(answer: str, context_length: int) -> _ContextEchoModel:
    """A spacy-llm model with a ``context_length`` answering every prompt with ``answer``."""
    return _ContextEchoModel(answer, context_length)


def test_scripted_backend_rules_then_list_then_default(tmp_path):
    backend = make_scripted_backend(answers=["first", "second"], rules={"London": "L"},
                                    default="-")
    assert isinstance(backend, LLMBackend)
    model = backend.model
    assert model.generate(["a London b", "x", "y", "z"]) == ["L", "first", "second", "-"]
    assert model.prompts == ["a London b", "x", "y", "z"]
    backend.to_disk(tmp_path)
    again = ScriptedModel().from_disk(tmp_path)
    assert again.generate(["x", "London"]) == ["first", "L"]


def test_hf_causal_backend_left_pads_and_bounds_new_tokens(tiny_llama):
    backend = make_hf_backend(model=tiny_llama, batch_size=2, max_new_tokens=6)
    prompts = ["short", "a much longer prompt than the first one", "third"]
    backend.tokenizer  # loads the model  # noqa: B018
    generate, seen = backend._model.generate, []

    def spy(**kwargs):
        seen.append((kwargs["max_new_tokens"], kwargs["input_ids"]))
        return generate(**kwargs)

    backend._model.generate = spy
    answers = backend.generate(prompts, 3)
    assert len(answers) == 3
    assert [limit for limit, _ in seen] == [3, 3]  # two batches, the task's bound (< cap 6)
    first_batch = seen[0][1]
    assert int(first_batch[0, 0]) == backend.tokenizer.pad_token_id  # left padding
    assert backend.generate(["x"], 100) and seen[-1][0] == 6  # the cap wins
    # batching does not change greedy answers (left padding + attention mask)
    alone = [backend.generate([p], 3)[0] for p in prompts]
    assert alone == answers
    # the chat template wraps the prompt, as in fine-tuning
    assert backend.count_tokens("short") > len(backend.tokenizer("short")["input_ids"])


def test_hf_seq2seq_backend_generates(tiny_t5, toy_doc):
    from spacy_lmrc.llm import CompactFormat
    from spacy_lmrc.tasks.lmrc import LMRCTask

    backend = HFBackend(model=tiny_t5, batch_size=2, max_new_tokens=4)
    answers = backend.generate(["one", "two words", "three little words"])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    # requests reach a seq2seq model as text prompts (the text adapter), 20 pairs per prompt
    request, pairs = LMRCTask(labels=LABELS).build_request(toy_doc)
    (answered,) = backend.answer([request], CompactFormat())
    assert len(answered) == len(pairs) == 12 and backend.usage()["prompts"] == 1


def test_hf_backend_errors_are_actionable(tiny_llama, tmp_path):
    import json

    from spacy_lmrc.classifier import RCModel
    from spacy_lmrc.errors import InputError

    with pytest.raises(InputError, match="no lmrc_training.json"):
        RCModel.from_pretrained(tmp_path)
    (tmp_path / "lmrc_training.json").write_text(json.dumps({
        "base_model": tiny_llama, "method": "lora", "task": {}}))
    with pytest.raises(InputError, match="adapter_config.json"):
        RCModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="CUDA"):
        HFBackend(model=tiny_llama, device="cuda").generate(["x"])


def test_spacy_llm_model_as_backend():
    backend = SpacyLLMModel(echo_model("(A| creator| B)"))
    assert backend.generate(["p1", "p2"]) == ["(A| creator| B)", "(A| creator| B)"]


def _spacy_llm_pipeline(task: str, model: dict):
    """A blank pipeline with spacy-llm's ``llm`` component running our relation task."""
    nlp = spacy.blank("en")
    llm = nlp.add_pipe("llm", config={
        "task": {"@llm_tasks": "spacy_lmrc.LMRCRelationTask.v1",
                 # every pair of a Doc without candidates, a relation for each (LMRC's RC)
                 "task": {"@misc": task, "labels": LABELS, "pair_source": "auto",
                          "allow_none": False}},
        "model": model,
        "save_io": False,
    })
    return nlp, llm


def test_spacy_llm_component_runs_the_lmrc_task(toy_record):
    nlp, llm = _spacy_llm_pipeline("spacy_lmrc.LMRCTask.v1", {
        "@llm_models": "spacy_lmrc.test.EchoModel.v1",
        "answer": "(Ada Lovelace| place of birth| London)\nnot a triple"})
    doc = nlp(docred_record_to_doc(toy_record, nlp.vocab))
    assert doc._.relations == [{"head": 0, "tail": 1, "label": "P19", "score": 1.0}]
    assert llm.task.stats.counts["unparsable"] == 1


def test_spacy_llm_config_file_builds_with_a_swapped_model(toy_record):
    from pathlib import Path

    from spacy.util import load_config, load_model_from_config

    config = load_config(Path(__file__).parents[1] / "configs" / "classifier_spacy_llm.cfg")
    config["components"]["llm"]["task"]["task"]["labels_path"] = None
    config["components"]["llm"]["task"]["task"]["labels"] = LABELS
    config["components"]["llm"]["model"] = {"@llm_models": "spacy_lmrc.test.EchoModel.v1",
                                            "answer": "(Analytical Engine| creator| Babbage)"}
    nlp = load_model_from_config(config, auto_fill=True)
    doc = nlp(docred_record_to_doc(toy_record, nlp.vocab))
    assert doc._.relations == [{"head": 3, "tail": 2, "label": "P170", "score": 1.0}]


def test_spacy_llm_task_fits_prompts_into_the_context_length(toy_record):
    """The toy document's one 12-pair prompt is 193 words: a context of 200 tokens (with
    spacy-llm's 10% margin) splits it into two prompts of 6 pairs; one of 150 fits no prompt,
    since even a one-pair prompt (143 words) needs 158: nothing is sent, every pair counted."""
    from spacy_lmrc.pipeline.spacy_llm_task import CONTEXT_MARGIN, SpacyLLMRelationTask
    from spacy_lmrc.tasks.lmrc import make_lmrc_task

    doc = docred_record_to_doc(toy_record, spacy.blank("en").vocab)
    task = SpacyLLMRelationTask(make_lmrc_task(labels=LABELS, pair_source="auto",
                                               allow_none=False))
    ((whole, _),) = task.generate_prompts([doc])
    assert len(whole) == 1 and len(whole[0].split()) * CONTEXT_MARGIN > 200
    ((prompts, shards),) = task.generate_prompts([doc], context_length=200)
    assert len(prompts) == 2 and shards == [doc, doc]
    assert all(len(p.split()) * CONTEXT_MARGIN <= 200 for p in prompts)
    assert all("### 6 Entity pairs:" in p for p in prompts)
    (parsed,) = task.parse_responses([shards], [["(Ada Lovelace| place of birth| London)",
                                                 "(Analytical Engine| creator| Babbage)"]])
    assert [(r["head"], r["tail"], r["label"]) for r in parsed._.relations] == [
        (0, 1, "P19"), (3, 2, "P170")]
    assert task.stats.counts["prompts"] == 2 and "over_context" not in task.stats.counts
    assert task.generate_prompts([doc], context_length=150).__next__() == ([], [])
    assert task.stats.counts["over_context"] == 12
    assert task.stats.counts["over_context_pairs"] == 12


def test_spacy_llm_component_passes_the_model_context_length(toy_record):
    nlp, llm = _spacy_llm_pipeline("spacy_lmrc.LMRCTask.v1", {
        "@llm_models": "spacy_lmrc.test.ContextEchoModel.v1",
        "answer": "(Ada Lovelace| place of birth| London)", "context_length": 200})
    doc = nlp(docred_record_to_doc(toy_record, nlp.vocab))
    assert doc._.relations == [{"head": 0, "tail": 1, "label": "P19", "score": 1.0}]
    assert llm.task.context_length == 200 and llm.task.stats.counts["prompts"] == 2


def test_hf_backend_decodes_many_requests_together(tiny_llama):
    """A batch of sentence requests shares forward calls and the instruction, and answers as
    one request per call does; a request too long for the context is refused on its own."""
    from spacy_lmrc.llm import PairQuery, RelationRequest, SentenceFormat

    names = list(LABELS.values())
    texts = ["Ada Lovelace was born in London.", "Babbage designed the Analytical Engine.",
             "x " * 300, "Marie Curie worked in Paris with Pierre Curie."]
    requests = [RelationRequest(text, [PairQuery("A", "B"), PairQuery("B", "A")], names,
                                multi_label=False) for text in texts]
    fmt = SentenceFormat()
    together = HFBackend(model=tiny_llama, dtype="float32", max_prompt_tokens=200)
    answers = together.answer(requests, fmt)
    one_by_one = HFBackend(model=tiny_llama, dtype="float32", max_prompt_tokens=200)
    alone = [one_by_one.answer([request], fmt)[0] for request in requests]
    assert answers[2] == [[], []] and together.refused_prompts == 1
    assert [[[n for n, _ in a] for a in r] for r in answers] == [
        [[n for n, _ in a] for a in r] for r in alone]
    for got, want in zip(answers, alone):
        for got_answer, want_answer in zip(got, want):
            assert [p for _, p in got_answer] == pytest.approx([p for _, p in want_answer],
                                                               abs=1e-4)
    assert together.decoder.forward_calls < one_by_one.decoder.forward_calls
    assert together.decoder.fed_tokens <= one_by_one.decoder.fed_tokens
    assert together.prompt_tokens == one_by_one.prompt_tokens > 0
