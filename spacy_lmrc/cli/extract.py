"""``spacy-lmrc extract`` and ``extract-ray``: relations from a corpus with a pipeline.

One JSONL record per document (its id, title, relations, and how far it got: mentions,
entities, pairs, candidate pairs, relations, and when no relation came out, the stage that
emptied the stream). ``extract`` writes the records as the documents are done and resumes a
file left by an interrupted run; ``extract-ray`` runs the same on Ray Data, writing shards.
The work is in :mod:`spacy_lmrc.extraction` and :mod:`spacy_lmrc.ray_extraction`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from spacy.util import is_package
from spacy.vocab import Vocab
from tqdm import tqdm

from ..errors import InputError, SkipReport
from ..extraction import (
    DocumentSource,
    ResumableJsonl,
    check_input,
    display_name,
    explanation_line,
    extract,
    label_names_of,
    load_pipeline,
)
from ..render import format_table, render_html
from ._app import app
from ._util import check_output, friendly_errors, info, timed

__all__ = ["extract_cli", "extract_ray_cli", "load_pipeline"]

INPUT_HELP = ("Folder of .txt files, a .txt file (one document, or one per line with --lines), "
              "or .jsonl / .json of {'text'} records or DocRED documents")


def _report_skips(report: SkipReport) -> None:
    if len(report) or report.warnings:
        info(report.summary())


@app.command("extract")
@friendly_errors
@timed
def extract_cli(
    pipeline: str = typer.Argument(..., help="Installed pipeline name or pipeline folder"),
    input_path: Path = typer.Argument(..., help=INPUT_HELP),
    lines: bool = typer.Option(False, "--lines", help=".txt: one document per non-empty line"),
    output: Path | None = typer.Option(
        None, "--output", "-o",
        help="Write the JSONL here, not to stdout; an existing file is resumed"),
    html: Path | None = typer.Option(None, "--html", help="Write an HTML view (entities, arcs)"),
    batch_size: int = typer.Option(8, "--batch-size", help="Documents per nlp.pipe batch"),
    n_process: int = typer.Option(
        1, "--n-process", help="Processes for nlp.pipe (each with one torch thread)"),
    encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of the input texts"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid",
                                      help="Skip and count bad documents instead of failing"),
    quiet: bool = typer.Option(False, "--quiet", help="Print neither the per-document lines "
                               "nor the relation table (the records hold the same counts)"),
) -> None:
    """Extract relations: one JSONL record per document (stdout, or --output, which a rerun
    resumes), per document what each stage found (stderr), a relation table, an HTML view."""
    check_input(input_path, encoding)
    if output is not None:
        check_output(output)
    nlp = load_pipeline(pipeline)
    source = DocumentSource(input_path, nlp.vocab, lines=lines, encoding=encoding,
                            skip_invalid=skip_invalid)
    if source.size() == 0:
        info(f"{input_path}: no documents (no text): 0 documents, 0 relations")
    writer = ResumableJsonl(output) if output is not None else None
    done: set[str] = set()
    if writer is not None and (writer.done or writer.repaired):
        done = writer.done
        cut = (f"; removed an incomplete last line ({writer.repaired} bytes)"
               if writer.repaired else "")
        info(f"resuming {output}: {len(done)} documents already there are not redone{cut}")
    write = writer.write if writer is not None else _print_record
    docs, table, counts = [], [], {"documents": 0, "relations": 0, "entities": 0}
    try:
        for doc, record in extract(nlp, source, write, done=done, batch_size=batch_size,
                                   n_process=n_process):
            counts["documents"] += 1
            counts["relations"] += len(record["relations"])
            counts["entities"] += record["counts"]["entities"]
            if html is not None:
                docs.append(doc)
            if not quiet:
                tqdm.write(explanation_line(display_name(record), record["counts"]),
                           file=sys.stderr)
                table += [{"doc": display_name(record), **r} for r in record["relations"]]
    except KeyboardInterrupt:
        again = "; run the same command again to resume" if output is not None else ""
        info(f"interrupted after {counts['documents']} document(s){again}")
        raise typer.Exit(130) from None
    finally:
        if writer is not None:
            writer.close()
    if table:
        info(format_table(table))
    _report_skips(source.report)
    info(f"{counts['relations']} relations in {counts['documents']} document(s), "
         f"{counts['entities']} entities" + (f"; {len(done)} done before" if done else "")
         + (f"; skipped {len(source.report)} invalid" if skip_invalid else "")
         + (f"; wrote {output}" if output is not None else ""))
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(docs, label_names_of(nlp)), encoding="utf8")
        info(f"wrote {html}")


def _print_record(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


@app.command("extract-ray")
@friendly_errors
@timed
def extract_ray_cli(
    pipeline: str = typer.Argument(
        ..., help="Installed pipeline name or pipeline folder (reachable from every node)"),
    input_path: Path = typer.Argument(..., help=INPUT_HELP),
    output_dir: Path = typer.Argument(
        ..., help="Folder of JSONL shards (reachable from every node); a rerun resumes it"),
    lines: bool = typer.Option(False, "--lines", help=".txt: one document per non-empty line"),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join ('auto': the one this node belongs to); "
        "default: start a local Ray runtime"),
    actors: int = typer.Option(2, "--actors", help="Pipeline copies (Ray actors) in parallel"),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="CPUs each actor holds"),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="GPUs each actor holds"),
    batch_size: int = typer.Option(8, "--batch-size", help="Documents per actor call"),
    shard_size: int = typer.Option(1000, "--shard-size",
                                   help="Documents per block of work and per output shard"),
    encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of the input texts"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid",
                                      help="Skip and count bad documents instead of failing"),
) -> None:
    """Extract relations on Ray Data: the pipeline loaded once per actor, the same records as
    ``extract`` written as JSONL shards; documents already in the shards are not redone."""
    from ..ray_extraction import extract_on_ray

    if not (is_package(pipeline) or Path(pipeline).is_dir()):
        raise InputError("not an installed pipeline package nor a pipeline folder on this "
                         "node; every node of the Ray cluster must be able to load it",
                         path=pipeline)
    source = DocumentSource(input_path, Vocab(), lines=lines,
                            encoding=encoding, skip_invalid=skip_invalid)
    result = extract_on_ray(pipeline, source, output_dir, address=address, actors=actors,
                            cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                            batch_size=batch_size, shard_size=shard_size)
    _report_skips(source.report)
    info(f"wrote {result.written} documents to {output_dir} ({result.done_before} done before, "
         f"{result.total} in its shards)"
         + (f"; skipped {len(source.report)} invalid" if skip_invalid else ""))
