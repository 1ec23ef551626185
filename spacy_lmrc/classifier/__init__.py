"""The fine-tuned LLM relation classifier (LMRC's RC stage, RAG4RE's generator): a
self-describing folder (:class:`RCModel`) and the fine-tuning that writes it
(:func:`finetune`), as :mod:`spacy_lmrc.proposer` is for the candidate proposer."""

from .model import DESCRIPTION, RCModel
from .training import FinetuneSettings, finetune, settings_from_config

__all__ = ["DESCRIPTION", "FinetuneSettings", "RCModel", "finetune", "settings_from_config"]
