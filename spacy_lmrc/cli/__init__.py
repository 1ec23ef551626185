"""The ``spacy-lmrc`` commands. The console script and ``python -m spacy_lmrc`` enter through
:func:`spacy_lmrc.__main__.main`, which restarts under tcmalloc before importing them."""

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
    """Run the command line's arguments as a ``spacy-lmrc`` command."""
    app()


__all__ = ["app", "main"]
