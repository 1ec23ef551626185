"""``spacy-lmrc`` console script (also ``python -m spacy_lmrc``)."""

from ._app import app

# subcommands: one module each; importing a module registers its command(s)
from . import convert, score, stats  # noqa: E402,F401,I001


def main() -> None:
    app()


__all__ = ["app", "main"]
