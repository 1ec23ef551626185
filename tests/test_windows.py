"""Documents longer than the LLM's context: windows of sentences, and the report of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import spacy
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.readers import input_copy
from spacy_lmrc.tasks.lmrc import LMRCTask
from spacy_lmrc.tasks.lmrc.windows import (
    SENTENCE_SLACK,
    describe_windowed,
    plan_windows,
    sentence_spans,
    window_text,
)

#: the short model's context, in tokens
CONTEXT = 128
LABELS = {"P19": "place of birth", "P17": "country"}
PEOPLE = ["Ada Lovelace", "Charles Babbage", "Mary Somerville", "Augustus De Morgan",
          "Michael Faraday", "John Herschel", "George Boole", "Florence Nightingale",
          "Caroline Herschel", "Hermann Hollerith"]
CITIES = ["London", "Paris", "Berlin", "Vienna", "Madrid", "Rome", "Lisbon", "Prague",
          "Hanover", "Buffalo"]
FILLER = "The letters were kept in a large library and read by many young students ."


def long_record(long_sentence: int | None = None) -> dict:
    """Ten blocks of three sentences: "<person> was born in <city> ...", a sentence naming the
    person again, a filler. Entity 2i is block i's person, 2i + 1 its city. With
    ``long_sentence``, block ``long_sentence``'s first sentence is longer than the context."""
    sents, vertex = [], []
    for block, (person, city) in enumerate(zip(PEOPLE, CITIES)):
        words = person.split()
        first = f"{person} was born in {city} and studied mathematics there for years .".split()
        if block == long_sentence:
            first = first[:-1] + "and wrote about the engines , the numbers".split() * 20 + ["."]
        start = len(sents)
        sents += [first,
                  f"Later {words[-1]} wrote long letters about engines and numbers .".split(),
                  FILLER.split()]
        vertex.append([{"name": person, "pos": [0, len(words)], "sent_id": start, "type": "PER"},
                       {"name": words[-1], "pos": [1, 2], "sent_id": start + 1, "type": "PER"}])
        at = len(words) + 3
        vertex.append([{"name": city, "pos": [at, at + 1], "sent_id": start, "type": "LOC"}])
    labels = [{"h": 2 * i, "t": 2 * i + 1, "r": "P19", "evidence": [3 * i]}
              for i in range(len(PEOPLE))]
    return {"title": "Letters", "sents": sents, "vertexSet": vertex, "labels": labels}


#: each block's person and city, and two pairs whose mentions lie at the two ends
CANDIDATES = [(2 * i, 2 * i + 1) for i in range(len(PEOPLE))] + [(0, 19), (18, 1)]


@pytest.fixture(scope="module")
def short_llama(tiny_llama, tmp_path_factory) -> str:
    """The tiny Llama with a context of :data:`CONTEXT` tokens."""
    path = tmp_path_factory.mktemp("short_llama")
    shutil.copytree(tiny_llama, path, dirs_exist_ok=True)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def _pipeline(model: str, **task) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCTask.v1", "labels": LABELS, "allow_none": False,
                 "min_probability": None,
                 "prompt_format": {"@misc": "spacy_lmrc.CompactFormat.v1"}, **task},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": model}})
    return nlp


def _input(nlp: spacy.Language, record: dict, candidates=CANDIDATES):
    doc = input_copy(docred_record_to_doc(record, nlp.vocab))
    doc._.relation_candidates = [{"head": h, "tail": t, "score": 1.0} for h, t in candidates]
    return doc


def _recording(backend):
    """Keep every request the backend is asked to answer."""
    sent, answer = [], backend.answer

    def record(requests, prompt_format, stats=None):
        sent.extend(requests)
        return answer(requests, prompt_format, stats)

    backend.answer = record
    return sent


# planning, on sentence lengths alone -------------------------------------------------------


def test_a_pair_mentioned_far_apart_is_read_over_its_own_sentences():
    plan = plan_windows([10] * 10, [({0}, {9}), ({4}, {5})], budget=30, neighbours=0)
    assert [(w.sentences, w.pairs) for w in plan.windows] == [((0, 9), (0,)), ((4, 5), (1,))]
    assert plan.unfit == []


def test_pairs_share_a_window_while_it_fits_and_each_is_asked_once():
    pairs = [({0}, {1}), ({1}, {0}), ({0, 2}, {1}), ({6}, {7}), ({7}, {8})]
    plan = plan_windows([10] * 10, pairs, budget=4 * (10 + SENTENCE_SLACK), neighbours=1)
    asked = sorted(p for w in plan.windows for p in w.pairs)
    assert asked == list(range(len(pairs)))
    assert all(len(w.sentences) * (10 + SENTENCE_SLACK) <= 4 * (10 + SENTENCE_SLACK)
               for w in plan.windows)
    by_pair = {p: w.sentences for w in plan.windows for p in w.pairs}
    assert by_pair[0] == by_pair[1] == by_pair[2]  # one prefix for the pairs of sentences 0-2
    assert {6, 7} <= set(by_pair[3]) and {7, 8} <= set(by_pair[4])


def test_neighbours_come_after_the_mentions_and_only_as_the_budget_allows():
    costs = 10 + SENTENCE_SLACK
    plan = plan_windows([10] * 10, [({3}, {5})], budget=3 * costs, neighbours=2)
    assert plan.windows[0].sentences == (2, 3, 5)  # mentions, then the nearest neighbour
    plan = plan_windows([10] * 10, [({3}, {5})], budget=2 * costs, neighbours=2)
    assert plan.windows[0].sentences == (3, 5)


def test_a_pair_whose_sentences_alone_exceed_the_budget_is_counted_and_named():
    plan = plan_windows([10, 500, 10], [({0}, {2}), ({1}, {1})], budget=50, neighbours=1)
    assert [w.pairs for w in plan.windows] == [(0,)]
    assert plan.unfit == [1] and plan.unfit_sentences == [1]


def test_window_text_keeps_runs_of_sentences_as_written(nlp):
    doc = docred_record_to_doc(long_record(), nlp.vocab)
    spans = sentence_spans(doc)
    text = window_text(doc, spans, [0, 1, 29])
    assert text == (f"{doc[spans[0][0]:spans[1][1]].text} {doc[spans[29][0]:spans[29][1]].text}")


def test_window_neighbours_is_a_task_setting_kept_with_the_pipeline():
    task = LMRCTask(labels=LABELS, window_neighbours=2)
    restored = LMRCTask()
    restored.set_config(json.loads(json.dumps(task.get_config())))
    assert restored.window_neighbours == 2
    with pytest.raises(ValueError, match="window_neighbours must be 0 or more"):
        LMRCTask(window_neighbours=-1)


# the component, on a model whose context is short -----------------------------------------


def test_a_document_three_times_the_context_gets_relations_over_windows(short_llama):
    nlp = _pipeline(short_llama, pair_source="candidates")
    rc = nlp.get_pipe("llm_relation_classifier")
    doc = _input(nlp, long_record())
    assert len(rc.backend.tokenizer(doc.text)["input_ids"]) >= 3 * CONTEXT
    sent = _recording(rc.backend)
    doc = nlp(doc)
    # allow_none = false: every pair asked gets a relation, the far-apart pairs included
    assert sorted((r["head"], r["tail"]) for r in doc._.relations) == sorted(CANDIDATES)
    assert len(sent) > 1 and all(rc.backend.context_fit(r, rc.task.prompt_format).fits
                                 for r in sent)
    assert sorted((q.head_id, q.tail_id) for r in sent for q in r.queries) == sorted(CANDIDATES)
    assert all(len(r.text) < len(doc.text) for r in sent)
    counts = rc.stats.counts
    assert counts["windowed_documents"] == 1 and counts["windows"] == len(sent)
    assert "pairs_over_context" not in counts and "unanswered" not in counts
    assert "refused_over_context" not in rc.usage
    (entry,) = rc.report()["windowed"]
    assert entry["index"] == 0 and entry["title"] == "Letters"
    assert entry["context"] == CONTEXT and entry["prompt_tokens"] > CONTEXT
    assert entry["pairs"] == len(CANDIDATES) and entry["windows"] == len(sent)
    assert entry["sentences"] == 30 and entry["pairs_over_context"] == 0
    assert describe_windowed(entry).startswith(
        f"document 0 ('Letters'): its prompt needs {entry['prompt_tokens']} tokens, over the "
        f"LLM's context of {CONTEXT}, so its {len(CANDIDATES)} pairs were asked in {len(sent)} "
        "windows of its 30 sentences")


def test_the_baseline_asks_every_pair_once_over_windows_that_fit(short_llama):
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCBaselineTask.v1", "labels": LABELS},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": short_llama}})
    rc = nlp.get_pipe("llm_relation_classifier")
    doc = input_copy(docred_record_to_doc(long_record(), nlp.vocab))
    whole, pairs = rc.task.build_request(doc)
    fit = rc.backend.context_fit(whole, rc.task.prompt_format)
    assert not fit.fits and fit.context == CONTEXT
    windowed = rc.task.window_requests(doc, pairs, fit, rc.backend)
    assert len(pairs) == 20 * 19 and len(windowed.requests) > 1
    assert sorted(i for indices in windowed.pair_indices for i in indices) == list(range(380))
    for request, indices in zip(windowed.requests, windowed.pair_indices):
        assert [(q.head_id, q.tail_id) for q in request.queries] == [pairs[i] for i in indices]
        assert rc.backend.context_fit(request, rc.task.prompt_format).fits
        assert request.none_answer == "None"
    assert windowed.report["pairs_over_context"] == 0


def test_a_sentence_longer_than_the_context_is_counted_and_named(short_llama):
    nlp = _pipeline(short_llama, pair_source="candidates")
    rc = nlp.get_pipe("llm_relation_classifier")
    doc = nlp(_input(nlp, long_record(long_sentence=4)))
    # block 4's person and city meet only in its long first sentence
    assert sorted((r["head"], r["tail"]) for r in doc._.relations) == sorted(
        set(CANDIDATES) - {(8, 9)})
    counts = rc.stats.counts
    assert counts["pairs_over_context"] == 1 and counts["unanswered"] == 1
    (entry,) = rc.windowed
    assert entry["pairs_over_context"] == 1 and entry["sentences_over_context"] == [12]
    assert "1 pairs fit no window and were not asked (sentences [12] exceed the" in \
        describe_windowed(entry)


def test_a_document_that_fits_sends_the_very_request_it_sent_before(tiny_llama, toy_record):
    nlp = _pipeline(tiny_llama, pair_source="auto")
    rc = nlp.get_pipe("llm_relation_classifier")
    doc = input_copy(docred_record_to_doc(toy_record, nlp.vocab))
    expected, _ = rc.task.build_request(doc)
    sent = _recording(rc.backend)
    nlp(doc)
    assert sent == [expected]
    assert rc.windowed == [] and "windowed_documents" not in rc.stats.counts
    assert rc.usage["requests"] == 1


def test_predict_names_the_windowed_document(short_llama, tmp_path: Path):
    nlp = _pipeline(short_llama, pair_source="all")
    nlp.to_disk(tmp_path / "pipe")
    record = long_record()
    short = {"title": "Short", "sents": record["sents"][:3], "vertexSet": record["vertexSet"][:2],
             "labels": record["labels"][:1]}
    # the long document with the first and the last block's entities only: 12 pairs
    record["vertexSet"] = record["vertexSet"][:2] + record["vertexSet"][-2:]
    record["labels"] = [{"h": 0, "t": 1, "r": "P19"}, {"h": 2, "t": 3, "r": "P19"}]
    (tmp_path / "docs.json").write_text(json.dumps([short, record]))
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "pipe"),
                                      str(tmp_path / "docs.json"), str(out)])
    assert result.exit_code == 0, result.output
    assert "1 documents longer than the LLM's context were asked over windows" in result.output
    assert "document 1 ('Letters'): its prompt needs" in result.output
    assert "document 0" not in result.output
    predicted = json.loads(out.read_text())
    assert {p["title"] for p in predicted} == {"Short", "Letters"}


def test_a_seq2seq_model_gets_text_prompts_of_windows_that_fit(tiny_t5):
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"@misc": "spacy_lmrc.LMRCTask.v1", "labels": LABELS, "pair_source": "candidates",
                 "allow_none": False},
        "backend": {"@misc": "spacy_lmrc.HFBackend.v1", "model": tiny_t5, "max_new_tokens": 4,
                    "max_prompt_tokens": 3 * CONTEXT}})
    rc = nlp.get_pipe("llm_relation_classifier")
    doc = _input(nlp, long_record())
    whole, _ = rc.task.build_request(doc)
    assert not rc.backend.context_fit(whole, rc.task.prompt_format).fits
    nlp(doc)
    assert rc.stats.counts["windowed_documents"] == 1 and rc.stats.counts["windows"] > 1
    assert "refused_over_context" not in rc.usage and rc.usage["prompts"] >= rc.usage["requests"]
    assert rc.windowed[0]["pairs_over_context"] == 0
