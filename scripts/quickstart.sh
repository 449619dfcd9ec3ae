#!/usr/bin/env bash
# The main job on the embedded default, in about 10 minutes on 2 idle CPU cores: fine-tune SmolLM2-135M with
# the CPU search's recipe (LoRA on the last 8 layers, class-weighted decision token) on a slice of the
# PubMedQA training items, predict a slice of the test items with it and with the untouched model, and print
# both side by side. Extra arguments go to train.py. A rerun starts afresh in outputs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
RECIPE=recipes/search/smollm2-135m-lora-top8-answer-cw.yaml
OUT=outputs/quickstart
TRAIN_ITEMS=${TRAIN_ITEMS:-120}
TEST_ITEMS=${TEST_ITEMS:-60}
rm -rf "$OUT"
.venv/bin/python train.py "$RECIPE" --output_dir "$OUT/lora" --max_train_samples "$TRAIN_ITEMS" \
    --eval_strategy no --save_strategy no --load_best_model_at_end false --report_to none "$@"
for run in lora zero-shot; do
    .venv/bin/python infer.py "$RECIPE" --output_dir "$OUT/$run" --eval_split test --max_eval_samples "$TEST_ITEMS"
done
.venv/bin/python evaluate.py --allow_partial \
    --predictions "$OUT/zero-shot/predictions_paper_test_score.json" "$OUT/lora/predictions_paper_test_score.json" \
    --output_file "$OUT/metrics.json"
