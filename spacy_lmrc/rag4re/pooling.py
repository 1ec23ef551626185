"""Entity-start pooling: a sentence vector made of the hidden states at the entity markers.

Mean pooling averages every token, so two sentences about the same things look alike whatever
relation holds between their entities. The "entity start" representation of Baldini Soares et
al. (2019, "Matching the Blanks") and Zhou & Chen (2021, "An Improved Baseline for Sentence-level
Relation Extraction") reads the encoder at the markers instead: :class:`EntityStartPooling`
returns ``[h(<e1>); h(<e2>)]``, twice the encoder's hidden size, for the views of
:mod:`.representation` that keep the markers (``marked``, ``span``, ``pair``).

Marker positions. The markers are plain text, not added tokens: a WordPiece tokenizer splits
``<e1>`` into several pieces (MiniLM: ``<``, ``e``, ``##1``, ``>``). The module stores the piece
ids of ``<e1>`` and ``<e2>`` (:meth:`EntityStartPooling.from_tokenizer`, which also checks that
they come out the same inside a sentence) and finds each one's first occurrence in a row's
``input_ids``; the hidden state at the marker's first piece is the entity's half, as Zhou & Chen
take the first of their punctuation markers. Closing tags (``</e1>``) differ in their second
piece and never match.

Fallback. A row without a marker (cut off by ``max_seq_length``, or a text without markers)
takes the mean of its tokens (attention mask) for that half, so it still gets a vector; the
``entity_markers_found`` feature, a ``(batch, 2)`` boolean tensor, says which rows and halves had
their marker, for counting the fallbacks.

Loading. sentence-transformers (6.0 on) imports a module class from outside its own package
only with ``trust_remote_code=True``, local folders included: ``SentenceTransformer(folder)``
refuses a folder whose ``modules.json`` names ``spacy_lmrc.rag4re.pooling.EntityStartPooling``.
:func:`load_sentence_transformer` passes the flag for such a folder when this class is the only
custom code it would let in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules.module import Module
from torch import Tensor

HEAD_MARKER = "<e1>"
TAIL_MARKER = "<e2>"
CLASS_REF = f"{__name__}.EntityStartPooling"


class EntityStartPooling(Module):
    """Sentence embedding ``[h(<e1>); h(<e2>)]`` from the token embeddings (module docstring).

    ``embedding_dimension`` is the encoder's hidden size; ``head_marker_ids`` and
    ``tail_marker_ids`` are the token ids of ``<e1>`` and ``<e2>`` (see :meth:`from_tokenizer`).
    """

    config_keys = ["embedding_dimension", "head_marker_ids", "tail_marker_ids"]

    def __init__(self, embedding_dimension: int, head_marker_ids: list[int],
                 tail_marker_ids: list[int]) -> None:
        super().__init__()
        if not head_marker_ids or not tail_marker_ids:
            raise ValueError("entity-start pooling needs the token ids of both markers")
        self.embedding_dimension = int(embedding_dimension)
        self.head_marker_ids = [int(i) for i in head_marker_ids]
        self.tail_marker_ids = [int(i) for i in tail_marker_ids]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, embedding_dimension: int) -> EntityStartPooling:
        """The module for the encoder of ``tokenizer``, its markers' ids taken from it.

        A tokenizer that splits a marker differently inside a sentence (merging it with the
        words around it) is refused: every row would fall back to the mean without a sign.
        """
        def ids(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

        head, tail = ids(HEAD_MARKER), ids(TAIL_MARKER)
        sample = ids(f"The {HEAD_MARKER}fire</e1> was caused by a {TAIL_MARKER}cigarette</e2>.")
        for marker, pieces in ((HEAD_MARKER, head), (TAIL_MARKER, tail)):
            if not any(sample[i:i + len(pieces)] == pieces for i in range(len(sample))):
                raise ValueError(f"the tokenizer splits {marker} differently inside a sentence "
                                 f"({pieces} alone): entity-start pooling cannot find it")
        return cls(embedding_dimension, head, tail)

    def forward(self, features: dict[str, Tensor | Any], **kwargs: Any) -> dict[str, Tensor | Any]:
        """Add ``sentence_embedding`` (batch, 2 x hidden) and ``entity_markers_found``."""
        if "cu_seq_lens_q" in features:
            raise ValueError("entity-start pooling needs padded batches, not the flattened ones "
                             "of flash attention's unpadding")
        tokens = features["token_embeddings"]
        input_ids = features["input_ids"]
        mask = features.get("attention_mask")
        if mask is None:
            mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        mean = masked_mean(tokens, mask)
        halves, found = [], []
        for marker in (self.head_marker_ids, self.tail_marker_ids):
            position, present = first_occurrence(input_ids, mask, marker)
            at_marker = tokens[torch.arange(tokens.shape[0], device=tokens.device), position]
            halves.append(torch.where(present.unsqueeze(-1), at_marker, mean))
            found.append(present)
        features["sentence_embedding"] = torch.cat(halves, dim=-1)
        features["entity_markers_found"] = torch.stack(found, dim=-1)
        return features

    def get_embedding_dimension(self) -> int:
        """Twice the encoder's hidden size: the head's half, then the tail's."""
        return 2 * self.embedding_dimension

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True,
             **kwargs: Any) -> None:
        """Write ``config.json`` (no weights: the module has none)."""
        self.save_config(output_path)


def first_occurrence(input_ids: Tensor, mask: Tensor, pattern: list[int]) -> tuple[Tensor, Tensor]:
    """Per row, the start of the first run of ``pattern`` among the unmasked tokens and whether
    there is one: ``(position, found)``, position 0 where there is none. One comparison of the
    whole batch per piece of ``pattern``."""
    rows, length = input_ids.shape
    starts = length - len(pattern) + 1
    if starts <= 0:
        zeros = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
        return zeros, zeros.bool()
    matches = torch.ones(rows, starts, dtype=torch.bool, device=input_ids.device)
    for offset, token in enumerate(pattern):
        window = slice(offset, offset + starts)
        matches &= (input_ids[:, window] == token) & mask[:, window].bool()
    found = matches.any(dim=1)
    # argmax returns the first maximum: the first match of a row
    return matches.to(torch.uint8).argmax(dim=1), found


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """The mean of each row's unmasked token embeddings (float32 sums for half precisions)."""
    accumulate = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
    weights = mask.unsqueeze(-1).to(accumulate)
    total = (tokens.to(accumulate) * weights).sum(dim=1)
    return (total / weights.sum(dim=1).clamp(min=1e-9)).to(tokens.dtype)


def use_entity_start_pooling(model: Any) -> None:
    """Replace ``model``'s ``Pooling`` module with :class:`EntityStartPooling` in place.

    What follows the pooling must not depend on its width: a ``Normalize`` is kept, a ``Dense``
    (sized for the old pooling) is refused. A model that already pools at the markers is left
    as it is.
    """
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling

    modules = list(model)
    if any(isinstance(module, EntityStartPooling) for module in modules):
        return
    poolings = [i for i, module in enumerate(modules) if isinstance(module, Pooling)]
    if len(poolings) != 1:
        raise ValueError(f"entity-start pooling replaces the model's Pooling module; the model "
                         f"has {len(poolings)} ({', '.join(type(m).__name__ for m in modules)})")
    index = poolings[0]
    after = [type(m).__name__ for m in modules[index + 1:] if not isinstance(m, Normalize)]
    if after:
        raise ValueError(f"entity-start pooling changes the width of the pooled vector; the "
                         f"modules after the Pooling ({', '.join(after)}) expect the old one")
    model[index] = EntityStartPooling.from_tokenizer(model.tokenizer,
                                                     modules[index].embedding_dimension)


def load_sentence_transformer(name: str, device: str = "cpu") -> Any:
    """``SentenceTransformer(name)``, letting in :class:`EntityStartPooling` (module docstring).

    ``trust_remote_code`` is passed only for a local folder whose ``modules.json`` names this
    class and otherwise only sentence-transformers' own modules, and whose configs name no
    ``auto_map`` (the Hugging Face mechanism for modeling code shipped with a model, which the
    flag would also let run). Any other model loads as ``SentenceTransformer`` would load it.
    """
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name, device=device, trust_remote_code=_trusts_only_us(name))


def _trusts_only_us(name: str) -> bool:
    """Whether ``trust_remote_code`` at ``name`` would let in this module and nothing else."""
    folder = Path(name)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return False
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    types = {module["type"] for module in modules}
    if CLASS_REF not in types or any(not ref.startswith("sentence_transformers.")
                                     for ref in types - {CLASS_REF}):
        return False
    for module in modules:
        for config_name in ("config.json", "tokenizer_config.json"):
            config_file = folder / module["path"] / config_name
            if config_file.is_file() and "auto_map" in json.loads(
                    config_file.read_text(encoding="utf-8")):
                return False
    return True
