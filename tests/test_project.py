"""The Weasel workflow: project.yml is valid and runs with weasel's own interpreter, and the
README's commands, run exactly as written with a PATH that lacks .venv/bin, work: `all_smoke`
(tiny models, 5 documents) runs every step and ends in the comparison table."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srsly

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_project_yml_is_valid_and_every_script_exists():
    from weasel.util import load_project_config

    config = load_project_config(ROOT)
    commands = {c["name"]: c for c in config["commands"]}
    for workflow, steps in config["workflows"].items():
        assert steps, workflow
        for step in steps:
            assert step in commands, f"workflow {workflow} names unknown command {step}"
    for command in commands.values():
        assert command["script"], command["name"]
        for line in command["script"]:
            # weasel runs a leading `python` with its own interpreter; anything else must be
            # on PATH, which it is not unless the venv is activated
            assert line.startswith("python "), f"{command['name']}: {line}"
            for word in shlex.split(line):
                if word.endswith((".cfg", ".py")) and not word.startswith("-"):
                    assert (ROOT / word).exists(), f"{command['name']}: {word} is missing"
    for asset in srsly.read_yaml(ROOT / "project.yml")["assets"]:
        assert len(asset["sha256"]) == 64 and asset["dest"].startswith("assets/")


def readme_commands() -> list[str]:
    """The commands of README.md's "On a fresh machine" block, continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf8")
    block = text.split("## On a fresh machine", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    lines = [line for line in block.replace("\\\n", " ").splitlines()
             if line.strip() and not line.startswith("#")]
    return [" ".join(line.split()) for line in lines]


def test_readme_names_the_workflows_and_the_tests():
    commands = readme_commands()
    assert commands[0] == "bash scripts/setup.sh && .venv/bin/weasel run all"
    assert commands[1] == "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert commands[2].startswith("bash scripts/setup.sh && .venv/bin/weasel run all_smoke ")


@pytest.fixture(scope="module")
def smoke_run(shared_data, tmp_path_factory):
    """The README's commands in a copy of the project (``../shared`` beside it, the project's
    .venv linked in), as a new user types them: nothing activated, .venv/bin not on PATH."""
    # the copy's setup.sh then finds .venv up to date and installs nothing
    subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, check=True, capture_output=True)
    base = tmp_path_factory.mktemp("clone")
    project = base / "project"
    project.mkdir()
    (base / "shared").symlink_to(shared_data.parent)
    for name in ("project.yml", "README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, project)
    for name in ("configs", "scripts"):
        shutil.copytree(ROOT / name, project / name)
    (project / ".venv").symlink_to(ROOT / ".venv")
    path = [p for p in os.environ["PATH"].split(os.pathsep)
            if Path(p).resolve() != VENV_BIN.resolve()]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(PATH=os.pathsep.join(path), HF_HUB_OFFLINE="1")
    all_cmd, _, smoke_cmd = readme_commands()
    dry = subprocess.run(["bash", "-c", all_cmd + " --dry"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    started = time.perf_counter()
    proc = subprocess.run(["bash", "-c", smoke_cmd], cwd=project, env=env, capture_output=True,
                          text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    print(f"all_smoke: {time.perf_counter() - started:.0f} s")
    return project, proc.stdout, proc.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_all_smoke_ends_in_the_comparison_table(smoke_run):
    project, output, log = smoke_run
    lines = output.rstrip().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("LLM-only "))
    header, _, lmrc_row, baseline_row, gold_row, note = lines[at - 3:at + 3]
    assert header.split()[:4] == ["run", "P", "R", "F1"] and "Ign F1" in header
    assert "top-1" in header
    assert lmrc_row.startswith("LMRC ") and baseline_row.startswith("LLM-only ")
    assert gold_row.startswith("RC-only-gold-pairs ")
    gold = json.loads((project / "metrics" / "rc_gold_pairs.json").read_text())
    assert gold["evaluated"]["pairs"] == "gold" and 0 <= gold["top1"]["top1"] <= 1
    assert note.startswith("(scores in %")
    lmrc = json.loads((project / "metrics" / "lmrc.json").read_text())
    assert lmrc["evaluated"]["documents"] == 1
    assert lmrc["evaluated"]["components"] == ["lmrc_candidate_proposer",
                                               "llm_relation_classifier"]
    assert "candidates" in lmrc and lmrc["ign_f1"] is not None
    assert '"per_relation"' not in output  # the full scores go to the file, not the terminal
    assert "bitsandbytes" not in log and "gemm_4bit" not in log  # 4-bit was not asked for
    assert "RAG4RE+fine-tuning" in output and "macro-F1" in output
    for row in ("simple", "rag4re", "finetuned", "rag4re_finetuned"):
        scores = json.loads((project / "metrics" / f"semeval_{row}.json").read_text())
        assert scores["evaluated"]["documents"] == 4 and "semeval_macro_f1" in scores
    assert isinstance(json.loads((project / "metrics" / "lmrc_result.json").read_text()), list)
    # the raw-text pipeline: NER trained, evaluated from plain text beside LMRC on gold entities
    raw = json.loads((project / "metrics" / "raw_text.json").read_text())
    assert raw["evaluated"]["documents"] == 1
    assert (project / "metrics" / "ner.json").exists()
    assert lines[-2].startswith("LMRC-from-text ") and lines[-3].startswith("LMRC-gold-entities ")


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_package_declares_its_requirements_and_licence(smoke_run):
    project, output, log = smoke_run
    wheels = sorted((project / "packages").rglob("*.whl"))
    assert len(wheels) == 2, wheels  # the LMRC pipeline and the raw-text pipeline
    metas = [json.loads(p.read_text()) for p in (project / "packages").glob("*/meta.json")]
    assert sorted(m["name"] for m in metas) == ["lmrc_smoke", "lmrc_smoke_text"]
    meta = next(m for m in metas if m["name"] == "lmrc_smoke")
    assert meta["license"] == "Apache-2.0"
    assert any(r.startswith("spacy-lmrc") for r in meta["requirements"]), meta["requirements"]
    assert all(f"wrote {wheel.relative_to(project)}" in output for wheel in wheels)
    assert "LICENSE" not in output + log


@pytest.mark.integration
@pytest.mark.slow
def test_the_trained_proposer_folder_can_be_evaluated(smoke_run):
    project, _, _ = smoke_run
    proc = subprocess.run(
        [str(VENV_BIN / "spacy-lmrc"), "evaluate", "training/proposer/model-best",
         "corpus/docred_dev.spacy", "-o", "metrics/proposer.json"],
        cwd=project, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "candidate pairs" in proc.stdout and "docs/s" in proc.stdout
    scores = json.loads((project / "metrics" / "proposer.json").read_text())
    assert scores["evaluated"]["documents"] == 5 and "kept_fraction" in scores["candidates"]
