"""Doc -> marked wordpieces: the RCP model's input (LMRC section 4.1, ATLOP's preprocessing).

A ``*`` marker word is inserted before and after every entity mention; the words are tokenized
one by one (as ATLOP does, so any Hugging Face tokenizer works without ``is_split_into_words``
support) and wrapped in the tokenizer's own special tokens. A mention is represented by the
wordpiece index of its opening marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from spacy.tokens import Doc

from ..doc import ordered_pairs
from ..errors import InputError

MARKER = "*"


@dataclass
class SpecialTokens:
    """The ids a tokenizer puts around a sequence (``[CLS]``/``[SEP]``, ``<s>``/``</s>``)."""

    start: list[int]
    end: list[int]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialTokens:
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(plain) + 1):
            if full[i:i + len(plain)] == plain:
                return cls(start=list(full[:i]), end=list(full[i + len(plain):]))
        raise ValueError(
            f"cannot locate the special tokens of tokenizer {type(tokenizer).__name__}")


@dataclass
class DocFeatures:
    """One document ready for the model.

    ``entity_pos[e]`` lists the wordpiece positions (in ``input_ids``, special tokens included)
    of the opening markers of entity ``e``'s mentions; ``sentence_starts[k]`` is the wordpiece
    position where sentence ``k`` begins; ``pairs`` are all ordered entity pairs, ``labels[i]``
    is 1.0 when ``pairs[i]`` holds any relation, ``pair_relations[i]`` its relation labels and
    ``pair_evidence[i]`` the evidence sentences of those relations (all three only when built
    with labels).
    """

    input_ids: list[int]
    entity_pos: list[list[int]]
    pairs: list[tuple[int, int]]
    labels: list[float] | None = None
    title: str | None = None
    pair_relations: list[list[str]] | None = None
    sentence_starts: list[int] | None = None
    pair_evidence: list[list[int]] | None = None


def featurize(doc: Doc, tokenizer, special: SpecialTokens | None = None, *,
              with_labels: bool = False, word_cache: dict[str, list[int]] | None = None
              ) -> DocFeatures:
    """Marked wordpieces, mention marker positions, pairs and (optionally) binary pair labels."""
    special = special or SpecialTokens.from_tokenizer(tokenizer)
    entities = doc._.entities
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for ent in entities:
        for m in ent["mentions"]:
            starts[m["start"]] = starts.get(m["start"], 0) + 1
            ends[m["end"]] = ends.get(m["end"], 0) + 1
    words = [t.text for t in doc]
    cache = word_cache if word_cache is not None else {}
    missing = [w for w in set(words) | {MARKER} if w not in cache]
    if missing:
        for word, ids in zip(missing, tokenizer(missing, add_special_tokens=False)["input_ids"]):
            cache[word] = ids
    marker_ids = cache[MARKER]
    input_ids = list(special.start)
    # marker position of each (mention start token) -> wordpiece index of its opening marker
    open_pos: dict[int, int] = {}
    sentence_starts: list[int] = []
    for i, word in enumerate(words + [None]):
        for _ in range(ends.get(i, 0)):
            input_ids += marker_ids
        if word is None:
            break
        if i == 0 or doc[i].is_sent_start:
            sentence_starts.append(len(input_ids))
        if i in starts:
            open_pos[i] = len(input_ids)
            input_ids += marker_ids * starts[i]
        input_ids += cache[word]
    input_ids += special.end
    entity_pos = [[open_pos[m["start"]] for m in ent["mentions"]] for ent in entities]
    pairs = list(ordered_pairs(doc))
    labels = pair_relations = pair_evidence = None
    if with_labels:
        by_pair: dict[tuple[int, int], list[str]] = {}
        evidence: dict[tuple[int, int], set[int]] = {}
        for k, rel in enumerate(doc._.relations):
            pair = (rel["head"], rel["tail"])
            by_pair.setdefault(pair, []).append(rel["label"])
            evidence.setdefault(pair, set()).update(
                _evidence(rel, k, len(sentence_starts), doc._.title))
        pair_relations = [sorted(set(by_pair.get(pair, []))) for pair in pairs]
        labels = [1.0 if relations else 0.0 for relations in pair_relations]
        pair_evidence = [sorted(evidence.get(pair, ())) for pair in pairs]
    return DocFeatures(input_ids=input_ids, entity_pos=entity_pos, pairs=pairs, labels=labels,
                       title=doc._.title, pair_relations=pair_relations,
                       sentence_starts=sentence_starts, pair_evidence=pair_evidence)


def _evidence(relation: dict, k: int, n_sentences: int, title: str | None) -> list[int]:
    """The relation's evidence sentences, checked against the Doc's sentences (a Doc
    re-segmented after reading may have fewer than its corpus record named)."""
    evidence = list(relation.get("evidence", []))
    outside = [s for s in evidence if not 0 <= s < n_sentences]
    if outside:
        raise InputError(f"evidence sentences {outside} of document {title!r} lie outside its "
                         f"{n_sentences} sentences", title=title,
                         field=f"relations[{k}].evidence")
    return evidence
