"""``spacy-lmrc export-gguf``: a fine-tuned classifier as one GGUF file for a llama.cpp server."""

from __future__ import annotations

from pathlib import Path

import typer

from ..export import DTYPES, export_gguf
from ._app import app
from ._util import check_output, friendly_errors, info, timed


@app.command("export-gguf")
@friendly_errors
@timed
def export_gguf_cli(
    model: str = typer.Argument(..., help="A classifier folder (spacy-lmrc "
                                "finetune-classifier), or a Llama Hugging Face folder or name"),
    output_path: Path = typer.Argument(..., help="The GGUF file to write"),
    dtype: str = typer.Option("float32", "--dtype",
                              help=f"Type of the weight matrices: {', '.join(DTYPES)}"),
    pre_tokenizer: str = typer.Option(None, "--pre-tokenizer",
                                      help="llama.cpp's tokenizer.ggml.pre (default: told "
                                      "from the tokenizer)"),
) -> None:
    """Write a fine-tuned relation classifier (LoRA merged) as an unquantized GGUF file, the
    model a llama.cpp server serves to spacy_lmrc.OpenAIBackend.v2:

        python -m llama_cpp.server --model OUT.gguf --logits_all true
    """
    check_output(output_path)
    written = export_gguf(model, output_path, dtype=dtype, pre_tokenizer=pre_tokenizer)
    info(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB, {dtype})")
