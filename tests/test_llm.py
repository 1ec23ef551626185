"""The LLM stage's shared text <-> tokens code: formats, answer constraints, packed sequences,
constrained decoding, and the structured path through the backend, fine-tuning and component."""

from __future__ import annotations

import json
import math
import os

import pytest
import spacy

from spacy_lmrc.backends.hf import HFBackend
from spacy_lmrc.cli.finetune_classifier import finished_line
from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.errors import InputError
from spacy_lmrc.finetune import FinetuneSettings, build_packed_sequences, finetune
from spacy_lmrc.llm import (
    AnswerSpace,
    CompactFormat,
    PackedDecoder,
    PairQuery,
    PaperFormat,
    RelationRequest,
    encode_request,
    format_from_config,
    pack_training_sequence,
)
from spacy_lmrc.llm.sequences import ROOT, TokenTree
from spacy_lmrc.tasks.document import LMRCTask

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport",
          "P17": "country", "P495": "country of origin"}
NAMES = list(LABELS.values())


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_llama).eval(),
            AutoTokenizer.from_pretrained(tiny_llama))


def _request(none_answer=None):
    return RelationRequest(
        text="Ada Lovelace was born in London. Babbage designed the Analytical Engine.",
        queries=[PairQuery("Ada Lovelace", "London", "PER", "LOC"),
                 PairQuery("Analytical Engine", "Babbage", "MISC", "PER"),
                 PairQuery("London", "Ada Lovelace", "LOC", "PER", answer_space=["country"]),
                 PairQuery("Ada Lovelace", "Babbage", "PER", "PER")],
        answer_space=NAMES, none_answer=none_answer)


# answer space -------------------------------------------------------------------------------

def test_answer_space_encodes_and_walks_valid_answers_only(tiny):
    _, tokenizer = tiny
    space = AnswerSpace(tokenizer, NAMES + ["None"], none_answer="None")
    ids = space.encode(["country", "country of origin"])
    assert ids[-1] == tokenizer.eos_token_id and space.separator_id in ids
    state = space.start()
    for token in ids:
        assert token in space.allowed(state)
        space.advance(state, token, math.log(0.5))
    assert state.done and state.names == ["country", "country of origin"]
    # "country" is a prefix of "country of origin": at its end the answer may stop, go on or
    # take another name
    walk = space.start()
    for token in space.name_ids["country"]:
        space.advance(walk, token, 0.0)
    assert {space.end_id, space.separator_id} <= set(space.allowed(walk))
    assert set(space.allowed(walk)) - {space.end_id, space.separator_id}
    with pytest.raises(ValueError, match="not in the answer space"):
        space.encode(["born in"])


def test_none_stands_alone_and_names_are_bounded(tiny):
    _, tokenizer = tiny
    space = AnswerSpace(tokenizer, NAMES + ["None"], none_answer="None", max_names=2)
    state = space.start()
    for token in space.name_ids["None"]:
        space.advance(state, token, 0.0)
    assert space.allowed(state) == [space.end_id]
    walk = space.start()
    for token in space.name_ids["creator"] + [space.separator_id] + space.name_ids["country"]:
        space.advance(walk, token, 0.0)
    assert space.separator_id not in space.allowed(walk)  # max_names = 2 reached
    single = AnswerSpace(tokenizer, NAMES, multi_label=False)
    done = single.start()
    for token in single.name_ids["creator"]:
        single.advance(done, token, 0.0)
    assert single.allowed(done) == [single.end_id]


def test_separator_must_be_one_token(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match="one token"):
        AnswerSpace(tokenizer, NAMES, separator=" ;; and also ")


# formats ------------------------------------------------------------------------------------

def test_compact_format_is_short_and_paper_format_lists_the_relation_set():
    request = _request()
    compact, paper = CompactFormat(), PaperFormat()
    assert "place of birth" not in compact.prefix(request)
    assert compact.query(request.queries[0]) == "\nAda Lovelace (PER) | London (LOC) =>"
    assert "; ".join(NAMES) in paper.prefix(request)
    assert "(Ada Lovelace| -| London)" in paper.query(request.queries[0])
    assert "place of birth" in CompactFormat(show_relations=True).prefix(request)
    assert CompactFormat(show_types=False).query(request.queries[0]) == (
        "\nAda Lovelace | London =>")
    for fmt in (compact, paper, CompactFormat(show_types=False)):
        assert format_from_config(fmt.config()).config() == fmt.config()


# packed sequences ---------------------------------------------------------------------------

def test_token_tree_shares_query_starts_and_sees_ancestors_only():
    tree = TokenTree(prefix_len=2)
    first = tree.add(ROOT, [7, 8], share=True)
    second = tree.add(ROOT, [7, 9], share=True)  # shares token 7 with the first query
    answer = tree.add(first, [5])  # answers are never shared
    assert tree.ids == [7, 8, 9, 5] and (first, second, answer) == (1, 2, 3)
    assert tree.positions(range(4)) == [2, 3, 3, 4]
    visible = tree.visible(range(4)).int().tolist()
    assert visible == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0],
                       [1, 1, 1, 1, 0, 1]]


def test_packed_sequence_reads_each_pair_as_if_alone(tiny):
    """Training shape = inference shape: the logits of a packed block equal the logits of the
    prefix followed by that block alone."""
    import torch

    model, tokenizer = tiny
    request = _request()
    encoded = encode_request(tokenizer, CompactFormat(), request)
    space = AnswerSpace(tokenizer, NAMES)
    answers = [space.encode(["place of birth"]), space.encode(["creator"]),
               space.encode(["country"]), space.encode(["creator", "country"])]
    seq = pack_training_sequence(encoded, answers)
    assert len(seq.target_ids) == sum(len(a) for a in answers)
    laid_end_to_end = sum(len(q) + len(a) - 1 for q, a in zip(encoded.query_ids, answers))
    ada = os.path.commonprefix([encoded.query_ids[0], encoded.query_ids[3]])
    assert len(ada) > 3 and tokenizer.decode(ada).startswith("\nAda Lovelace")
    assert len(seq.tree) <= laid_end_to_end - (len(ada) - 1)  # her queries share her tokens
    mask = seq.mask(torch.float32)
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([seq.input_ids]),
                       position_ids=torch.tensor([seq.position_ids]), attention_mask=mask,
                       logits_to_keep=torch.tensor(seq.target_index)).logits[0]
        offset = 0
        for query, answer in zip(encoded.query_ids, answers):
            alone = torch.tensor([encoded.prefix_ids + query + answer[:-1]])
            reference = model(alone).logits[0, -len(answer):]
            assert torch.allclose(packed[offset : offset + len(answer)], reference, atol=1e-4)
            offset += len(answer)


# constrained decoding -----------------------------------------------------------------------

def _reference_decode(model, prefix_ids, query_ids, space):
    """Constrained greedy decoding of one query alone, re-reading everything each step; a
    name's probability is computed here from the renormalised distributions: its tokens,
    stopping after it (end or separator), and the separator before it."""
    import torch

    state, ids = space.start(), list(prefix_ids) + list(query_ids)
    answer, logprob = [], 0.0
    while not state.done:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        allowed = space.allowed(state)
        probs = torch.softmax(logits[allowed], dim=-1)
        best = int(torch.argmax(probs))
        token = allowed[best]
        if token in (space.end_id, space.separator_id):
            stop = sum(float(p) for t, p in zip(allowed, probs)
                       if t in (space.end_id, space.separator_id))
            if state.node.name not in [n for n, _ in answer]:
                answer.append((state.node.name, math.exp(logprob) * stop))
            logprob = math.log(float(probs[best])) if token == space.separator_id else 0.0
        else:
            logprob += math.log(float(probs[best]))
        space.advance(state, token, 0.0)
        if not state.done and space.allowed(state) == [space.end_id]:
            if state.node.name not in [n for n, _ in answer]:
                answer.append((state.node.name, math.exp(logprob)))
            space.advance(state, space.end_id, 0.0)
        ids.append(token)
    return answer


def test_prefix_names_score_the_probability_of_stopping(tiny):
    _, tokenizer = tiny
    space = AnswerSpace(tokenizer, NAMES)
    state = space.start()
    for token in space.name_ids["country"]:
        space.advance(state, token, 0.0)
    space.advance(state, space.end_id, math.log(0.005), stop_logprob=math.log(0.01))
    assert state.names == ["country"] and math.exp(state.scores[0]) == pytest.approx(0.01)


def test_repeated_names_end_the_answer(tiny):
    """A model that keeps repeating a name cannot make the answer endless."""
    _, tokenizer = tiny
    space = AnswerSpace(tokenizer, NAMES, max_names=3)
    state = space.start()
    for _ in range(3):
        for token in space.name_ids["creator"]:
            space.advance(state, token, 0.0)
        if space.separator_id not in space.allowed(state):
            break
        space.advance(state, space.separator_id, 0.0)
    assert space.allowed(state) == [space.end_id] and state.names == ["creator"]


@pytest.mark.parametrize("query_batch_size", [1, 2, 64])
def test_decoder_equals_one_query_at_a_time(tiny, query_batch_size):
    import torch

    model, tokenizer = tiny
    request = _request()
    encoded = encode_request(tokenizer, CompactFormat(), request)
    spaces = [AnswerSpace(tokenizer, request.space_of(q), max_names=3) for q in request.queries]
    # a bias towards the separator makes the tiny model answer several names
    with torch.no_grad():
        model.lm_head.weight[spaces[0].separator_id] += 0.5
    try:
        decoded = PackedDecoder(model, query_batch_size).decode(encoded, spaces)
        expected = [_reference_decode(model, encoded.prefix_ids, q, s)
                    for q, s in zip(encoded.query_ids, spaces)]
    finally:
        with torch.no_grad():
            model.lm_head.weight[spaces[0].separator_id] -= 0.5
    assert [[n for n, _ in a] for a in decoded] == [[n for n, _ in a] for a in expected]
    for got, want in zip(decoded, expected):
        assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-4)
    assert decoded[2] and all(name == "country" for name, _ in decoded[2])  # narrowed space


def test_untrained_model_answers_only_names_of_the_space(tiny):
    model, tokenizer = tiny
    request = _request(none_answer="None")
    encoded = encode_request(tokenizer, PaperFormat(), request)
    spaces = [AnswerSpace(tokenizer, request.space_of(q), none_answer="None")
              for q in request.queries]
    for answer, query in zip(PackedDecoder(model).decode(encoded, spaces), request.queries):
        assert answer and all(name in request.space_of(query) for name, _ in answer)
        assert all(0.0 < p <= 1.0 for _, p in answer)


# task, fine-tuning, backend, component --------------------------------------------------------

def test_task_builds_requests_and_training_targets(toy_doc):
    rc = LMRCTask(labels=LABELS, pairs="all", prompt_format=CompactFormat())
    request, pairs = rc.build_request(toy_doc)
    assert len(pairs) == 12 and request.none_answer is None
    assert request.queries[0].head_type == "PER"
    train_request, targets = rc.training_request(toy_doc)
    assert targets == [["place of birth"], ["partner in business or sport"], ["creator"]]
    assert len(train_request.queries) == 3
    baseline = LMRCTask(labels=LABELS, allow_none=True, train_negatives=1.0)
    _, sampled = baseline.training_request(toy_doc)
    assert sum(t == ["None"] for t in sampled) == 3 and len(sampled) == 6
    _, every = LMRCTask(labels=LABELS, allow_none=True).training_request(toy_doc)
    assert len(every) == 12


def test_answers_become_relations_with_the_llm_probability(toy_doc):
    from spacy_lmrc.tasks.base import ParseStats

    task = LMRCTask(labels=LABELS, allow_none=True, threshold=0.3)
    stats = ParseStats()
    relations = task.relations_from_answers(
        toy_doc, [(0, 1), (3, 2), (1, 0)],
        [[("place of birth", 0.9)], [("creator", 0.2)], [("None", 0.8)]], stats)
    assert relations == [{"head": 0, "tail": 1, "label": "P19", "score": 0.9}]
    assert stats.counts["below_threshold"] == 1 and stats.counts["none"] == 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_finetuning_saves_what_the_backend_loads(tiny_llama, toy_doc, tmp_path, method):
    task = LMRCTask(labels=LABELS, pairs="all", prompt_format=CompactFormat())
    out = tmp_path / method
    summary = finetune(task, [toy_doc], out, FinetuneSettings(
        base_model=tiny_llama, method=method, max_steps=2, batch_size=1, warmup_steps=1,
        learning_rate=1e-3, save_every=1))
    assert summary["shape"] == "packed" and summary["steps"] == 2
    assert summary["train_tokens"] > 0 and summary["tokens_per_second"] > 0
    line = finished_line(summary, out)
    assert line.startswith("1 documents (0 skipped as too long), 2 steps") and "tokens/s" in line
    assert line.endswith(f"{'LoRA adapter' if method == 'lora' else 'model'} in {out}")
    stored = json.loads((out / "lmrc_training.json").read_text())
    assert stored["task"]["prompt_format"] == CompactFormat().config()
    assert (out / ("model.safetensors" if method == "full" else "adapter_config.json")).exists()

    backend = HFBackend(model=tiny_llama, adapter=str(out))
    backend.check_trained_for(CompactFormat())
    request, _ = task.build_request(toy_doc)
    (answers,) = backend.answer([request], task.prompt_format)
    assert len(answers) == 12 and all(a and a[0][0] in NAMES for a in answers)
    with pytest.raises(InputError, match="prompt format"):
        backend.check_trained_for(PaperFormat())
    other_base = HFBackend(model="another-model", adapter=str(out))
    if method == "lora":  # an adapter needs its own base model; a full model needs none
        with pytest.raises(InputError, match="trained on"):
            other_base.check_trained_for(CompactFormat())
    else:
        other_base.check_trained_for(CompactFormat())


def test_training_sequences_follow_the_task(tiny, toy_doc):
    _, tokenizer = tiny
    (seq,) = build_packed_sequences(LMRCTask(labels=LABELS, prompt_format=CompactFormat()),
                                    [toy_doc], tokenizer)
    answers = tokenizer.decode(seq.target_ids)
    assert "place of birth" in answers and "None" not in answers
    assert answers.count(tokenizer.eos_token) == 3


def test_component_on_a_local_model_writes_only_relations_of_the_set(tiny_llama, toy_record,
                                                                     tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCBaselineTask.v2", "labels": LABELS},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v2", "model": tiny_llama,
                    "query_batch_size": 5},
    })
    doc = nlp(input_copy(docred_record_to_doc(toy_record, nlp.vocab)))
    rc = nlp.get_pipe("llm_relation_classifier")
    assert rc.stats.counts["pairs"] == 12
    assert rc.stats.counts["relations"] + rc.stats.counts["none"] == 12
    assert all(r["label"] in LABELS and 0 < r["score"] <= 1 for r in doc._.relations)
    assert rc.usage["prompt_tokens"] > 0 and "prompts" not in rc.usage
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")
    redo = again(input_copy(docred_record_to_doc(toy_record, again.vocab)))
    assert redo._.relations == doc._.relations


def test_a_saved_pipeline_carries_its_fully_fine_tuned_model(tiny_llama, toy_record, tmp_path):
    """Full fine-tuning leaves no base model to refer to: the pipeline copies the weights, and
    a run with the other method in the same folder leaves no stale adapter behind."""
    import shutil

    from spacy_lmrc.backends.hf import is_full_model

    doc = docred_record_to_doc(toy_record, spacy.blank("en").vocab)
    task = LMRCTask(labels=LABELS, pairs="all", prompt_format=CompactFormat())
    out = tmp_path / "rc"
    for method in ("lora", "full"):
        finetune(task, [doc], out, FinetuneSettings(base_model=tiny_llama, method=method,
                                                    max_steps=1, warmup_steps=0))
    assert is_full_model(out) and not (out / "adapter_config.json").exists()
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCTask.v2", "labels": LABELS, "pairs": "all"},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v2", "model": tiny_llama,
                    "adapter": str(out)},
    })
    before = nlp(input_copy(doc))._.relations
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(out)
    again = spacy.load(tmp_path / "pipeline")
    assert again(input_copy(docred_record_to_doc(toy_record, again.vocab)))._.relations == before
