"""``spacy-lmrc extract`` over a corpus: folders, JSONL and DocRED input, incremental output,
resuming after an interruption, nlp.pipe with several processes, and bad input (encodings,
bad records) as one-line errors or counted skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import spacy
from spacy.language import Language
from typer.testing import CliRunner

from spacy_lmrc.cli import app
from spacy_lmrc.errors import InputError
from spacy_lmrc.extraction import DocumentSource, ResumableJsonl, completed_ids

runner = CliRunner()
ANSWER = "(Ada Lovelace| place of birth| London)"


@Language.factory("test_fail_after", default_config={"after": 0})
def make_fail_after(nlp: Language, name: str, after: int):
    """Raises KeyboardInterrupt at the ``after``-th document it sees: Ctrl-C at a known point."""
    seen = Counter()

    def fail_after(doc):
        seen["docs"] += 1
        if seen["docs"] == after:
            raise KeyboardInterrupt
        return doc

    return fail_after


def _pipeline(path: Path, *extra: tuple[str, dict]) -> Path:
    """Rule-based NER, the grouper and a scripted LLM (every pair: place of birth), on disk."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Ada Lovelace"},
                                               {"label": "GPE", "pattern": "London"}])
    nlp.add_pipe("lmrc_entity_grouper")
    for factory, config in extra:
        nlp.add_pipe(factory, config=config)
    nlp.add_pipe("llm_relation_classifier", config={
        "task": {"labels": {"P19": "place of birth"}},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": ANSWER}})
    nlp.to_disk(path)
    return path


def _corpus(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            text = f"Ada Lovelace was born in London in {1800 + i}." if i % 3 else f"Note {i}."
            handle.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
    return path


def _ids(output: Path) -> Counter:
    return Counter(json.loads(line)["id"] for line in output.read_text().splitlines())


def test_interrupted_extract_resumes_with_every_document_once(tmp_path):
    corpus = _corpus(tmp_path / "corpus.jsonl", 200)
    failing = _pipeline(tmp_path / "failing", ("test_fail_after", {"after": 117}))
    output = tmp_path / "out.jsonl"
    args = [str(corpus), "-o", str(output), "--batch-size", "8", "--quiet"]
    first = runner.invoke(app, ["extract", str(failing), *args])
    written = _ids(output)
    assert first.exit_code == 130, first.output
    assert f"interrupted after {len(written)} document(s); run the same command again to " \
           f"resume" in first.output
    assert 0 < len(written) < 117 and max(written.values()) == 1
    # an interruption in the middle of a write leaves an incomplete last line
    partial = '{"id": "doc-1000", "title": null, "relat'
    with output.open("a") as handle:
        handle.write(partial)

    result = runner.invoke(app, ["extract", str(_pipeline(tmp_path / "ok")), *args])
    assert result.exit_code == 0, result.output
    assert f"resuming {output}: {len(written)} documents already there" in result.output
    assert f"removed an incomplete last line ({len(partial)} bytes)" in result.output
    assert _ids(output) == Counter(f"doc-{i}" for i in range(200))
    assert f"in {200 - len(written)} document(s)" in result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"doc-{i}" for i in range(200)]  # input order
    assert all(len(r["relations"]) == (1 if int(r["id"][4:]) % 3 else 0) for r in records)

    again = runner.invoke(app, ["extract", str(_pipeline(tmp_path / "ok")), *args])
    assert again.exit_code == 0 and "0 relations in 0 document(s)" in again.output
    assert _ids(output) == Counter(f"doc-{i}" for i in range(200))


SLOW_COMPONENT = '''
import time
from spacy.language import Language

@Language.component("test_slow")
def slow(doc):
    time.sleep(0.02)
    return doc
'''


@pytest.mark.slow
def test_killed_extract_process_resumes_with_every_document_once(tmp_path, monkeypatch):
    (tmp_path / "slow_component.py").write_text(SLOW_COMPONENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("slow_component")
    pipeline = _pipeline(tmp_path / "slow", ("test_slow", {}))
    corpus, output = _corpus(tmp_path / "corpus.jsonl", 200), tmp_path / "out.jsonl"
    command = [sys.executable, "-c", "import slow_component; from spacy_lmrc.__main__ import main; "
               "main()", "extract", str(pipeline), str(corpus), "-o", str(output),
               "--batch-size", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and output.read_text().count("\n") >= 20:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert 20 <= len(_ids(output)) < 200

    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert _ids(output) == Counter(f"doc-{i}" for i in range(200))


def test_several_processes_give_the_same_records(tmp_path):
    pipeline, corpus = _pipeline(tmp_path / "pipeline"), _corpus(tmp_path / "c.jsonl", 24)
    outputs = []
    for n_process in (1, 2):
        output = tmp_path / f"out{n_process}.jsonl"
        result = runner.invoke(app, ["extract", str(pipeline), str(corpus), "-o", str(output),
                                     "--n-process", str(n_process), "--batch-size", "4"])
        assert result.exit_code == 0, result.output
        outputs.append(output.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 24


@pytest.mark.slow
def test_several_processes_with_a_torch_component(tmp_path, tiny_encoder_dir):
    """The tiny proposer runs torch in the parent before nlp.pipe forks: without one thread
    per process the workers hang."""
    pipeline = _pipeline(tmp_path / "pipeline", ("lmrc_candidate_proposer", {
        "model": str(tiny_encoder_dir), "allow_untrained": True, "threshold": 0.0}))
    corpus = _corpus(tmp_path / "c.jsonl", 12)
    outputs = []
    for n_process in (1, 2):
        output = tmp_path / f"out{n_process}.jsonl"
        subprocess.run([sys.executable, "-m", "spacy_lmrc", "extract", str(pipeline),
                        str(corpus), "-o", str(output), "--n-process", str(n_process),
                        "--quiet"], check=True, capture_output=True, timeout=300)
        outputs.append(output.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 12


def test_a_folder_and_docred_documents(tmp_path, toy_record):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("Ada Lovelace was born in London.")
    (folder / "sub" / "a.txt").write_text("It rained.")
    (folder / "notes.md").write_text("not a document")
    pipeline = _pipeline(tmp_path / "pipeline")
    result = runner.invoke(app, ["extract", str(pipeline), str(folder), "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["title"], len(r["relations"])) for r in records] == \
        [("b.txt", "b", 1), ("sub/a.txt", "a", 0)]
    assert records[1]["counts"]["why"] == "0 entities: the NER found no mention in the text"

    # DocRED documents: their own entities (four), not their relations, go to a pipeline
    # without NER (the LLM answers one relation for the whole document)
    gold_entities = spacy.blank("en")
    gold_entities.add_pipe("llm_relation_classifier", config={
        "task": {"labels": {"P19": "place of birth"}},
        "backend": {"@misc": "spacy_lmrc.ScriptedBackend.v1", "default": ANSWER}})
    gold_entities.to_disk(tmp_path / "gold_entities")
    docred = tmp_path / "docred.json"
    docred.write_text(json.dumps([toy_record]))
    result = runner.invoke(app, ["extract", str(tmp_path / "gold_entities"), str(docred),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["id"], record["title"], record["counts"]["entities"]) == \
        ("0", "Ada Lovelace", 4)
    assert [(r["head"], r["relation"], r["tail"]) for r in record["relations"]] == \
        [("Ada Lovelace", "place of birth", "London")]


def test_a_latin1_text_is_a_one_line_error_or_read_with_its_encoding(tmp_path):
    pipeline = _pipeline(tmp_path / "pipeline")
    text = tmp_path / "latin.txt"
    text.write_bytes("Ada Lovelace was born in London, Café Royal.".encode("latin-1"))
    result = runner.invoke(app, ["extract", str(pipeline), str(text)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert errors == [f"error: file {text}: not utf-8 text: byte 0xe9 at offset 36 cannot be "
                      f"decoded; give the file's encoding (e.g. --encoding latin-1)"]
    result = runner.invoke(app, ["extract", str(pipeline), str(text), "--encoding", "latin-1"])
    assert result.exit_code == 0, result.output
    assert "Café Royal" not in result.stdout  # records hold relations, not the text
    assert len(json.loads(result.stdout)["relations"]) == 1
    result = runner.invoke(app, ["extract", str(pipeline), str(text), "--encoding", "klingon"])
    assert result.exit_code == 1 and "unknown encoding 'klingon'" in result.output

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text("Ada Lovelace was born in London.")
    (folder / "latin.txt").write_bytes(text.read_bytes())
    result = runner.invoke(app, ["extract", str(pipeline), str(folder), "--skip-invalid",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["good.txt"]
    assert "skipped 1 invalid document(s):" in result.output
    assert "1 x not utf-8 text" in result.output and "skipped 1 invalid" in result.output


def test_a_jsonl_with_bad_records_is_a_one_line_error_or_counted_skips(tmp_path):
    pipeline = _pipeline(tmp_path / "pipeline")
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": f"doc-{i}", "text": f"Ada Lovelace was born in London {i}."})
             for i in range(6)]
    lines[2] = '{"id": "doc-2", "text": "cut off'
    lines[4] = json.dumps({"id": "doc-4", "title": "no text"})
    corpus.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "caf\xe9"}\n')
    result = runner.invoke(app, ["extract", str(pipeline), str(corpus)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    offset = sum(len(line) + 1 for line in lines[:2]) + 32
    assert f"error: file {corpus}, document 2: line 3, column 33 (byte offset {offset}) is not " \
           f"valid JSON: Invalid control character" in result.output

    output = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["extract", str(pipeline), str(corpus), "-o", str(output),
                                 "--skip-invalid", "--quiet"])
    assert result.exit_code == 0, result.output
    assert list(_ids(output)) == ["doc-0", "doc-1", "doc-3", "doc-5"]
    assert "skipped 3 invalid document(s):" in result.output
    assert "1 x field 'text': no text" in result.output
    assert f"document 6: not utf-8 text: byte 0xe9 at offset {len(corpus.read_bytes()) - 4}" \
        in result.output
    assert "4 relations in 4 document(s), 8 entities; skipped 3 invalid" in result.output


def test_repeated_ids_and_foreign_output_files(tmp_path, nlp):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "One."}\n{"id": "a", "text": "Two."}\n'
                      '{"text": "Three."}\n')
    with pytest.raises(InputError, match=r"document 1, field 'id': id 'a' is also document 0's"):
        list(DocumentSource(corpus, nlp.vocab))
    source = DocumentSource(corpus, nlp.vocab, skip_invalid=True)
    assert [d.id for d in source] == ["a", "2"] and len(source.report) == 1

    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"id": "a"}\n[1, 2]\nno newline')
    with pytest.raises(InputError, match="line 2 is not a record of spacy-lmrc extract"):
        ResumableJsonl(foreign)
    assert foreign.read_text().endswith("no newline")  # a file not ours is left as it was
    assert completed_ids(tmp_path / "missing.jsonl") == (set(), 0)


def test_extract_ray_without_ray_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    monkeypatch.delitem(sys.modules, "spacy_lmrc.ray_extraction", raising=False)
    corpus = _corpus(tmp_path / "c.jsonl", 2)
    result = runner.invoke(app, ["extract-ray", "pipeline", str(corpus), str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Ray Data is not installed" in result.output
    assert "pip install 'spacy-lmrc[ray]'" in result.output


def test_extract_checks_input_and_pipeline_before_any_work(tmp_path):
    missing = tmp_path / "missing.jsonl"
    result = runner.invoke(app, ["extract", "no_such_pipeline", str(missing)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: file {missing}: not found; expected a folder")
    corpus = _corpus(tmp_path / "c.jsonl", 2)
    result = runner.invoke(app, ["extract", "no_such_pipeline", str(corpus), "--encoding", "x"])
    assert result.exit_code == 1 and "unknown encoding 'x'" in result.output
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'spacy-lmrc[ray]')")
    result = runner.invoke(app, ["extract-ray", "no_such_pipeline", str(corpus),
                                 str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith(
        "error: file no_such_pipeline: not an installed pipeline package nor a pipeline folder")
