"""The ``spacy-lmrc`` command-line application; subcommand modules add themselves to it."""

import typer

app = typer.Typer(
    name="spacy-lmrc",
    help="Relation extraction with LLMs in spaCy: LMRC and RAG4RE.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
