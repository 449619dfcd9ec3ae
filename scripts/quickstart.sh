#!/usr/bin/env bash
# The main job on the embedded default: train SmolLM2-135M-Instruct's yes/no/maybe head on the PubMedQA paper
# split's training items with the recipe the CPU search selected on validation data (a linear probe fitted on
# the frozen model's features, recipes/search/smollm2-135m-seqcls-probe.yaml), predict the test items with it
# and with the untouched model (label scoring), and print both side by side. The untouched model's predictions
# run beside training, one thread each (two one-thread jobs use a small CPU better than one two-thread job).
# Extra arguments go to train.py. A rerun starts afresh in outputs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
RECIPE=recipes/search/smollm2-135m-seqcls-probe.yaml
UNTOUCHED=recipes/search/smollm2-135m-lora-top8-answer-cw.yaml  # its prompt and label scoring, without an adapter
OUT=outputs/quickstart
TRAIN_ITEMS=${TRAIN_ITEMS:-450}
TEST_ITEMS=${TEST_ITEMS:-500}
CORES=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( CORES > 1 ? CORES / 2 : 1 ))}
ON_GPU=$(.venv/bin/python -c "import torch; print(int(torch.cuda.is_available()))")
# One item per forward pass is fastest on a CPU (no padding: benchmarks/bench_infer.py); batches on a GPU.
BATCH_SIZE=${BATCH_SIZE:-$([ "$ON_GPU" = 1 ] && echo 8 || echo 1)}
rm -rf "$OUT"
mkdir -p "$OUT"
echo "Untouched model: predicting $TEST_ITEMS test items in the background (log: $OUT/untouched.log)"
.venv/bin/python infer.py "$UNTOUCHED" --output_dir "$OUT/untouched" --eval_split test \
    --max_eval_samples "$TEST_ITEMS" --batch_size "$BATCH_SIZE" > "$OUT/untouched.log" 2>&1 &
untouched=$!
trap 'kill $untouched 2>/dev/null || true' EXIT
.venv/bin/python train.py "$RECIPE" --output_dir "$OUT/trained" --max_train_samples "$TRAIN_ITEMS" --report_to none "$@"
# On a CPU the untouched model finishes soon after training: the trained model's predictions then run as two
# processes (accelerate_configs/cpu_2proc.yaml), so that no core waits. Each item is scored the same either way.
PREDICT=(.venv/bin/python)
if [ "$ON_GPU" = 0 ] && [ "$CORES" -gt 1 ]; then
    PREDICT=(.venv/bin/accelerate launch --config_file accelerate_configs/cpu_2proc.yaml)
fi
"${PREDICT[@]}" infer.py "$RECIPE" --output_dir "$OUT/trained" --eval_split test --max_eval_samples "$TEST_ITEMS" \
    --batch_size "$BATCH_SIZE"
wait "$untouched" || { tail -n 20 "$OUT/untouched.log"; exit 1; }
trap - EXIT
.venv/bin/python evaluate.py --allow_partial \
    --predictions "$OUT/untouched/predictions_paper_test_score.json" "$OUT/trained/predictions_paper_test_score.json" \
    --baseline "$OUT/untouched/predictions_paper_test_score.json" --output_file "$OUT/metrics.json"
