"""Sentence-level relation classification prompts: RAG4RE's simple query and RAG4RE prompts.

One prompt per entity pair asks for exactly one label of the label set. Two templates, after the
RAG4RE code's SemEval/TACRED templates (and with every placeholder filled):

* ``simple_query``: question, sentence, head (e1) and tail (e2), relation types, output format;
* ``rag4re``: the same preceded by the problem definition and the retrieved example sentence(s)
  from ``doc._.rag_examples`` (the ``rag4re_retriever`` writes them). As in RAG4RE the example's
  label is not shown; ``include_example_label`` shows it (with its e1/e2) as a one-shot example.

How labels are shown and read back. Labels are shown to the LLM exactly as the corpus spells
them (SemEval's ``Cause-Effect(e1,e2)``, TACRED's ``per:city_of_birth``) unless ``label_names``
maps them to other display names; the prompt names the head entity ``e1`` and the tail ``e2``, so
SemEval's direction suffixes read naturally. The negative label (``Other``, ``no_relation``) is
part of the set shown. An answer is read in four steps, each counted in the :class:`ParseStats`:

1. ``exact``: the answer's first non-empty line, stripped of quotes/final period and an
   ``Answer:``/``relation_type:`` prefix, is a display name;
2. ``normalised``: lower-cased with everything but letters and digits removed, it equals a
   label's normalised name, or contains exactly one (longest-match; an answer that names several
   labels, e.g. an echo of the label list, counts as ``ambiguous``);
3. ``fuzzy``: thefuzz ``ratio`` of the normalised line against the normalised names reaches
   ``fuzzy_cutoff`` (a unique best match);
4. otherwise the negative label (``fallback_negative``; ``empty`` counts blank answers too).

The first answers that needed the fuzzy step or fell back are kept in ``ParseStats.samples``.

A positive label becomes ``{"head", "tail", "label", "score"}`` in ``doc._.relations`` (score 1.0,
or the fuzzy ratio / 100); the negative label becomes no relation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, meta
from spacy.tokens import Doc
from spacy.util import registry
from thefuzz import fuzz

from ..corpus.sentence import SEMEVAL_NEGATIVE, load_label_names, strip_markup
from ..doc import Relation, ordered_pairs
from .base import ParseStats, PromptUnit, RelationTask

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
BUILTIN_TEMPLATES = {
    "simple_query": TEMPLATES_DIR / "rag4re_simple_query.jinja",
    "rag4re": TEMPLATES_DIR / "rag4re_rag.jinja",
}
_PREFIX = re.compile(r"^\s*(?:answer|relation(?:[ _]type)?|output|label)\s*[:=]\s*", re.I)


def normalise_label(text: str) -> str:
    """Lower case with everything but letters and digits removed (``Cause-Effect(e1,e2)`` ->
    ``causeeffecte1e2``)."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


@lru_cache(maxsize=16)
def load_template(source: str) -> tuple[Any, frozenset[str]]:
    """A built-in template name or a Jinja2 file path -> (template, the variables it reads).

    Undefined variables raise (``StrictUndefined``), so no placeholder is ever sent unfilled.
    """
    path = BUILTIN_TEMPLATES.get(source, Path(source))
    if not path.exists():
        raise FileNotFoundError(
            f"prompt template {source!r} not found: use {sorted(BUILTIN_TEMPLATES)} or the path "
            f"of a Jinja2 file")
    env = Environment(undefined=StrictUndefined, autoescape=False)
    text = path.read_text(encoding="utf8")
    variables = frozenset(meta.find_undeclared_variables(env.parse(text)))
    return env.from_string(text), variables


class LabelParser:
    """Reads one label from an answer: exact, normalised, fuzzy, else the negative label."""

    def __init__(self, labels: dict[str, str], negative_label: str, fuzzy_cutoff: int = 85):
        self.labels = labels
        self.negative_label = negative_label
        self.fuzzy_cutoff = fuzzy_cutoff
        self.by_display = {display: label for label, display in labels.items()}
        self.by_normalised: dict[str, str] = {}
        for label, display in labels.items():
            for form in {normalise_label(display), normalise_label(label)}:
                if form:
                    self.by_normalised.setdefault(form, label)

    @staticmethod
    def first_line(answer: str) -> str:
        for line in answer.splitlines():
            line = _PREFIX.sub("", line.strip()).strip(" \t\"'`*")
            if line:
                return line[:-1] if line.endswith(".") else line
        return ""

    def parse(self, answer: str, stats: ParseStats) -> tuple[str, float]:
        """The label and a confidence for one answer; counts the step that decided it."""
        line = self.first_line(answer)
        if not line:
            stats.add("empty")
            stats.add("fallback_negative")
            return self.negative_label, 0.0
        if line in self.by_display:
            stats.add("exact")
            return self.by_display[line], 1.0
        norm = normalise_label(line)
        if norm in self.by_normalised:
            stats.add("normalised")
            return self.by_normalised[norm], 1.0
        contained = self._contained(norm)
        if len(contained) == 1:
            stats.add("normalised")
            return contained[0], 1.0
        if len(contained) > 1:
            stats.add("ambiguous")
            stats.add("fallback_negative")
            stats.sample("ambiguous", answer[:200])
            return self.negative_label, 0.0
        scored = sorted(((fuzz.ratio(norm, form), form) for form in self.by_normalised),
                        reverse=True)
        if scored and scored[0][0] >= self.fuzzy_cutoff and (
                len(scored) == 1 or scored[1][0] < scored[0][0]
                or self.by_normalised[scored[1][1]] == self.by_normalised[scored[0][1]]):
            stats.add("fuzzy")
            stats.sample("fuzzy", answer[:200])
            return self.by_normalised[scored[0][1]], scored[0][0] / 100
        stats.add("fallback_negative")
        stats.sample("fallback_negative", answer[:200])
        return self.negative_label, 0.0

    def _contained(self, norm: str) -> list[str]:
        """Labels whose normalised name occurs in ``norm``, minus those inside a longer match."""
        hits = [form for form in self.by_normalised if form in norm]
        kept = [f for f in hits if not any(f != g and f in g for g in hits)]
        return sorted({self.by_normalised[f] for f in kept})


class SentenceRETask(RelationTask):
    """One prompt per entity pair asking for one label (RAG4RE's sentence-level RE)."""

    def __init__(self, labels: Sequence[str], *, template: str = "rag4re",
                 negative_label: str = SEMEVAL_NEGATIVE,
                 label_names: dict[str, str] | None = None,
                 include_example_label: bool = False, fuzzy_cutoff: int = 85):
        labels = list(dict.fromkeys(labels))
        if negative_label not in labels:
            labels.append(negative_label)
        unknown = set(label_names or {}) - set(labels)
        if unknown:
            raise ValueError(f"label_names names labels outside the label set: {sorted(unknown)}")
        self.labels = {label: (label_names or {}).get(label, label) for label in labels}
        self.template_name = template
        self.template, variables = load_template(template)
        self.uses_examples = "examples" in variables
        self.negative_label = negative_label
        self.include_example_label = include_example_label
        self.fuzzy_cutoff = fuzzy_cutoff
        self.parser = LabelParser(self.labels, negative_label, fuzzy_cutoff)

    # ---------------------------------------------------------------- prompts
    def pairs(self, doc: Doc) -> list[tuple[int, int]]:
        """Candidates when a proposer ran; else (0, 1) for a two-entity sentence; else all."""
        if doc._.relation_candidates:
            return [(c["head"], c["tail"]) for c in doc._.relation_candidates]
        if len(doc._.entities) == 2:
            return [(0, 1)]
        return list(ordered_pairs(doc))

    def render(self, doc: Doc, head: int, tail: int) -> str:
        """The prompt for one pair of ``doc``."""
        entities = doc._.entities
        examples = []
        if self.uses_examples:
            if not doc._.rag_examples:
                raise ValueError(
                    f"the {self.template_name!r} template needs retrieved examples but Doc "
                    f"{doc._.title!r} has no doc._.rag_examples: add the 'rag4re_retriever' "
                    f"component before the classifier (or use template 'simple_query')")
            examples = [{**ex, "label": self.labels.get(ex["label"], ex["label"])}
                        for ex in doc._.rag_examples]
        return self.template.render(
            sentence=strip_markup(doc.text),
            head=_mention_name(entities[head]),
            tail=_mention_name(entities[tail]),
            relation_types=", ".join(self.labels.values()),
            examples=examples,
            include_example_label=self.include_example_label,
        ).strip()

    def generate_prompts(self, doc: Doc) -> list[PromptUnit]:
        self.require_labels()
        return [PromptUnit(self.render(doc, h, t), [(h, t)]) for h, t in self.pairs(doc)]

    # ---------------------------------------------------------------- answers
    def parse_responses(self, doc: Doc, units: list[PromptUnit], responses: list[str],
                        stats: ParseStats) -> list[Relation]:
        if len(units) != len(responses):
            raise ValueError(f"{len(units)} prompts but {len(responses)} answers")
        relations: list[Relation] = []
        for unit, answer in zip(units, responses):
            label, score = self.parser.parse(answer, stats)
            if label != self.negative_label:
                for head, tail in unit.pairs:
                    relations.append({"head": head, "tail": tail, "label": label, "score": score})
        return relations

    def training_examples(self, doc: Doc) -> list[tuple[str, str]]:
        """(prompt, display name of the gold label) per pair; the negative label included."""
        self.require_labels()
        gold = {(r["head"], r["tail"]): r["label"] for r in doc._.relations}
        return [(self.render(doc, h, t), self.labels.get(gold.get((h, t), self.negative_label),
                                                          gold.get((h, t), self.negative_label)))
                for h, t in self.pairs(doc)]

    def answer_token_budget(self, unit: PromptUnit) -> int | None:
        """An answer is one label: no label needs more tokens than it has characters (+ EOS
        and a little slack), so generation stops early instead of running to the backend's
        limit."""
        return max(len(display) for display in self.labels.values()) + 4

    def get_config(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "label_names": self.labels,
                "template": self.template_name, "negative_label": self.negative_label,
                "include_example_label": self.include_example_label,
                "fuzzy_cutoff": self.fuzzy_cutoff}

    def set_config(self, cfg: dict[str, Any]) -> None:
        """Restore the settings :meth:`get_config` saved (``nlp.from_disk``)."""
        self.pending_labels_path = None
        self.__init__(cfg["labels"], template=cfg["template"],  # type: ignore[misc]
                      negative_label=cfg["negative_label"], label_names=cfg["label_names"],
                      include_example_label=cfg["include_example_label"],
                      fuzzy_cutoff=cfg["fuzzy_cutoff"])


def _mention_name(entity: dict[str, Any]) -> str:
    mentions = entity.get("mentions") or []
    return mentions[0]["name"] if mentions else entity["name"]


@registry.misc("spacy_lmrc.SentenceRETask.v1")
def make_sentence_task(
    labels: list[str] | None = None,
    labels_path: str | None = None,
    template: str = "rag4re",
    negative_label: str = SEMEVAL_NEGATIVE,
    label_names: dict[str, str] | None = None,
    include_example_label: bool = False,
    fuzzy_cutoff: int = 85,
) -> SentenceRETask:
    """Sentence-level RE task (RAG4RE).

    labels / labels_path: the label set, as a list or a file (list of names, a Hugging Face
    features schema such as SemEval's ``relations.json``, or a ``{name: id}`` map).
    template: ``rag4re``, ``simple_query`` or the path of a Jinja2 template.
    label_names: optional display names for labels. include_example_label: show the retrieved
    examples' labels (RAG4RE does not). fuzzy_cutoff: thefuzz ratio needed for a fuzzy match.
    """
    if (labels is None) == (labels_path is None):
        raise ValueError("give exactly one of labels (a list) or labels_path (a file)")
    pending = labels is None and not Path(labels_path).exists()  # type: ignore[arg-type]
    if pending:
        names: list[str] = []
    else:
        names = list(labels) if labels is not None else load_label_names(labels_path)  # type: ignore[arg-type]
    task = SentenceRETask(names, template=template, negative_label=negative_label,
                          label_names=label_names, include_example_label=include_example_label,
                          fuzzy_cutoff=fuzzy_cutoff)
    task.pending_labels_path = str(labels_path) if pending else None
    return task


# registers spacy_lmrc.RetrievedSentenceCorpus.v1, the reader that fine-tuning on RAG4RE prompts
# needs, wherever the task is available
from ..pipeline import rag_retriever as _rag_retriever  # noqa: E402,F401
