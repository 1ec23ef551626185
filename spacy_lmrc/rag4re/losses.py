"""A loss that trains the retriever's embedder on the relation labels directly.

sentence-transformers' batch triplet losses measure Euclidean distance with a margin of 5, but
all-MiniLM-L6-v2 ends in a ``Normalize`` module: its embeddings lie on the unit sphere, no two
are more than 2 apart, and every triplet of a batch stays active whatever the model learns. The
loss is then the mean of ``d(anchor, positive) - d(anchor, negative) + 5``, which pulls every
pair the same little amount and never concentrates on the sentences a neighbour search gets
wrong (BENCHMARKS.md: 40.6% top-1 agreement after 3 epochs).

:class:`SupervisedContrastiveLoss` is the supervised contrastive loss of Khosla et al. (2020,
"Supervised Contrastive Learning", the L_out form): for every sentence of a batch, a softmax over
its cosine similarities to the other sentences (divided by a temperature) and the mean negative
log-probability of those with its label. The softmax focuses the gradient on the nearest
sentences of other labels, which is what a 1-nearest-neighbour retriever needs. It has the
sentence-transformers loss interface (single inputs with a class label, label-grouped batches)
and runs in ``SentenceTransformerTrainer`` like the library's own losses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


def supervised_contrastive_loss(embeddings: Tensor, labels: Tensor,
                                temperature: float) -> Tensor:
    """The mean over anchors with a positive of ``-mean_p log softmax(cos / t)[p]``, where the
    softmax runs over the batch's other sentences and ``p`` over those with the anchor's label.

    A batch without any two sentences of one label has no positive pair: the loss is 0 (with a
    gradient of 0), as a triplet loss is for a batch without a valid triplet.
    """
    if labels.numel() != embeddings.shape[0]:
        raise ValueError(f"expected one label per embedding: {labels.numel()} labels for "
                         f"{embeddings.shape[0]} embeddings")
    labels = labels.view(-1)
    unit = nn.functional.normalize(embeddings, dim=-1)
    logits = unit @ unit.T / temperature
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not bool(anchors.any()):
        return embeddings.sum() * 0.0
    positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(positive_log_prob[anchors] / counts[anchors]).mean()


class SupervisedContrastiveLoss(nn.Module):
    """Supervised contrastive loss for single sentences with a class label (module docstring).

    ``temperature`` scales the cosine similarities before the softmax: lower values weigh the
    nearest sentences of other labels more. Khosla et al. use 0.1; on SemEval with MiniLM,
    0.025 put the nearest neighbour's label right 58.3% of the time against 54.4% at 0.1
    (BENCHMARKS.md).
    """

    def __init__(self, model: Any, temperature: float = 0.025) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature {temperature}: expected more than 0")
        self.model = model
        self.temperature = temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """The loss of one batch (sentence-transformers' loss interface)."""
        features = next(iter(sentence_features))
        embeddings = self.model(features)["sentence_embedding"]
        return supervised_contrastive_loss(embeddings, labels, self.temperature)

    def get_config_dict(self) -> dict[str, Any]:
        """What the model card records of the loss."""
        return {"temperature": self.temperature}

    @property
    def citation(self) -> str:
        """The paper, for the model card."""
        return ("@inproceedings{khosla2020supervised, title={Supervised Contrastive Learning}, "
                "author={Khosla, Prannay and others}, booktitle={NeurIPS}, year={2020}}")
