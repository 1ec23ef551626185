"""``extract-ray``: the extraction on Ray Data, on a local 2-CPU Ray runtime started by the test,
gives the same records as ``extract`` in one process, and resumes from its shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.extraction import DocumentSource

from .test_extract_corpus import _corpus, _pipeline

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'spacy-lmrc[ray]')")
pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 ** 2,
             log_to_driver=False)
    yield
    ray.shutdown()


def _shard_lines(folder: Path) -> list[str]:
    return sorted(line for shard in folder.glob("*.jsonl")
                  for line in shard.read_text().splitlines())


def test_ray_gives_the_records_of_one_process_and_resumes(tmp_path, ray_runtime, toy_record):
    from spacy_lmrc.ray_extraction import extract_on_ray

    pipeline = _pipeline(tmp_path / "pipeline")
    corpus = _corpus(tmp_path / "corpus.jsonl", 40)
    single = tmp_path / "single.jsonl"
    result = runner.invoke(app, ["extract", str(pipeline), str(corpus), "-o", str(single),
                                 "--quiet"])
    assert result.exit_code == 0, result.output

    shards = tmp_path / "shards"
    run = extract_on_ray(str(pipeline), DocumentSource(corpus, Vocab()), shards, actors=2,
                         batch_size=4, shard_size=8)
    assert (run.written, run.done_before, run.total) == (40, 0, 40)
    assert len(list(shards.glob("*.jsonl"))) == 5
    assert _shard_lines(shards) == sorted(single.read_text().splitlines())

    # a lost shard and an incomplete last line in another: only their documents are redone
    first, second = sorted(shards.glob("*.jsonl"))[:2]
    lost = {json.loads(line)["id"] for line in first.read_text().splitlines()}
    first.unlink()
    kept = second.read_text().splitlines()
    second.write_text("\n".join(kept[:-1]) + "\n" + kept[-1][:20])
    lost.add(json.loads(kept[-1])["id"])
    result = runner.invoke(app, ["extract-ray", str(pipeline), str(corpus), str(shards),
                                 "--batch-size", "4", "--shard-size", "8"])
    assert result.exit_code == 0, result.output
    assert f"wrote {len(lost)} documents to {shards} ({40 - len(lost)} done before, 40 in its " \
           f"shards)" in result.output
    assert _shard_lines(shards) == sorted(single.read_text().splitlines())


def test_ray_reads_docred_documents_and_counts_bad_records(tmp_path, ray_runtime, toy_record):
    pipeline = _pipeline(tmp_path / "pipeline")
    corpus = tmp_path / "docred.jsonl"
    corpus.write_text(json.dumps(toy_record) + "\n" + '{"title": "broken"}\n')
    shards = tmp_path / "shards"
    result = runner.invoke(app, ["extract-ray", str(pipeline), str(corpus), str(shards)])
    assert result.exit_code == 1 and "document 1" in result.output
    result = runner.invoke(app, ["extract-ray", str(pipeline), str(corpus), str(shards),
                                 "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 invalid document(s):" in result.output
    [record] = [json.loads(line) for line in _shard_lines(shards)]
    assert (record["id"], record["title"]) == ("0", "Ada Lovelace")
