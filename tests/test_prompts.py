"""Text prompts of LMRC requests (the text format for text-only models): LMRC appendix A
layout, k pairs per prompt, no unfilled placeholders."""

from __future__ import annotations

import re

import pytest

from spacy_lmrc.errors import InputError
from spacy_lmrc.llm.text import TextFormat
from spacy_lmrc.tasks.lmrc import LMRCTask, make_lmrc_baseline_task, make_lmrc_task

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{%|%\}|\{[a-z_ ]+\}")


def _prompts(task, doc, **text_format):
    request, pairs = task.build_request(doc)
    return TextFormat(**text_format).prompts(request), pairs


def test_rc_prompt_has_every_part_and_nothing_unfilled(toy_doc):
    prompts, _ = _prompts(LMRCTask(labels=LABELS), toy_doc, pairs_per_prompt=5)
    assert [len(p.queries) for p in prompts] == [5, 5, 2]  # 12 ordered pairs without a proposer
    text = prompts[0].text
    assert not PLACEHOLDER.search(text)
    assert "This is a relation classification task." in text
    assert "place of birth; creator; partner in business or sport" in text
    assert toy_doc.text in text
    assert "### 5 Entity pairs:\n(Ada Lovelace| -| London)\n" in text
    assert text.rstrip().endswith("### Response:")
    assert "None" not in text


def test_baseline_prompt_allows_none(toy_doc):
    (prompt,), _ = _prompts(make_lmrc_baseline_task(labels=LABELS), toy_doc)
    assert "return None" in prompt.text and not PLACEHOLDER.search(prompt.text)
    assert "### 12 Entity pairs:" in prompt.text


def test_candidates_are_used_when_present(toy_doc):
    toy_doc._.relation_candidates = [{"head": 3, "tail": 2, "score": 0.9},
                                     {"head": 0, "tail": 1, "score": 0.7}]
    (prompt,), pairs = _prompts(make_lmrc_task(labels=LABELS), toy_doc)
    assert pairs == [(0, 1), (3, 2)] and prompt.queries == [0, 1]
    expected = "(Ada Lovelace| -| London)\n(Analytical Engine| -| Charles Babbage)"
    assert f"### 2 Entity pairs:\n{expected}" in prompt.text
    assert prompt.max_new_tokens == 2 * TextFormat().tokens_per_pair
    # the baseline classifies every pair whatever a proposer kept
    (baseline,), _ = _prompts(make_lmrc_baseline_task(labels=LABELS), toy_doc)
    assert len(baseline.queries) == 12


def test_candidates_only_mode_gives_no_prompt_for_a_doc_without_candidates(toy_doc):
    prompts, pairs = _prompts(LMRCTask(labels=LABELS, pair_source="candidates"), toy_doc)
    assert prompts == [] and pairs == []


def test_user_template_and_few_shot_examples(toy_doc, tmp_path):
    template = tmp_path / "mine.jinja"
    template.write_text("R: {{ relations | join(',') }}\n{% for e in examples %}EX {{ e.answer }}\n"
                        "{% endfor %}T: {{ text }}\n{% for h, t in pairs %}{{ h }} -> {{ t }}\n"
                        "{% endfor %}")
    (prompt,), _ = _prompts(LMRCTask(labels=LABELS), toy_doc, template=template, examples=[
        {"text": "X", "pairs": [["a", "b"]], "answer": "(a| creator| b)"}])
    assert prompt.text.startswith("R: place of birth,creator,partner in business or sport\n")
    assert "EX (a| creator| b)" in prompt.text and "Ada Lovelace -> London" in prompt.text


def test_packaged_few_shot_block_renders(toy_doc):
    (prompt,), _ = _prompts(LMRCTask(labels=LABELS), toy_doc, examples=[
        {"text": "Bob was born in Rome.", "pairs": [["Bob", "Rome"]],
         "answer": "(Bob| place of birth| Rome)"}])
    assert "### Example 1 text:\nBob was born in Rome." in prompt.text
    assert "(Bob| -| Rome)" in prompt.text and not PLACEHOLDER.search(prompt.text)


def test_missing_label_file_and_bad_candidates_are_clear_errors(toy_doc, tmp_path):
    with pytest.raises(InputError, match="not found"):
        LMRCTask(labels_path=tmp_path / "nope.json").build_request(toy_doc)
    with pytest.raises(ValueError, match="labels_path"):
        LMRCTask().build_request(toy_doc)  # no relation set: the error comes on use
    toy_doc._.relation_candidates = [{"head": 0, "tail": 9, "score": 1.0}]
    with pytest.raises(InputError, match="candidate pair"):
        LMRCTask(labels=LABELS).build_request(toy_doc)
    with pytest.raises(InputError, match="prompt template not found"):
        TextFormat(template=str(tmp_path / "nope.jinja"))


def test_unfilled_variable_is_an_error(toy_doc, tmp_path):
    from jinja2 import UndefinedError

    template = tmp_path / "bad.jinja"
    template.write_text("{{ relation_set }}")
    with pytest.raises(UndefinedError):
        _prompts(LMRCTask(labels=LABELS), toy_doc, template=template)


def test_registered_names_are_versioned_from_v1_through_entry_points():
    """Every registered name is NAME.vN, each through an entry point; a name's versions run
    v1..vN without gaps (a changed signature adds a version, the old one stays)."""
    import re
    from collections import defaultdict
    from importlib import metadata

    versions: dict[str, list[int]] = defaultdict(list)
    for ep in metadata.distribution("spacy-lmrc").entry_points:
        if ep.name.startswith("spacy_lmrc."):
            match = re.fullmatch(r"(.+)\.v(\d+)", ep.name)
            assert match, ep.name
            versions[match.group(1)].append(int(match.group(2)))
    assert all(sorted(found) == list(range(1, len(found) + 1)) for found in versions.values())
    assert versions["spacy_lmrc.LMRCTask"] == [1] and versions["spacy_lmrc.HFBackend"] == [1]
    assert sorted(versions["spacy_lmrc.OpenAIBackend"]) == [1, 2]
    assert sorted(versions["spacy_lmrc.SentenceRETask"]) == [1, 2, 3]


def test_settings_of_the_earlier_layout_are_left_to_the_text_format():
    task = LMRCTask(labels=LABELS)
    task.set_config({"pair_source": "candidates", "template_text": "{{ text }}",
                     "pairs_per_prompt": 7, "fuzzy_cutoff": 60})
    assert task.pair_source == "candidates"
    assert not hasattr(task, "fuzzy_cutoff") and not hasattr(task, "pairs_per_prompt")
