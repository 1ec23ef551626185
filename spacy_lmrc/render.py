"""Readable views of extracted relations: a text table and an HTML page (entities + arcs).

The HTML uses displaCy: the entity view marks every mention with its entity's type and index,
and the arc view draws one arc per relation between the entities (named by display name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spacy import displacy
from spacy.tokens import Doc, Span
from spacy.util import filter_spans


def relation_records(doc: Doc, index: int,
                     label_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One JSON-ready record per relation of ``doc``, with entity names and types."""
    entities = doc._.entities
    names = label_names or {}
    records = []
    for rel in doc._.relations:
        head, tail = entities[rel["head"]], entities[rel["tail"]]
        records.append({
            "doc": doc._.title if doc._.title is not None else index,
            "head": head["name"], "head_type": head["type"], "head_idx": rel["head"],
            "relation": names.get(rel["label"], rel["label"]), "label": rel["label"],
            "tail": tail["name"], "tail_type": tail["type"], "tail_idx": rel["tail"],
            "score": round(float(rel.get("score", 1.0)), 4),
        })
    return records


def format_table(records: Iterable[Mapping[str, Any]]) -> str:
    """Aligned columns: document, head (type), relation, tail (type), score."""
    rows = [("doc", "head", "relation", "tail", "score")]
    rows += [(str(r["doc"]), f"{r['head']} ({r['head_type']})", r["relation"],
              f"{r['tail']} ({r['tail_type']})", f"{r['score']:.2f}") for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_html(docs: Iterable[Doc], label_names: Mapping[str, str] | None = None) -> str:
    """A standalone HTML page: per document, its marked-up entities and its relation arcs."""
    names = label_names or {}
    parts = []
    for i, doc in enumerate(docs):
        title = doc._.title if doc._.title is not None else f"document {i}"
        mentions = [Span(doc, m["start"], m["end"], label=f"{e['type']} {k}")
                    for k, e in enumerate(doc._.entities) for m in e["mentions"]]
        ents = [{"start": s.start_char, "end": s.end_char, "label": s.label_}
                for s in filter_spans(mentions)]
        parts.append(displacy.render({"text": doc.text, "ents": ents, "title": str(title)},
                                     style="ent", manual=True, page=False))
        involved = sorted({k for r in doc._.relations for k in (r["head"], r["tail"])})
        if not involved:
            parts.append("<p><em>no relations</em></p>")
            continue
        position = {k: j for j, k in enumerate(involved)}
        words = [{"text": doc._.entities[k]["name"], "tag": f"{doc._.entities[k]['type']} {k}"}
                 for k in involved]
        arcs = []
        for r in doc._.relations:
            h, t = position[r["head"]], position[r["tail"]]
            if h == t:
                continue
            arcs.append({"start": min(h, t), "end": max(h, t),
                         "label": names.get(r["label"], r["label"]),
                         "dir": "right" if h < t else "left"})
        parts.append(displacy.render({"words": words, "arcs": arcs}, style="dep", manual=True,
                                     page=False, options={"compact": True, "distance": 160}))
    body = "\n<hr>\n".join(parts) or "<p><em>no documents (the input was empty)</em></p>"
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>spacy-lmrc relations"
            f"</title></head><body style='font-family: sans-serif'>{body}</body></html>")
