"""``spacy-lmrc train-proposer``: train the LMRC relation candidate proposer from a config."""

from __future__ import annotations

from pathlib import Path

import typer
from spacy.cli._util import parse_config_overrides

from ._app import app
from ._util import friendly_errors, info, timed


@app.command(
    "train-proposer",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@friendly_errors
@timed
def train_proposer_cli(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config, e.g. configs/proposer.cfg"),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Folder for model-best, checkpoints and metrics.json"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest <output>/checkpoints/step-N"),
) -> None:
    """Train the RCP model, keep the best dev epoch, choose and store its threshold.

    Any config value can be overridden spaCy-style: ``--training.epochs 3``. Runs on several
    GPUs with ``accelerate launch -m spacy_lmrc train-proposer ... --training.device cuda``.
    """
    from ..proposer.training import load_config, train_proposer

    overrides = parse_config_overrides(ctx.args)
    config = load_config(config_path, overrides)
    info(f"config: {config_path}" + (f" with overrides {overrides}" if overrides else ""))
    train_proposer(config, output, resume=resume)
