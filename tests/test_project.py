"""The Weasel workflow: project.yml is valid and runs with weasel's own interpreter, and the
README's commands, run exactly as written with a PATH that lacks .venv/bin, work: `all_smoke`
(tiny models, 5 documents) runs every step and ends in the comparison table; the sentence-level
`rag4re` workflow's commands resolve against their configs and run with the tiny models."""

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
    assert commands[1] == "bash scripts/setup.sh --serve && .venv/bin/python -m pytest -q"
    assert commands[2].startswith("bash scripts/setup.sh && .venv/bin/weasel run all_smoke ")
    assert commands[3] == "bash scripts/setup.sh && .venv/bin/weasel run rag4re"


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
    all_cmd, _, smoke_cmd = readme_commands()[:3]
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


# the rag4re workflow (the sentence level on its own) ----------------------------------------

SEMEVAL_NAMES = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e1,e2)",
                 "Component-Whole(e2,e1)", "Other"]
# (sentence, label id): 16 training sentences (four per label id 1, 2, 3, 4), then 4 dev ones
SEMEVAL_ROWS = [
    ("The <e1>burst</e1> has been caused by water hammer <e2>pressure</e2>.", 1),
    ("The <e1>fire</e1> was caused by a <e2>cigarette</e2>.", 1),
    ("The <e1>flood</e1> was caused by heavy <e2>rain</e2>.", 1),
    ("The <e1>crash</e1> was caused by the <e2>ice</e2>.", 1),
    ("The <e1>engine</e1> is part of the <e2>car</e2>.", 2),
    ("The <e1>wheel</e1> is a part of the <e2>bicycle</e2>.", 2),
    ("The <e1>keyboard</e1> belongs to the <e2>laptop</e2>.", 2),
    ("The <e1>roof</e1> of the <e2>house</e2> leaked.", 2),
    ("The <e1>car</e1> has a big <e2>engine</e2>.", 3),
    ("The <e1>tree</e1> lost a <e2>branch</e2>.", 3),
    ("The <e1>book</e1> has a torn <e2>page</e2>.", 3),
    ("The <e1>shirt</e1> lost a <e2>button</e2>.", 3),
    ("The <e1>ear</e1> of the rabbit was longer than its <e2>tail</e2>.", 4),
    ("A <e1>company</e1> of soldiers marched into the <e2>town</e2>.", 4),
    ("The <e1>cat</e1> sat next to the <e2>dog</e2>.", 4),
    ("The <e1>man</e1> looked at the <e2>sky</e2>.", 4),
    ("The <e1>smoke</e1> was caused by the <e2>fire</e2>.", 1),
    ("The <e1>door</e1> is part of the <e2>house</e2>.", 2),
    ("The <e1>lamp</e1> has a new <e2>bulb</e2>.", 3),
    ("The <e1>girl</e1> walked past the <e2>shop</e2>.", 4),
]


def workflow_commands(project_dir: Path, workflow: str,
                      overrides: dict | None = None) -> list[dict]:
    """The commands of ``workflow`` as weasel resolves them (variables substituted)."""
    from weasel.util import load_project_config

    config = load_project_config(project_dir, overrides=overrides or {})
    commands = {c["name"]: c for c in config["commands"]}
    return [commands[name] for name in config["workflows"][workflow]]


def config_overrides(words: list[str]) -> dict[str, str]:
    """The ``--section.key value`` pairs of a command line (the spaCy-style config overrides)."""
    return {word[2:]: value for word, value in zip(words, words[1:])
            if word.startswith("--") and "." in word}


def has_key(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_rag4re_workflow_steps_resolve_to_existing_settings(tmp_path):
    """Every step of `rag4re` is a command whose resolved lines name existing configs and
    override only keys those configs have; each dependency is there or made by an earlier step;
    it shares the retriever's steps with `all` and overwrites none of `all`'s outputs."""
    from spacy.util import load_config

    shutil.copy(ROOT / "project.yml", tmp_path)  # weasel creates the directories beside it
    steps = workflow_commands(tmp_path, "rag4re")
    all_steps = workflow_commands(tmp_path, "all")
    names = [c["name"] for c in steps]
    assert names[:4] == ["assets", "semeval_convert", "train_retriever", "build_index"]
    assert names[-1] == "rag4re_evaluate"
    made: set[str] = set()
    for command in steps:
        for dep in command.get("deps", []):
            dep = dep.removeprefix("./")
            assert (ROOT / dep).exists() or dep in made or dep.startswith("assets/"), (
                f"{command['name']} needs {dep}, which no earlier step makes")
        for line in command["script"]:
            assert "${" not in line, line
            words = shlex.split(line)
            if words[:3] == ["python", "-m", "spacy"] or "finetune-classifier" in words:
                config = load_config(ROOT / words[words.index(next(
                    w for w in words if w.endswith(".cfg")))], interpolate=False)
                for key in config_overrides(words):
                    assert has_key(config, key), f"{command['name']}: {key} not in {words}"
        made.update(o.removeprefix("./") for o in command.get("outputs", []))
    shared = {c["name"] for c in steps} & {c["name"] for c in all_steps}
    assert shared == {"assets", "semeval_convert", "train_retriever", "build_index"}
    own_outputs = {o for c in steps if c["name"] not in shared for o in c.get("outputs", [])}
    all_outputs = {o for c in all_steps for o in c.get("outputs", [])}
    assert not own_outputs & all_outputs
    # `all`'s smoke part keeps its own budgets; the rag4re steps read only theirs
    raw = {c["name"]: " ".join(c["script"])
           for c in srsly.read_yaml(ROOT / "project.yml")["commands"]}
    assert "vars.rag_minutes" in raw["finetune_sentence"]
    assert all("vars.rag_" not in raw[name] and "vars.semeval_eval" not in raw[name]
               for name in names if name not in shared)
    # the table: one metrics file per name, each written by an evaluate line before it
    evaluate = shlex.split(steps[-1]["script"][-1])
    assert evaluate[:4] == ["python", "-m", "spacy_lmrc", "compare"]
    files = [w for w in evaluate if w.endswith(".json")]
    assert len(files) == len(evaluate[evaluate.index("--names") + 1].split(",")) == 7
    assert set(files) == set(steps[-1]["outputs"])


def run_line(line: str) -> str:
    """Run a workflow line (``python -m spacy_lmrc ...`` or ``python -m spacy ...``) in this
    process, as weasel would in a subprocess; its output."""
    from spacy.cli import app as spacy_app
    from typer.testing import CliRunner

    from spacy_lmrc.cli import app as lmrc_app

    words = shlex.split(line)
    assert words[:2] == ["python", "-m"], line
    app = {"spacy_lmrc": lmrc_app, "spacy": spacy_app}[words[2]]
    result = CliRunner().invoke(app, words[3:])
    assert result.exit_code == 0, f"{line}\n{result.output[-3000:]}\n{result.exception!r}"
    return result.output


@pytest.mark.slow
def test_rag4re_workflow_runs_with_tiny_models(tmp_path, monkeypatch, tiny_encoder_dir,
                                               tiny_llama):
    """`rag4re`'s commands, exactly as weasel resolves them, with the smoke workflow's tiny
    random models on 16 training and 4 dev sentences, one training step each: the generators
    trained on RAG4RE prompts (with and without the relation hint) are trained and loaded by
    the rows that use them, and the step ends in the six-row table."""
    shutil.copy(ROOT / "project.yml", tmp_path)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    data = tmp_path / "semeval"
    data.mkdir()
    srsly.write_json(data / "sentences.json", [s for s, _ in SEMEVAL_ROWS])
    srsly.write_json(data / "relations.json", [label for _, label in SEMEVAL_ROWS])
    srsly.write_json(data / "names.json", {"relation": {"names": SEMEVAL_NAMES}})
    overrides = {
        "vars.semeval_sentences": str(data / "sentences.json"),
        "vars.semeval_relations": str(data / "relations.json"),
        "vars.semeval_labels": str(data / "names.json"),
        "vars.semeval_train_first": 16, "vars.semeval_dev_last": 4,
        "vars.encoder": str(tiny_encoder_dir), "vars.llm": tiny_llama,
        "vars.retriever_batch_size": 4, "vars.rag4re_steps": 1, "vars.rag4re_more_steps": 1,
    }
    monkeypatch.chdir(tmp_path)
    steps = workflow_commands(tmp_path, "rag4re", overrides)
    for command in steps[1:]:  # not `assets`: the data is given by path
        for line in command["script"]:
            output = run_line(line)
    table = output.splitlines()
    assert [row.split()[0] for row in table if row.startswith(("simple", "RAG4RE", "fine"))] == [
        "simple-query", "RAG4RE", "fine-tuning", "RAG4RE+fine-tuning",
        "RAG4RE+ft-on-RAG4RE-prompts", "RAG4RE+ft-label-hint", "fine-tuning+examples-vote"]
    trained = {name: srsly.read_json(tmp_path / "training" / "rag4re" / name /
                                     "lmrc_training.json")
               for name in ("generator", "generator_rag", "generator_hint")}
    # each second schedule continues the first one, on its row's own prompts
    assert {t["base_model"] for t in trained.values()} == {"training/rag4re/generator_start"}
    assert [(t["task"]["use_examples"], t["task"]["prompt_format"]["show_example_label"])
            for t in trained.values()] == [(False, False), (True, False), (True, True)]
    for row in ("simple", "rag4re", "finetuned", "rag4re_finetuned", "rag4re_finetuned_rag",
                "rag4re_finetuned_hint", "finetuned_vote"):
        scores = srsly.read_json(tmp_path / "metrics" / "rag4re" / f"{row}.json")
        assert scores["evaluated"]["documents"] == 4 and "semeval_macro_f1" in scores
