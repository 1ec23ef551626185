"""``spacy-lmrc`` console script (also ``python -m spacy_lmrc``)."""

from ..allocator import restart_with_tcmalloc

# subcommands: one module each; importing a module registers its command(s)
from . import (  # noqa: F401
    build_index,
    compare,
    convert,
    evaluate,
    export_gguf,
    extract,
    finetune_classifier,
    predict,
    score,
    split,
    stats,
    train_proposer,
    train_retriever,
    tune_fusion,
)
from ._app import app


def main() -> None:
    """Run the command, under tcmalloc where the system has it (:mod:`spacy_lmrc.allocator`)."""
    restart_with_tcmalloc()
    app()


__all__ = ["app", "main"]
