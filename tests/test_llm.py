"""The LLM stage's shared text <-> tokens code: formats, answer constraints, packed sequences,
constrained decoding, and the structured path through the backend, fine-tuning and component."""

from __future__ import annotations

import json
import math
import os

import pytest
import spacy

from spacy_lmrc.backends.hf import HFBackend
from spacy_lmrc.classifier.model import RCModel
from spacy_lmrc.classifier.training import FinetuneSettings, build_packed_sequences, finetune
from spacy_lmrc.cli.finetune_classifier import finished_line
from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.errors import InputError
from spacy_lmrc.fusion import LLMScore
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
    pack_training_sequences,
)
from spacy_lmrc.llm.sequences import ROOT, TokenTree
from spacy_lmrc.tasks.lmrc import LMRCTask

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


def test_pairs_beyond_max_length_go_to_more_sequences_each_with_the_prefix(tiny):
    """The paper's n(n-1)/k inputs: every pair is trained on, each sequence fits, and a pair
    reads exactly what it reads in the single sequence."""
    _, tokenizer = tiny
    encoded = encode_request(tokenizer, CompactFormat(), _request())
    space = AnswerSpace(tokenizer, NAMES)
    answers = [space.encode(["place of birth"]), space.encode(["creator"]),
               space.encode(["country"]), space.encode(["creator", "country"])]
    whole = pack_training_sequence(encoded, answers)
    assert pack_training_sequences(encoded, answers, None)[0].input_ids == whole.input_ids
    assert len(pack_training_sequences(encoded, answers, len(whole))) == 1  # exact lengths
    limit = len(whole) - 1
    parts = pack_training_sequences(encoded, answers, limit)
    assert len(parts) == 2 and all(len(part) <= limit for part in parts)
    assert all(part.prefix_ids == encoded.prefix_ids for part in parts)
    assert [t for part in parts for t in part.target_ids] == whole.target_ids
    tiny_limit = len(encoded.prefix_ids) + 1  # no pair fits: one sequence per pair, too long
    assert len(pack_training_sequences(encoded, answers, tiny_limit)) == len(answers)


# constrained decoding -----------------------------------------------------------------------

def _reference_decode(model, prefix_ids, query_ids, space):
    """Constrained greedy decoding of one query alone, re-reading everything each step; a
    name's probability is computed here from the renormalised distributions: its tokens,
    stopping after it (end or separator), and the separator before it. A repeated name, or the
    none answer after another name, is not listed again."""
    import torch

    state, ids = space.start(), list(prefix_ids) + list(query_ids)
    answer, logprob = [], 0.0

    def is_new(name):
        return name not in [n for n, _ in answer] and not (name == space.none_answer and answer)

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
            if is_new(state.node.name):
                answer.append((state.node.name, math.exp(logprob) * stop))
            logprob = math.log(float(probs[best])) if token == space.separator_id else 0.0
        else:
            logprob += math.log(float(probs[best]))
        space.advance(state, token, 0.0)
        if not state.done and space.allowed(state) == [space.end_id]:
            if is_new(state.node.name):
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


# every probable name: decoding with a threshold ---------------------------------------------

class CountingDecoder(PackedDecoder):
    """A decoder that also counts the rows of logits it asks for (one per open branch)."""

    rows = 0

    def _forward(self, ids, positions, mask, cache, keep):
        self.rows += len(keep)
        return super()._forward(ids, positions, mask, cache, keep)


def _sharpened(model, separator_id):
    """A copy of the tiny model with less uniform answers and a bias towards the separator,
    so that names differ in probability and greedy answers may hold several."""
    import copy

    import torch

    sharp = copy.deepcopy(model)
    with torch.no_grad():
        sharp.lm_head.weight.mul_(4)
        sharp.lm_head.weight[separator_id] += 0.5
    return sharp


def _first_name_probabilities(model, prefix_ids, query_ids, space):
    """Each name's probability as the answer's first name, by brute force: prefix, query and
    the name in one forward pass; every token renormalised over the tokens allowed there, then
    the probability of stopping after the name (end or separator)."""
    import torch

    stops = {space.end_id, space.separator_id}
    probabilities = {}
    for name, ids in space.name_ids.items():
        with torch.no_grad():
            logits = model(torch.tensor([[*prefix_ids, *query_ids, *ids]])).logits[0]
        state, probability = space.start(), 1.0
        for step, token in zip(logits[-len(ids) - 1:], [*ids, None]):
            allowed = space.allowed(state)
            probs = torch.softmax(step[allowed], dim=-1)
            chosen = [i for i, t in enumerate(allowed) if (t in stops if token is None
                                                           else t == token)]
            probability *= float(probs[chosen].sum())
            if token is not None:
                space.advance(state, token, 0.0)
        probabilities[name] = probability
    return probabilities


@pytest.mark.parametrize("none_answer", [None, "None"])
@pytest.mark.parametrize("tau", [0.03, 0.12])
def test_a_threshold_answers_every_probable_first_name(tiny, none_answer, tau):
    """The answer holds exactly the names whose brute-force probability as first name is >= τ,
    with that probability, merged with the greedy answer (which keeps its own scores), best
    first; without a threshold the answer is the greedy one, decoded as before."""
    model, tokenizer = tiny
    request = _request(none_answer)
    encoded = encode_request(tokenizer, CompactFormat(), request)
    spaces = [AnswerSpace(tokenizer, request.space_of(q), none_answer=none_answer, max_names=3)
              for q in request.queries]
    model = _sharpened(model, spaces[0].separator_id)
    greedy = PackedDecoder(model).decode(encoded, spaces, min_probability=None)
    reference = [_reference_decode(model, encoded.prefix_ids, q, s)
                 for q, s in zip(encoded.query_ids, spaces)]
    _assert_same_answers([greedy], [reference])
    got = PackedDecoder(model).decode(encoded, spaces, min_probability=tau)
    for answer, greedy_answer, query_ids, space in zip(got, greedy, encoded.query_ids, spaces):
        brute = _first_name_probabilities(model, encoded.prefix_ids, query_ids, space)
        assert all(abs(p - tau) > 1e-3 for p in brute.values())  # no name on the edge
        expected = {name: p for name, p in brute.items() if p >= tau}
        for name, p in greedy_answer:
            expected[name] = max(p, expected.get(name, 0.0))
        assert dict(answer) == pytest.approx(expected, abs=1e-4)
        assert len(answer) == len(expected)
        assert [p for _, p in answer] == sorted((p for _, p in answer), reverse=True)
        assert all(p >= tau or name in dict(greedy_answer) for name, p in answer)
    assert any(len(answer) > len(greedy_answer) for answer, greedy_answer in zip(got, greedy))
    if none_answer:  # P(None) is known where the greedy answer is another name
        assert any("None" in dict(answer) and greedy_answer[0][0] != "None"
                   for answer, greedy_answer in zip(got, greedy))
    else:  # a greedy second name below τ stays, with its greedy score
        assert any(len(greedy_answer) > 1 for greedy_answer in greedy)


def test_branches_share_forward_calls(tiny):
    """Branches are extra rows of the same forward calls: no more calls than the greedy answer
    or the longest name takes, whatever the number of names found."""
    model, tokenizer = tiny
    request = _request("None")
    encoded = encode_request(tokenizer, CompactFormat(), request)
    spaces = [AnswerSpace(tokenizer, request.space_of(q), none_answer="None", max_names=3)
              for q in request.queries]
    model = _sharpened(model, spaces[0].separator_id)
    greedy, branching = CountingDecoder(model), CountingDecoder(model)
    greedy.decode(encoded, spaces)
    answers = branching.decode(encoded, spaces, min_probability=0.01)
    longest = max(len(ids) for ids in spaces[0].name_ids.values())
    assert sum(len(answer) for answer in answers) == sum(len(s.names) for s in spaces)
    assert branching.forward_calls <= max(greedy.forward_calls, 1 + longest)  # + the root
    assert branching.rows > greedy.rows


def test_thresholds_are_per_request_and_decode_as_alone(tiny):
    """Requests with and without a threshold in one call answer as each decoded alone."""
    model, tokenizer = tiny
    encoded, spaces = _mixed_requests(tokenizer)
    model = _sharpened(model, spaces[0][0].separator_id)
    thresholds = [0.05 if i % 2 else None for i in range(len(encoded))]
    got = PackedDecoder(model, query_batch_size=3).decode_many(encoded, spaces, thresholds)
    want = [PackedDecoder(model, query_batch_size=3).decode(e, s, tau)
            for e, s, tau in zip(encoded, spaces, thresholds)]
    _assert_same_answers(got, want)
    assert any(len(answer) > 1 for answer in got[1])  # the document branched
    with pytest.raises(ValueError, match="thresholds"):
        PackedDecoder(model).decode(encoded[0], spaces[0], min_probability=0.0)
    with pytest.raises(ValueError, match="min_probability"):
        RelationRequest("text", [], NAMES, min_probability=1.5)


def test_hf_backend_decodes_each_request_with_its_threshold(tiny_llama):
    backend = HFBackend(model=tiny_llama, dtype="float32")
    greedy, branching = _request(), _request()
    branching.min_probability = 0.05
    both = backend.answer([greedy, branching], CompactFormat())
    alone = [backend.answer([request], CompactFormat())[0] for request in (greedy, branching)]
    _assert_same_answers(both, alone)
    assert all(len(answer) == 1 for answer in both[0])
    assert all(len(answer) > 1 for answer in both[1][:2])


# task, fine-tuning, backend, component --------------------------------------------------------

def test_task_builds_requests_and_training_targets(toy_doc):
    rc = LMRCTask(labels=LABELS, pair_source="all", prompt_format=CompactFormat())
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


def test_hints_narrow_the_answer_space_only_when_asked(toy_doc):
    toy_doc._.relation_candidates = [
        {"head": 0, "tail": 1, "score": 0.9, "hints": [
            {"label": "P19", "score": 0.8}, {"label": "P170", "score": 0.1},
            {"label": "P999", "score": 0.05}]},
        {"head": 3, "tail": 2, "score": 0.7}]
    narrowed = LMRCTask(labels=LABELS, pair_source="candidates", prompt_format=CompactFormat(),
                        hint_top_m=1)
    request, pairs = narrowed.build_request(toy_doc)
    assert pairs == [(0, 1), (3, 2)]
    assert request.queries[0].answer_space == ["place of birth"]
    assert request.space_of(request.queries[1]) == request.answer_space  # no hints: all
    assert narrowed.get_config()["hint_top_m"] == 1
    whole = LMRCTask(labels=LABELS, pair_source="candidates", prompt_format=CompactFormat())
    assert all(q.answer_space is None for q in whole.build_request(toy_doc)[0].queries)
    with pytest.raises(ValueError, match="hint_top_m"):
        LMRCTask(labels=LABELS, hint_top_m=0)


def test_answers_become_relations_with_the_llm_probability(toy_doc):
    from spacy_lmrc.tasks.base import ParseStats

    task = LMRCTask(labels=LABELS, allow_none=True, fusion=LLMScore(0.3))
    stats = ParseStats()
    relations = task.relations_from_answers(
        toy_doc, [(0, 1), (3, 2), (1, 0)],
        [[("place of birth", 0.9)], [("creator", 0.2)], [("None", 0.8)]], stats)
    assert relations == [{"head": 0, "tail": 1, "label": "P19", "score": 0.9,
                          "scores": {"pair": None, "relation": 0.9, "none": 0.0}}]
    assert stats.counts["below_threshold"] == 1 and stats.counts["none"] == 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_finetuning_saves_what_the_backend_loads(tiny_llama, toy_doc, tmp_path, method):
    task = LMRCTask(labels=LABELS, pair_source="all", prompt_format=CompactFormat())
    out = tmp_path / method
    summary = finetune(task, [toy_doc], out, FinetuneSettings(
        base_model=tiny_llama, method=method, max_steps=2, batch_size=1, warmup_steps=1,
        learning_rate=1e-3, save_every=1))
    assert summary["steps"] == 2
    assert summary["train_tokens"] > 0 and summary["tokens_per_second"] > 0
    line = finished_line(summary, out)
    assert line.startswith("1 sequences (0 skipped as too long), 2 steps") and "tokens/s" in line
    assert line.endswith(f"{'LoRA adapter' if method == 'lora' else 'model'} in {out}")
    stored = json.loads((out / "lmrc_training.json").read_text())
    assert stored["task"]["prompt_format"] == CompactFormat().config()
    assert (out / ("model.safetensors" if method == "full" else "adapter_config.json")).exists()

    classifier = RCModel.from_pretrained(out)
    assert classifier.method == method and classifier.prompt_format.config() == (
        CompactFormat().config())
    backend = HFBackend(model="another-model")  # the folder names its own base model
    backend.use_classifier(classifier)
    request, _ = task.build_request(toy_doc)
    (answers,) = backend.answer([request], task.prompt_format)
    assert len(answers) == 12 and all(a and a[0][0] in NAMES for a in answers)
    assert classifier.task_for(None).get_config() == task.get_config()
    with pytest.raises(InputError, match="prompt format"):
        classifier.task_for(LMRCTask(labels=LABELS, prompt_format=PaperFormat()))
    with pytest.warns(UserWarning, match="another relation set"):
        classifier.task_for(LMRCTask(labels={"P17": "country"}, prompt_format=CompactFormat()))


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
        "task": {"@misc": "spacy_lmrc.LMRCBaselineTask.v1", "labels": LABELS},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_llama,
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

    doc = docred_record_to_doc(toy_record, spacy.blank("en").vocab)
    task = LMRCTask(labels=LABELS, pair_source="all", prompt_format=CompactFormat())
    out = tmp_path / "rc"
    for method in ("lora", "full"):
        finetune(task, [doc], out, FinetuneSettings(base_model=tiny_llama, method=method,
                                                    max_steps=1, warmup_steps=0))
    assert RCModel.from_pretrained(out).method == "full"
    assert not (out / "adapter_config.json").exists()
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "model": str(out), "task": None, "backend": {"@misc": "spacy_lmrc.HFBackend.v1"}})
    before = nlp(input_copy(doc))._.relations
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(out)
    again = spacy.load(tmp_path / "pipeline")
    assert again(input_copy(docred_record_to_doc(toy_record, again.vocab)))._.relations == before


# several packed sequences in one forward call -------------------------------------------------

def _sentence_sequences(tokenizer):
    """Three short packed sequences of different lengths and answer counts."""
    from spacy_lmrc.llm import SentenceFormat

    space = AnswerSpace(tokenizer, NAMES, multi_label=False)
    sentences = [("Ada Lovelace was born in London.", [("Ada Lovelace", "London")],
                  ["place of birth"]),
                 ("Babbage designed the Analytical Engine, a machine.",
                  [("Analytical Engine", "Babbage"), ("Babbage", "Analytical Engine")],
                  ["creator", "country"]),
                 ("Paris.", [("Paris", "France")], ["country"])]
    sequences = []
    for text, pairs, names in sentences:
        request = RelationRequest(text, [PairQuery(h, t) for h, t in pairs], NAMES,
                                  multi_label=False)
        encoded = encode_request(tokenizer, SentenceFormat(), request)
        sequences.append(pack_training_sequence(encoded, [space.encode([n]) for n in names]))
    return sequences


def test_concatenated_sequences_see_only_themselves(tiny):
    from spacy_lmrc.llm import concat_sequences

    _, tokenizer = tiny
    sequences = _sentence_sequences(tokenizer)
    batch = concat_sequences(sequences)
    assert len(batch) == sum(len(s) for s in sequences)
    visible = batch.visible()
    offset = 0
    for seq in sequences:
        end = offset + len(seq)
        assert visible[offset:end, offset:end].equal(seq.visible())  # its own mask inside
        assert not visible[offset:end, :offset].any() and not visible[offset:end, end:].any()
        assert batch.position_ids[offset:end] == seq.position_ids  # positions restart
        offset = end
    assert batch.input_ids == [t for s in sequences for t in s.input_ids]
    starts = [0, len(sequences[0]), len(sequences[0]) + len(sequences[1])]
    assert batch.target_index == [start + i for start, seq in zip(starts, sequences)
                                  for i in seq.target_index]
    assert batch.target_ids == [t for s in sequences for t in s.target_ids]
    assert sum(batch.target_weights) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        concat_sequences([])


def test_loss_of_a_concatenation_is_the_mean_of_the_sequence_losses(tiny):
    import torch

    from spacy_lmrc.classifier.training import batch_packed_loss, packed_loss
    from spacy_lmrc.llm import concat_sequences
    from spacy_lmrc.llm.sequences import group_sequences

    model, tokenizer = tiny
    sequences = _sentence_sequences(tokenizer)
    with torch.no_grad():
        alone = [float(packed_loss(model, seq, torch.float32)) for seq in sequences]
        together = float(packed_loss(model, concat_sequences(sequences), torch.float32))
        # a token budget that splits the batch into several calls gives the same mean
        budget = len(sequences[0]) + len(sequences[1])
        assert [len(g.sequences) for g in group_sequences(sequences, budget)] == [2, 1]
        split = float(batch_packed_loss(model, sequences, torch.float32, budget))
    assert together == pytest.approx(sum(alone) / len(alone), abs=1e-5)
    assert split == pytest.approx(together, abs=1e-5)
    assert len(group_sequences(sequences, 1)) == 3  # longer than the budget: each alone


# several requests in one forward pass ---------------------------------------------------------

SENTENCES = [("Ada Lovelace was born in London.", [("Ada Lovelace", "London")]),
             ("Babbage designed the Analytical Engine, a machine of brass.",
              [("Analytical Engine", "Babbage"), ("Babbage", "Analytical Engine")]),
             ("Paris.", [("Paris", "France")]),
             ("Nothing to ask here.", []),
             ("Paris.", [("Paris", "Europe")])]  # the same sentence again: same prefix


def _mixed_requests(tokenizer):
    """Sentences (sharing the instruction), a document in another format, one request with
    more queries than a group holds, and one without queries; encoded, with answer spaces."""
    from spacy_lmrc.llm import SentenceFormat

    requests = [(SentenceFormat(), RelationRequest(text, [PairQuery(h, t) for h, t in pairs],
                                                   NAMES))
                for text, pairs in SENTENCES]
    requests.insert(2, (CompactFormat(), _request()))
    requests.append((PaperFormat(), _request(none_answer="None")))
    encoded = [encode_request(tokenizer, fmt, request) for fmt, request in requests]
    spaces = [[AnswerSpace(tokenizer, request.space_of(q), none_answer=request.none_answer,
                           max_names=3) for q in request.queries] for _, request in requests]
    return encoded, spaces


def _assert_same_answers(got, want):
    assert [[[n for n, _ in a] for a in r] for r in got] == [
        [[n for n, _ in a] for a in r] for r in want]
    for got_request, want_request in zip(got, want):
        for got_answer, want_answer in zip(got_request, want_request):
            assert [p for _, p in got_answer] == pytest.approx([p for _, p in want_answer],
                                                               abs=1e-4)


@pytest.mark.parametrize("batch_tokens", [8, 512])
def test_batched_decoding_equals_one_request_at_a_time(tiny, batch_tokens):
    """Several requests per forward pass (block-diagonal visibility, the common instruction
    encoded once and cached) answer exactly as each request decoded alone."""
    import torch

    model, tokenizer = tiny
    encoded, spaces = _mixed_requests(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[spaces[0][0].separator_id] += 0.5  # several names per answer
    try:
        batched = PackedDecoder(model, query_batch_size=3, batch_tokens=batch_tokens)
        got = batched.decode_many(encoded, spaces)
        alone = [PackedDecoder(model, query_batch_size=3) for _ in encoded]
        want = [decoder.decode(e, s) for decoder, e, s in zip(alone, encoded, spaces)]
    finally:
        with torch.no_grad():
            model.lm_head.weight[spaces[0][0].separator_id] -= 0.5
    _assert_same_answers(got, want)
    assert got[4] == [] and all(answer for request in got for answer in request)
    assert batched.fed_tokens < sum(decoder.fed_tokens for decoder in alone)
    if batch_tokens == 512:  # the sentences share forward calls
        assert batched.forward_calls < sum(decoder.forward_calls for decoder in alone)


def test_groups_respect_the_query_and_token_budgets(tiny):
    model, tokenizer = tiny
    encoded, _ = _mixed_requests(tokenizer)
    groups = PackedDecoder(model, query_batch_size=3, batch_tokens=10_000).groups(encoded)
    # the 4-query document is decoded alone in chunks of 3; the empty request is skipped
    assert [[(i, list(q)) for i, q in group] for group in groups] == [
        [(0, [0]), (1, [0, 1])], [(2, [0, 1, 2])], [(2, [3])], [(3, [0]), (5, [0])],
        [(6, [0, 1, 2])], [(6, [3])]]
    tight = PackedDecoder(model, query_batch_size=64, batch_tokens=1).groups(encoded)
    assert [len(group) for group in tight] == [1] * 6  # each request alone
    shared = PackedDecoder(model, batch_tokens=10_000).groups(encoded[:2])
    assert len(shared) == 1


def test_the_instruction_is_encoded_once_across_calls(tiny):
    """The decoder keeps the KV cache of the instruction the sentences start with: a second
    call reads only each sentence's own tokens, and answers the same."""
    from spacy_lmrc.llm import SentenceFormat
    from spacy_lmrc.llm.decoding import common_prefix_length

    model, tokenizer = tiny
    requests = [RelationRequest(text, [PairQuery(h, t) for h, t in pairs], NAMES,
                                multi_label=False)
                for text, pairs in SENTENCES if pairs]
    encoded = [encode_request(tokenizer, SentenceFormat(), r) for r in requests]
    spaces = [[AnswerSpace(tokenizer, NAMES, multi_label=False)] * len(r.queries)
              for r in requests]
    instruction = common_prefix_length([e.prefix_ids for e in encoded])
    assert instruction > 5
    decoder = PackedDecoder(model)
    first = decoder.decode_many(encoded, spaces)
    fed, calls = decoder.fed_tokens, decoder.forward_calls
    second = decoder.decode_many(encoded, spaces)
    assert decoder.fed_tokens - fed == fed - instruction
    assert decoder.forward_calls - calls == calls - 1
    _assert_same_answers(second, first)
    decoder.reset()
    _assert_same_answers(decoder.decode_many(encoded, spaces), first)
    assert decoder.fed_tokens - fed == fed + (fed - instruction)
