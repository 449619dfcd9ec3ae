#!/usr/bin/env bash
# The main job on the embedded default, in a few minutes on 2 CPU cores: fine-tune SmolLM2-135M with
# LoRA on a slice of the PubMedQA training items, predict a slice of the test items (also zero-shot,
# for comparison), and print the evaluation table. Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
RECIPE=recipes/smollm2-135m/lora/original.yaml
OUT=outputs/quickstart
TRAIN_ITEMS=${TRAIN_ITEMS:-64}
TEST_ITEMS=${TEST_ITEMS:-60}
.venv/bin/python train.py "$RECIPE" --output_dir "$OUT/lora" --max_train_samples "$TRAIN_ITEMS" \
    --num_train_epochs 1 --per_device_train_batch_size 4 --gradient_accumulation_steps 2 \
    --learning_rate 5e-4 --save_strategy steps --save_steps 4 "$@"
for run in lora zero-shot; do
    .venv/bin/python infer.py "$RECIPE" --output_dir "$OUT/$run" --max_eval_samples "$TEST_ITEMS" --batch_size 4
done
.venv/bin/python evaluate.py --allow_partial \
    --predictions "$OUT/zero-shot/predictions_paper_test_score.json" "$OUT/lora/predictions_paper_test_score.json" \
    --output_file "$OUT/metrics.json"
