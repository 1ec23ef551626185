"""The extraction of :mod:`spacy_lmrc.extraction` on Ray Data (the ``ray`` extra).

The driver reads and checks the documents (the same :class:`~spacy_lmrc.extraction.DocumentSource`,
so ids, errors and skips are those of ``extract``), leaves out those already in the output and
puts the rest into Ray's object store in blocks; Ray Data spreads the blocks over a pool of
actors that each load the pipeline once, and writes their records, the same lines ``extract``
writes, as one JSONL shard per block. A rerun resumes: every shard's ids
count as done (a shard's incomplete last line, from an interrupted write, is cut off).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy.tokens import Doc

from .errors import InputError
from .extraction import Document, DocumentSource, completed_ids, load_pipeline, pipe_records

try:
    import pyarrow as pa
    import ray
    from ray.data.block import BlockAccessor
    from ray.data.datasource import BlockBasedFileDatasink
except ImportError as err:  # the optional extra is not installed
    raise InputError(f"Ray Data is not installed ({err}); install it with "
                     f"pip install 'spacy-lmrc[ray]'") from None

SHARD_SUFFIX = "jsonl"


class PipelineActor:
    """A Ray Data callable class: loads the pipeline once, then turns batches of documents
    (``id``, ``title``, ``text`` or serialised ``doc``) into batches of output lines."""

    def __init__(self, pipeline: str, batch_size: int) -> None:
        import spacy_lmrc  # noqa: F401  (registers the Doc extensions in this worker)

        self.nlp = load_pipeline(pipeline)
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        documents = [Document(row["id"], row["title"], row["text"] if row["doc"] is None
                              else Doc(self.nlp.vocab).from_bytes(row["doc"]))
                     for row in batch.to_pylist()]
        records = pipe_records(self.nlp, documents, batch_size=self.batch_size)
        return pa.table({"line": [json.dumps(record) for _, record in records]})


class JsonlShards(BlockBasedFileDatasink):
    """Writes a block's ``line`` column as one JSONL shard."""

    def __init__(self, path: str) -> None:
        super().__init__(path, file_format=SHARD_SUFFIX)

    def write_block_to_file(self, block: BlockAccessor, file: pa.NativeFile) -> None:
        for line in block.to_arrow().column("line").to_pylist():
            file.write((line + "\n").encode("utf8"))


@dataclass
class RayExtraction:
    """What a run did: documents written now, found done before, and in the shards in all."""

    written: int
    done_before: int
    total: int


def shard_ids(output_dir: Path) -> set[str]:
    """The ids in the shards of ``output_dir`` (each shard's incomplete last line removed)."""
    ids: set[str] = set()
    for shard in sorted(output_dir.glob(f"*.{SHARD_SUFFIX}")):
        ids |= completed_ids(shard)[0]
    return ids


ROW_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()),
                        ("text", pa.large_string()), ("doc", pa.large_binary())])


def _row(document: Document) -> dict[str, Any]:
    content = document.content
    return {"id": document.id, "title": document.title,
            "text": content if isinstance(content, str) else None,
            "doc": content.to_bytes() if isinstance(content, Doc) else None}


def _blocks(documents: Iterator[Document], size: int) -> Iterator[pa.Table]:
    """The documents as Arrow tables of ``size`` rows (the last one shorter)."""
    rows: list[dict[str, Any]] = []
    for document in documents:
        rows.append(_row(document))
        if len(rows) == size:
            yield pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def extract_on_ray(pipeline: str, source: DocumentSource, output_dir: str | Path, *,
                   address: str | None = None, actors: int = 2, cpus_per_actor: float = 1.0,
                   gpus_per_actor: float = 0.0, batch_size: int = 8,
                   shard_size: int = 1000) -> RayExtraction:
    """Extract the documents of ``source`` not yet in ``output_dir``'s shards on Ray Data with
    ``actors`` copies of ``pipeline`` (a name or path every node can load), and write their
    records as new shards there, one per ``shard_size`` documents. Joins ``address`` ('auto':
    this node's cluster), or the Ray runtime already started in this process, or starts a
    local one (and stops it after).

    The driver puts the documents into Ray's object store block by block as it reads them, so
    its own memory holds one block; the object store spills to disk when full.
    """
    if shard_size < 1 or batch_size < 1 or actors < 1:
        raise InputError(f"shard size, batch size and actors must be at least 1, got "
                         f"{shard_size}, {batch_size} and {actors}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError("is a file; expected a folder for the JSONL shards", path=output_dir)
    done = shard_ids(output_dir) if output_dir.is_dir() else set()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    try:
        refs, written = [], 0
        for block in _blocks((d for d in source if d.id not in done), shard_size):
            refs.append(ray.put(block))
            written += block.num_rows
        if refs:
            dataset = ray.data.from_arrow_refs(refs).map_batches(
                PipelineActor, fn_constructor_kwargs={"pipeline": pipeline,
                                                      "batch_size": batch_size},
                batch_size=batch_size, batch_format="pyarrow", concurrency=min(actors, len(refs)),
                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)
            dataset.write_datasink(JsonlShards(str(output_dir.resolve())))
    finally:
        if started:
            ray.shutdown()
    total = len(shard_ids(output_dir)) if output_dir.is_dir() else 0
    return RayExtraction(written, len(done), total)
