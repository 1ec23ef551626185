"""``spacy-lmrc compare``: evaluation JSON files side by side, as one table."""

from __future__ import annotations

from pathlib import Path

import srsly
import typer

from ..errors import InputError
from ._app import app
from ._util import friendly_errors

DOC_COLUMNS = [("P", "precision"), ("R", "recall"), ("F1", "f1"), ("Ign F1", "ign_f1"),
               ("Intra F1", "intra_f1"), ("Inter F1", "inter_f1")]
SENT_COLUMNS = [("micro P", "precision"), ("micro R", "recall"), ("micro F1", "f1"),
                ("macro-F1", "semeval_macro_f1")]


def percent(value: object) -> str:
    """A fraction as a percentage with two decimals; ``-`` when there is none."""
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


@app.command("compare")
@friendly_errors
def compare_cli(
    files: list[Path] = typer.Argument(..., help="JSON files written by `spacy-lmrc evaluate -o`"),
    names: str | None = typer.Option(None, "--names", help="Comma-separated row names"),
) -> None:
    """Print P/R/F1 (Ign, intra, inter; or sentence-level micro/macro) of several runs."""
    labels = names.split(",") if names else [f.stem for f in files]
    if len(labels) != len(files):
        raise InputError(f"--names gives {len(labels)} names for {len(files)} files")
    runs = []
    for path in files:
        if not path.exists():
            raise InputError("file not found", path=path)
        runs.append(srsly.read_json(path))
    sentence = all("semeval_macro_f1" in r or "per_label" in r for r in runs)
    columns = SENT_COLUMNS if sentence else DOC_COLUMNS
    top1 = [] if sentence else ["top-1"]  # RC on gold pairs (evaluate --gold-pairs)
    header = ["run", *[c for c, _ in columns], *top1, "s/doc", "data"]
    rows = [header]
    for label, run in zip(labels, runs):
        evaluated = run.get("evaluated", {})
        accuracy = [percent(run.get("top1", {}).get("top1"))] if top1 else []
        rows.append([label, *[percent(run.get(key)) for _, key in columns], *accuracy,
                     f"{run.get('seconds_per_document', float('nan')):.2f}",
                     f"{evaluated.get('data', '?')} ({evaluated.get('documents', '?')} docs)"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("(scores in %; redocred-small or -medium figures are not comparable with published "
          "Re-DocRED results)" if not sentence else "(scores in %, the negative label excluded)")
