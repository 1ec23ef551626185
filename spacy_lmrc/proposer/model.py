"""The RCP model (LMRC section 4.1 on ATLOP): which entity pairs hold any relation.

Mention embedding = encoder state at the opening ``*`` marker; entity embedding = logsumexp
over its mentions; localized context ``c_so`` = hidden states pooled with the normalised
product of head and tail last-layer attention (mean over mentions, then over heads);
``z_s = tanh(W_s h_s + W_c c_so)`` and ``z_o`` likewise; ATLOP's grouped bilinear (block 64)
gives one logit, trained with binary cross-entropy. The logit is for P(relation) — the paper
writes Eq. 6 for P(NA) = 1 - P(relation), which is the same classifier with the sign flipped.

Beyond LMRC, an optional *relation-type hints* head (``relation_types`` set) scores every
relation type of a pair from ``[z_s; z_o; z_s * z_o]`` (multi-label, binary cross-entropy on the
pairs that hold a relation, trained jointly); the component stores each kept pair's top types, so
the LLM stage can narrow its answer space. Also beyond LMRC, an optional *evidence* term
(DREEAM's idea, Ma et al. 2023) trains each related pair's localized-context attention to fall
on the sentences the corpus names as its evidence (:func:`evidence_loss`).

Saved folders hold ``encoder/`` (the fine-tuned encoder and its tokenizer, a regular Hugging
Face model folder), ``head.safetensors`` and ``rcp.json`` (settings, threshold, trained flag).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..util import bf16_autocast, resolve_model_name
from .encoder import encode_windowed, encoder_window, load_encoder
from .features import DocFeatures, SpecialTokens, featurize

SETTINGS_FILE = "rcp.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"


@dataclass
class RCPSettings:
    """Everything besides weights that defines a proposer.

    ``encoder``: the name or path it was built from; ``window``: encoder window in wordpieces
    (``None`` = the encoder's maximum); ``attention_dropout``: the encoder's attention dropout
    (``None`` = its own); ``relation_types``: the labels of the hints head (empty = no head);
    ``threshold``: keep a pair when P(relation) > threshold; ``trained``: False until the
    training loop has saved it; ``training``: provenance.
    """

    encoder: str
    emb_size: int = 768
    block_size: int = 64
    window: int | None = None
    attention_dropout: float | None = None
    relation_types: list[str] = field(default_factory=list)
    threshold: float = 0.5
    trained: bool = False
    training: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> RCPSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def is_rcp_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :meth:`RCPModel.save_pretrained`."""
    return (Path(path) / SETTINGS_FILE).exists()


@dataclass
class PairScores:
    """The model's scores of one document's pairs (``DocFeatures.pairs`` order).

    ``relation[i]``: P(pair i holds any relation); ``types[i, r]``: P(relation type r | pair i)
    from the hints head (``None`` without one), columns in ``RCPSettings.relation_types`` order.
    """

    relation: np.ndarray
    types: np.ndarray | None = None


def collate(features: list[DocFeatures], pad_token_id: int = 0,
            type_index: dict[str, int] | None = None) -> dict:
    """Pad a batch for :meth:`RCPModel.forward` (tensors, so Accelerate can place them).

    With labelled features, ``labels`` holds the binary pair labels and, given ``type_index``
    (the hints head's label -> column), ``type_labels`` the multi-hot relation types.
    """
    lengths = [len(f.input_ids) for f in features]
    input_ids = torch.full((len(features), max(lengths)), pad_token_id, dtype=torch.long)
    for i, f in enumerate(features):
        input_ids[i, :lengths[i]] = torch.tensor(f.input_ids, dtype=torch.long)
    batch = {
        "input_ids": input_ids,
        "lengths": torch.tensor(lengths, dtype=torch.long),
        "entity_pos": [f.entity_pos for f in features],
        "pairs": [torch.tensor(f.pairs, dtype=torch.long).reshape(-1, 2) for f in features],
    }
    if all(f.labels is not None for f in features):
        batch["labels"] = torch.tensor([x for f in features for x in f.labels], dtype=torch.float)
        if type_index:
            batch["type_labels"] = _multi_hot(features, type_index)
        if all(f.pair_evidence is not None and f.sentence_starts is not None for f in features):
            batch["evidence"] = [(f.sentence_starts, f.pair_evidence) for f in features]
    return batch


def _multi_hot(features: list[DocFeatures], type_index: dict[str, int]) -> torch.Tensor:
    """``[pairs, types]`` targets of the hints head; types outside the index are left out."""
    rows = [labels for f in features for labels in (f.pair_relations or [[]] * len(f.pairs))]
    target = torch.zeros((len(rows), len(type_index)), dtype=torch.float)
    for i, labels in enumerate(rows):
        for label in labels:
            if label in type_index:
                target[i, type_index[label]] = 1.0
    return target


def ranking_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pairwise ranking loss over a batch: the mean of ``softplus(s_neg - s_pos)`` over every
    (related, unrelated) pair of candidate pairs (RankNet's loss, a smooth surrogate of the
    area under the ROC curve; 0 without both kinds).

    The proposer is read as a ranking (the pairs above a threshold are kept, whatever their
    probability), and a related pair ranked below unrelated ones is what costs recall; the
    softplus lets correctly ordered pairs fade out, so the gradient falls on related pairs
    scored low and unrelated pairs scored high. Ranking against only the highest-scored
    unrelated pairs (those competing for the kept fraction) learnt worse (BENCHMARKS.md).
    """
    positive = labels > 0
    if not positive.any() or positive.all():
        return logits.new_zeros(())
    margins = logits[~positive][None, :] - logits[positive][:, None]  # [related, unrelated]
    return nn.functional.softplus(margins).mean()


def evidence_loss(attention: torch.Tensor, sentence_starts: list[int],
                  pair_evidence: list[list[int]]) -> tuple[torch.Tensor, int]:
    """The summed KL divergence, over one document's pairs that have evidence sentences, from
    the uniform distribution over those sentences to the pair's localized-context attention
    (``attention``, ``[pairs, wordpieces]``, rows summing to 1) gathered per sentence; and how
    many pairs it sums over.

    The attention picks the context a pair is scored with; pointing it at the sentences that
    state the relation is supervision the corpus gives and the binary label does not.
    """
    rows = [i for i, evidence in enumerate(pair_evidence) if evidence]
    if not rows:
        return attention.new_zeros((), dtype=torch.float), 0
    starts = torch.tensor(sentence_starts, device=attention.device)
    positions = torch.arange(attention.shape[1], device=attention.device)
    sentence = (torch.bucketize(positions, starts, right=True) - 1).clamp(min=0)
    mass = attention.new_zeros((len(rows), len(sentence_starts)), dtype=torch.float)
    mass = mass.index_add(1, sentence, attention[rows].float())
    target = torch.zeros_like(mass)
    for row, i in enumerate(rows):
        target[row, pair_evidence[i]] = 1.0 / len(pair_evidence[i])
    log_ratio = target.clamp_min(1e-12).log() - mass.clamp_min(1e-8).log()
    return (target * log_ratio).sum(), len(rows)


class RCPModel(nn.Module):
    """Binary relation-candidate classifier over any Hugging Face encoder."""

    def __init__(self, encoder: nn.Module, tokenizer, settings: RCPSettings) -> None:
        super().__init__()
        self.encoder = encoder
        # the pooler (BERT, RoBERTa) is not part of RCP: frozen, so that no optimiser updates it
        # and distributed training does not wait for gradients that never come
        for name, param in encoder.named_parameters():
            if name.startswith("pooler."):
                param.requires_grad_(False)
        self.tokenizer = tokenizer
        self.settings = settings
        if settings.emb_size % settings.block_size:
            raise ValueError(f"emb_size {settings.emb_size} is not a multiple of block_size "
                             f"{settings.block_size}")
        hidden = encoder.config.hidden_size
        self.head_extractor = nn.Linear(2 * hidden, settings.emb_size)
        self.tail_extractor = nn.Linear(2 * hidden, settings.emb_size)
        self.bilinear = nn.Linear(settings.emb_size * settings.block_size, 1)
        self.type_index = {label: i for i, label in enumerate(settings.relation_types)}
        self.type_head = (nn.Linear(3 * settings.emb_size, len(self.type_index))
                          if self.type_index else None)
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        self.window = settings.window or encoder_window(encoder.config, tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._word_cache: dict[str, list[int]] = {}

    # construction and persistence
    @classmethod
    def from_encoder(cls, name_or_path: str, *, emb_size: int = 768, block_size: int = 64,
                     window: int | None = None, attention_dropout: float | None = None,
                     relation_types: list[str] | None = None) -> RCPModel:
        """A new model (untrained head) over the encoder ``name_or_path`` (hub name or folder);
        with ``relation_types``, a hints head over those labels."""
        from transformers import AutoTokenizer

        resolved = resolve_model_name(name_or_path)
        encoder = load_encoder(resolved, attention_dropout)
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        settings = RCPSettings(encoder=name_or_path, emb_size=emb_size, block_size=block_size,
                               window=window, attention_dropout=attention_dropout,
                               relation_types=list(relation_types or []))
        return cls(encoder, tokenizer, settings)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> RCPModel:
        """Load a folder written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        path = Path(path)
        if not is_rcp_folder(path):
            raise FileNotFoundError(
                f"{path} is not a saved candidate proposer (no {SETTINGS_FILE})")
        settings = RCPSettings.from_dict(json.loads((path / SETTINGS_FILE).read_text()))
        encoder = load_encoder(str(path / ENCODER_DIR), settings.attention_dropout)
        tokenizer = AutoTokenizer.from_pretrained(path / ENCODER_DIR)
        model = cls(encoder, tokenizer, settings)
        head = load_file(str(path / HEAD_FILE))
        wanted = {k for k, _ in model.named_parameters() if not k.startswith("encoder.")}
        missing = wanted - set(head)
        if missing:
            raise ValueError(f"{path / HEAD_FILE} lacks weights {sorted(missing)}")
        model.load_state_dict(head, strict=False)
        return model.to(device).eval()

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``encoder/`` (weights + tokenizer), ``head.safetensors`` and ``rcp.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path / ENCODER_DIR)
        self.tokenizer.save_pretrained(path / ENCODER_DIR)
        head = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("encoder.")}
        save_file(head, str(path / HEAD_FILE))
        (path / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2))

    # features
    def featurize(self, doc, *, with_labels: bool = False) -> DocFeatures:
        """The model input of one Doc (see :func:`features.featurize`)."""
        return featurize(doc, self.tokenizer, self.special, with_labels=with_labels,
                         word_cache=self._word_cache)

    def collate(self, features: list[DocFeatures]) -> dict:
        """A padded batch of ``features`` for :meth:`forward` (hint targets when labelled)."""
        return collate(features, self.pad_token_id, self.type_index)

    # computation
    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor,
                entity_pos: list[list[list[int]]], pairs: list[torch.Tensor],
                labels: torch.Tensor | None = None,
                type_labels: torch.Tensor | None = None,
                evidence: list[tuple[list[int], list[list[int]]]] | None = None,
                ranking_weight: float = 0.0,
                evidence_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """Logits of every pair of every document, concatenated (``type_logits`` too with a
        hints head); with labels, the loss: binary cross-entropy, plus the hints head's on
        the pairs that hold a relation, plus ``ranking_weight`` times :func:`ranking_loss`,
        plus ``evidence_weight`` times the mean :func:`evidence_loss` (``evidence``: each
        document's sentence starts and pair evidence, as :func:`collate` gives them)."""
        hiddens, attentions = encode_windowed(self.encoder, input_ids, lengths.tolist(),
                                              self.special, self.window, self.pad_token_id)
        evidence = evidence if evidence_weight and evidence else [None] * len(pairs)
        logits, type_logits = [], []
        evidence_terms: list[tuple[torch.Tensor, int]] = []
        for seq, att, pos, doc_pairs, doc_evidence in zip(hiddens, attentions, entity_pos,
                                                          pairs, evidence):
            if len(doc_pairs) == 0:
                continue
            z_s, z_o, context_attention = self._pair_embeddings(seq, att, pos,
                                                                doc_pairs.to(seq.device))
            logits.append(self.grouped_bilinear(z_s, z_o))
            if self.type_head is not None:
                type_logits.append(self.type_head(torch.cat([z_s, z_o, z_s * z_o], dim=-1)))
            if doc_evidence is not None:
                evidence_terms.append(evidence_loss(context_attention, *doc_evidence))
        result = {"logits": torch.cat(logits) if logits
                  else input_ids.new_zeros((0,), dtype=torch.float)}
        if type_logits:
            result["type_logits"] = torch.cat(type_logits)
        if labels is not None:
            result["loss"] = self._loss(result, labels, type_labels, ranking_weight,
                                        evidence_terms, evidence_weight)
        return result

    def _loss(self, result: dict[str, torch.Tensor], labels: torch.Tensor,
              type_labels: torch.Tensor | None, ranking_weight: float,
              evidence_terms: list[tuple[torch.Tensor, int]],
              evidence_weight: float) -> torch.Tensor:
        logits = result["logits"].float()
        labels = labels.to(logits.device).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        if ranking_weight:
            loss = loss + ranking_weight * ranking_loss(logits, labels)
        positive = labels > 0
        if "type_logits" in result and type_labels is not None and positive.any():
            targets = type_labels.to(labels.device)[positive]
            loss = loss + nn.functional.binary_cross_entropy_with_logits(
                result["type_logits"][positive].float(), targets)
        pairs_with_evidence = sum(count for _, count in evidence_terms)
        if pairs_with_evidence:
            total = torch.stack([term for term, _ in evidence_terms]).sum()
            loss = loss + evidence_weight * total.to(loss.device) / pairs_with_evidence
        return loss

    def _pair_embeddings(self, seq: torch.Tensor, att: torch.Tensor, pos: list[list[int]],
                         pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z_s`` and ``z_o`` of each pair: entity embeddings with their localized context;
        and the context's attention over the wordpieces (``[pairs, L]``, rows summing to 1)."""
        n_ent, n_max = len(pos), max(len(p) for p in pos)
        index = torch.zeros((n_ent, n_max), dtype=torch.long, device=seq.device)
        mask = torch.zeros((n_ent, n_max), dtype=torch.bool, device=seq.device)
        for e, p in enumerate(pos):
            index[e, :len(p)] = torch.tensor(p, device=seq.device)
            mask[e, :len(p)] = True
        mentions = seq[index]  # [E, M, d]
        ent_emb = mentions.masked_fill(~mask[..., None], float("-inf")).logsumexp(dim=1)
        ment_att = att[:, index]  # [H, E, M, L]
        weights = mask.to(att.dtype)[None, :, :, None]
        ent_att = (ment_att * weights).sum(2) / weights.sum(2)  # [H, E, L]
        ent_att = ent_att.transpose(0, 1)  # [E, H, L]
        hs, ts = pairs[:, 0], pairs[:, 1]
        q = (ent_att[hs] * ent_att[ts]).mean(1)  # [P, L]
        q = q / (q.sum(1, keepdim=True) + 1e-5)
        context = q.to(seq.dtype) @ seq  # [P, d]
        z_s = torch.tanh(self.head_extractor(torch.cat([ent_emb[hs], context], dim=-1)))
        z_o = torch.tanh(self.tail_extractor(torch.cat([ent_emb[ts], context], dim=-1)))
        return z_s, z_o, q

    def grouped_bilinear(self, z_s: torch.Tensor, z_o: torch.Tensor) -> torch.Tensor:
        """ATLOP's grouped bilinear ``Linear(vec(b1 outer b2 per block))`` without materialising
        the ``[pairs, emb * block]`` outer products: ``sum_k b1_k^T W_k b2_k + b`` by batched
        matmul over the blocks (same parameters, same result, a fraction of the memory)."""
        size = self.settings.block_size
        blocks = self.settings.emb_size // size
        b1 = z_s.view(-1, blocks, size).transpose(0, 1)  # [K, P, i]
        b2 = z_o.view(-1, blocks, size).transpose(0, 1)  # [K, P, j]
        weight = self.bilinear.weight.view(blocks, size, size).to(b1.dtype)  # [K, i, j]
        return (torch.bmm(b1, weight) * b2).sum(dim=(0, 2)) + self.bilinear.bias.to(b1.dtype)

    def predict_proba(self, features: list[DocFeatures], batch_size: int = 8,
                      bf16: bool = False) -> list[np.ndarray]:
        """P(relation) for every pair of every document (``features[i].pairs`` order)."""
        return [scores.relation for scores in self.predict_scores(features, batch_size, bf16)]

    @torch.inference_mode()
    def predict_scores(self, features: list[DocFeatures], batch_size: int = 8,
                       bf16: bool = False) -> list[PairScores]:
        """:class:`PairScores` of every document, in input order.

        Documents are batched by length (less padding). ``bf16``: bfloat16 autocast (use it
        where the hardware computes bf16, see :func:`spacy_lmrc.util.bf16_is_native`).
        """
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(features)), key=lambda k: len(features[k].input_ids))
        results = [PairScores(np.zeros(0, dtype=np.float32)) for _ in features]
        for i in range(0, len(order), batch_size):
            indices = order[i:i + batch_size]
            chunk = [features[k] for k in indices]
            batch = self.collate(chunk)
            for target in ("labels", "type_labels", "evidence"):
                batch.pop(target, None)
            batch = {key: (value.to(device) if isinstance(value, torch.Tensor) else value)
                     for key, value in batch.items()}
            with bf16_autocast(device, bf16):
                out = self(**batch)
            probs = torch.sigmoid(out["logits"].float()).cpu().numpy()
            types = (torch.sigmoid(out["type_logits"].float()).cpu().numpy()
                     if "type_logits" in out else None)
            offset = 0
            for k, f in zip(indices, chunk):
                span = slice(offset, offset + len(f.pairs))
                results[k] = PairScores(probs[span], None if types is None else types[span])
                offset += len(f.pairs)
        return results
