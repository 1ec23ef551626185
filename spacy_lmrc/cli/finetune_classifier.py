"""``spacy-lmrc finetune-classifier``: LoRA / QLoRA fine-tuning of the LLM relation classifier."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer
from spacy.cli._util import parse_config_overrides

from ._app import app
from ._util import friendly_errors, info, timed


@app.command(
    "finetune-classifier",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@friendly_errors
@timed
def finetune_classifier_cli(
    ctx: typer.Context,
    config_path: Path = typer.Argument(
        ..., help="Fine-tuning config (.cfg), e.g. configs/classifier_rc.cfg"),
    output: Path = typer.Option(
        ..., "--output", "-o",
        help="The classifier folder to write (weights, tokenizer, task) and its checkpoints"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest <output>/checkpoints/step-N"),
    match_tokens: Path | None = typer.Option(
        None, "--match-tokens",
        help="A classifier folder: train to the tokens it was trained on (its "
             "lmrc_training.json), instead of --finetune.max_tokens, so that the two compare "
             "at equal training tokens"),
) -> None:
    """Fine-tune an LLM (LoRA; QLoRA with --finetune.load_in_4bit true on CUDA) on a task's prompts.

    The [task] section picks the prompts (LMRC RC: gold pairs with relations; the baseline:
    all pairs, None allowed; or any registered RelationTask). Override any value spaCy-style,
    e.g. ``--finetune.max_steps 50``. ``--match-tokens training/rc_llm`` trains to the tokens
    that run saw (the LLM-only baseline against LMRC's RC). Several GPUs: ``accelerate launch
    -m spacy_lmrc finetune-classifier ... --finetune.device cuda``.
    """
    from ..classifier.model import RCModel
    from ..classifier.training import finetune, settings_from_config

    overrides = parse_config_overrides(ctx.args)
    task, docs, settings, described, task_name = settings_from_config(config_path, overrides)
    info(f"config: {config_path}" + (f" with overrides {overrides}" if overrides else ""))
    if match_tokens is not None:
        settings = replace(settings, max_tokens=RCModel.from_pretrained(match_tokens).train_tokens)
        info(f"training to {settings.max_tokens} tokens, as {match_tokens} was")
    info(f"training data: {described}; base model: {settings.base_model}")
    summary = finetune(task, docs, output, settings, resume=resume, task_name=task_name,
                       data_description=described)
    info(finished_line(summary, output))


def finished_line(summary: dict, output: Path) -> str:
    """What the run trained, how long it took, where the result is."""
    losses = summary["losses"][-10:]
    loss = f"{sum(losses) / len(losses):.3f}" if losses else "-"
    what = "LoRA adapter" if summary["settings"]["method"] == "lora" else "model"
    return (f"{summary['training_prompts']} sequences ({summary['skipped_too_long']} skipped as "
            f"too long), {summary['steps']} steps ({summary['epochs_done']} epochs) in "
            f"{summary['train_seconds'] / 60:.1f} min, {summary['tokens_per_second']} tokens/s, "
            f"loss {loss} (mean of the last {len(losses)} steps); {what} in {output}")
