"""The LLM stage's one home for text <-> tokens: loading, prompt formats, answer constraints,
training sequences and constrained decoding. Fine-tuning and inference both import it."""

from .constraints import AnswerSpace
from .decoding import PackedDecoder
from .formats import CompactFormat, PaperFormat, PromptFormat, SentenceFormat, format_from_config
from .requests import Answer, PairQuery, RelationRequest
from .sequences import (
    EncodedRequest,
    PackedBatch,
    TokenTree,
    concat_sequences,
    encode_request,
    pack_training_sequence,
    pack_training_sequences,
)

__all__ = [
    "Answer", "AnswerSpace", "CompactFormat", "EncodedRequest", "PackedBatch", "PackedDecoder",
    "PairQuery", "PaperFormat", "PromptFormat", "RelationRequest", "SentenceFormat", "TokenTree",
    "concat_sequences", "encode_request", "format_from_config", "pack_training_sequence",
    "pack_training_sequences",
]
