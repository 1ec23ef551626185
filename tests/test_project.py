"""The Weasel workflow: project.yml is valid, and `weasel run all` finishes on a 5-document
slice with tiny models, ending in the metrics tables and an installable pipeline wheel."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import srsly

from .tiny_models import make_tiny_encoder, make_tiny_llama

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
            for word in shlex.split(line):
                if word.endswith((".cfg", ".py")) and not word.startswith("-"):
                    assert (ROOT / word).exists(), f"{command['name']}: {word} is missing"
    for asset in srsly.read_yaml(ROOT / "project.yml")["assets"]:
        assert len(asset["sha256"]) == 64 and asset["dest"].startswith("assets/")


TINY_VARS = {
    "train_first": 5, "dev_last": 5, "eval_docs": 1, "rc_steps": 2, "baseline_steps": 2,
    "semeval_train_first": 60, "semeval_dev_last": 20, "semeval_eval": 4, "rag_steps": 2,
    "max_new_tokens": 8, "pairs_per_prompt": 100, "package_name": "lmrc_tiny",
}


@pytest.fixture(scope="module")
def workflow_run(shared_data, tmp_path_factory):
    """`weasel run all` in a copy of the project, with tiny models, on 5 + 5 documents."""
    models = tmp_path_factory.mktemp("tiny_models")
    encoder = make_tiny_encoder(models / "encoder")
    llm = make_tiny_llama(models / "llm")
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "project.yml", project)
    shutil.copytree(ROOT / "configs", project / "configs")
    shutil.copytree(ROOT / "scripts", project / "scripts")
    overrides = {**TINY_VARS, "local_data": shared_data, "encoder": encoder, "llm": llm}
    args = [str(VENV_BIN / "weasel"), "run", "all", str(project)]
    for key, value in overrides.items():
        args += [f"--vars.{key}", str(value)]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return project, proc.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_all_workflow_ends_in_metrics_tables(workflow_run):
    project, output = workflow_run
    lmrc = json.loads((project / "metrics" / "lmrc.json").read_text())
    assert lmrc["evaluated"]["documents"] == 1
    assert lmrc["evaluated"]["components"] == ["lmrc_candidate_proposer",
                                               "llm_relation_classifier"]
    assert "candidates" in lmrc and lmrc["ign_f1"] is not None
    assert "LMRC" in output and "LLM-only" in output and "Ign F1" in output
    assert "RAG4RE+fine-tuning" in output and "macro-F1" in output
    for row in ("simple", "rag4re", "finetuned", "rag4re_finetuned"):
        scores = json.loads((project / "metrics" / f"semeval_{row}.json").read_text())
        assert scores["evaluated"]["documents"] == 4 and "semeval_macro_f1" in scores
    result = json.loads((project / "metrics" / "lmrc_result.json").read_text())
    assert isinstance(result, list)


@pytest.mark.integration
@pytest.mark.slow
def test_packaged_wheel_installs_and_loads(workflow_run, tmp_path):
    project, _ = workflow_run
    wheels = list((project / "packages").rglob("*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheels[0])], check=True)
    code = ("import spacy; nlp = spacy.load('en_lmrc_tiny'); "
            "print(','.join(nlp.pipe_names))")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "lmrc_candidate_proposer,llm_relation_classifier"
