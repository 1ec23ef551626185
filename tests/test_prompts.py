"""Prompt rendering: LMRC appendix A layout, k pairs per prompt, no unfilled placeholders."""

from __future__ import annotations

import re

import pytest

from spacy_lmrc.errors import InputError
from spacy_lmrc.tasks.document import LMRCTask, make_lmrc_baseline_task, make_lmrc_task

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{%|%\}|\{[a-z_ ]+\}")


def test_rc_prompt_has_every_part_and_nothing_unfilled(toy_doc):
    task = LMRCTask(labels=LABELS, pairs_per_prompt=5)
    units = task.generate_prompts(toy_doc)
    assert [len(u.pairs) for u in units] == [5, 5, 2]  # 12 ordered pairs without a proposer
    text = units[0].text
    assert not PLACEHOLDER.search(text)
    assert "This is a relation classification task." in text
    assert "place of birth; creator; partner in business or sport" in text
    assert toy_doc.text in text
    assert "### 5 Entity pairs:\n(Ada Lovelace| -| London)\n" in text
    assert text.rstrip().endswith("### Response:")
    assert "None" not in text


def test_baseline_prompt_allows_none(toy_doc):
    task = make_lmrc_baseline_task(labels=LABELS)
    (unit,) = task.generate_prompts(toy_doc)
    assert "return None" in unit.text and not PLACEHOLDER.search(unit.text)
    assert "### 12 Entity pairs:" in unit.text


def test_candidates_are_used_when_present(toy_doc):
    toy_doc._.relation_candidates = [{"head": 3, "tail": 2, "score": 0.9},
                                     {"head": 0, "tail": 1, "score": 0.7}]
    task = make_lmrc_task(labels=LABELS)
    (unit,) = task.generate_prompts(toy_doc)
    assert unit.pairs == [(0, 1), (3, 2)]
    expected = "(Ada Lovelace| -| London)\n(Analytical Engine| -| Charles Babbage)"
    assert f"### 2 Entity pairs:\n{expected}" in unit.text
    assert task.answer_token_budget(unit) == 2 * task.tokens_per_pair
    # the baseline classifies every pair whatever a proposer kept
    assert len(make_lmrc_baseline_task(labels=LABELS).generate_prompts(toy_doc)[0].pairs) == 12


def test_candidates_only_mode_gives_no_prompt_for_a_doc_without_candidates(toy_doc):
    assert LMRCTask(labels=LABELS, pair_source="candidates").generate_prompts(toy_doc) == []


def test_user_template_and_few_shot_examples(toy_doc, tmp_path):
    template = tmp_path / "mine.jinja"
    template.write_text("R: {{ relations | join(',') }}\n{% for e in examples %}EX {{ e.answer }}\n"
                        "{% endfor %}T: {{ text }}\n{% for h, t in pairs %}{{ h }} -> {{ t }}\n"
                        "{% endfor %}")
    task = LMRCTask(labels=LABELS, template=template, pairs_per_prompt=20,
                    examples=[{"text": "X", "pairs": [["a", "b"]], "answer": "(a| creator| b)"}])
    (unit,) = task.generate_prompts(toy_doc)
    assert unit.text.startswith("R: place of birth,creator,partner in business or sport\n")
    assert "EX (a| creator| b)" in unit.text and "Ada Lovelace -> London" in unit.text


def test_packaged_few_shot_block_renders(toy_doc):
    task = LMRCTask(labels=LABELS, examples=[
        {"text": "Bob was born in Rome.", "pairs": [["Bob", "Rome"]],
         "answer": "(Bob| place of birth| Rome)"}])
    text = task.generate_prompts(toy_doc)[0].text
    assert "### Example 1 text:\nBob was born in Rome." in text
    assert "(Bob| -| Rome)" in text and not PLACEHOLDER.search(text)


def test_missing_label_file_and_bad_candidates_are_clear_errors(toy_doc, tmp_path):
    with pytest.raises(InputError, match="not found"):
        LMRCTask(labels_path=tmp_path / "nope.json").generate_prompts(toy_doc)
    with pytest.raises(ValueError, match="labels_path"):
        LMRCTask().generate_prompts(toy_doc)  # no relation set: the error comes on use
    toy_doc._.relation_candidates = [{"head": 0, "tail": 9, "score": 1.0}]
    with pytest.raises(InputError, match="candidate pair"):
        LMRCTask(labels=LABELS).generate_prompts(toy_doc)


def test_unfilled_variable_is_an_error(toy_doc, tmp_path):
    from jinja2 import UndefinedError

    template = tmp_path / "bad.jinja"
    template.write_text("{{ relation_set }}")
    with pytest.raises(UndefinedError):
        LMRCTask(labels=LABELS, template=template).generate_prompts(toy_doc)


@pytest.mark.parametrize("old, old_args, new, new_args", [
    ("spacy_lmrc.LMRCTask.v1", {"pairs": "candidates", "entity_cutoff": 70},
     "spacy_lmrc.LMRCTask.v3", {"pair_source": "candidates", "fuzzy_cutoff": 70,
                                "prompt_format": {"@misc": "spacy_lmrc.PaperFormat.v1"}}),
    ("spacy_lmrc.LMRCTask.v2", {"pairs": "all", "entity_cutoff": 70, "threshold": 0.3},
     "spacy_lmrc.LMRCTask.v3", {"pair_source": "all", "fuzzy_cutoff": 70, "threshold": 0.3}),
    ("spacy_lmrc.LMRCBaselineTask.v1", {"entity_cutoff": 70},
     "spacy_lmrc.LMRCBaselineTask.v3", {"fuzzy_cutoff": 70,
                                        "prompt_format": {"@misc": "spacy_lmrc.PaperFormat.v1"}}),
    ("spacy_lmrc.LMRCBaselineTask.v2", {"entity_cutoff": 70, "train_negatives": 1.0},
     "spacy_lmrc.LMRCBaselineTask.v3", {"fuzzy_cutoff": 70, "train_negatives": 1.0}),
])
def test_old_task_versions_keep_their_argument_names(toy_doc, old, old_args, new, new_args):
    """``pairs`` / ``entity_cutoff`` became ``pair_source`` / ``fuzzy_cutoff`` in ``.v3``; the
    older registered names still resolve with the old names and build the same task."""
    from spacy.util import registry

    before = registry.resolve({"t": {"@misc": old, "labels": LABELS, **old_args}})["t"]
    after = registry.resolve({"t": {"@misc": new, "labels": LABELS, **new_args}})["t"]
    assert before.get_config() == after.get_config()
    assert before.fuzzy_cutoff == 70 and before.entity_aligner.cutoff == 70
    assert before.generate_prompts(toy_doc) == after.generate_prompts(toy_doc)
    with pytest.raises(Exception, match="fuzzy_cutoff"):
        registry.resolve({"t": {"@misc": old, "labels": LABELS, "fuzzy_cutoff": 70}})


def test_settings_saved_under_the_old_names_are_restored():
    task = LMRCTask(labels=LABELS)
    task.set_config({"pairs": "candidates", "entity_cutoff": 60})
    assert task.pair_source == "candidates" and task.fuzzy_cutoff == 60
    assert task.entity_aligner.cutoff == 60 and not hasattr(task, "pairs")
