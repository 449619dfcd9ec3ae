#!/usr/bin/env bash
# Copies the search's finished runs from outputs/search/ into this folder (official-format predictions with
# their .meta.json, label scores, calibrations, training logs and curves) and scores them with evaluate.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PUBMEDQA_PATH:?set PUBMEDQA_PATH to the official ori_pqal.json}"
HERE=results/smollm2-135m-search
RUNS="smollm2-135m-zero-shot smollm2-135m-lora-top8-label-cw smollm2-135m-lora-top8-answer-cw
smollm2-135m-lora-top8-answer-cw-4ep smollm2-135m-lora-top8-reasoning smollm2-135m-lora-top8-reasoning-greedy
smollm2-135m-seqcls-lora-top8 smollm2-135m-seqcls-probe smollm2-135m-seqcls-lpft-top8
smollm2-135m-seqcls-lora-top8-cw smollm2-135m-seqcls-probe-2-layers smollm2-135m-seqcls-probe-22-layers"
for run in $RUNS; do
    [ -d "outputs/search/$run" ] || continue
    mkdir -p "$HERE/$run"
    for f in outputs/search/$run/predictions_paper_*_score*.json outputs/search/$run/predictions_paper_*_score*.jsonl \
             outputs/search/$run/predictions_paper_*_generate*.json outputs/search/$run/predictions_paper_*_generate*.jsonl \
             outputs/search/$run/calibration.json outputs/search/$run/probe_head.json outputs/search/$run/trainer_state.json \
             outputs/search/$run/training_curves.png outputs/search/$run/run_config.yaml; do
        [ -f "$f" ] && cp "$f" "$HERE/$run/"
    done
done
preds() { for run in $RUNS; do
    for kind in score score_calibrated generate; do
        f="$HERE/$run/predictions_paper_$1_$kind.json"; [ -f "$f" ] && echo "$f"; done; done
    if [ "$1" = test ]; then echo "$HERE/linear-probe/predictions_paper_test.json"; fi; }
.venv/bin/python evaluate.py --eval_split validation --predictions $(preds validation) \
    --output_file "$HERE/validation_metrics.json" > "$HERE/validation_table.md"
.venv/bin/python evaluate.py --eval_split test --predictions $(preds test) \
    --output_file "$HERE/test_metrics.json" > "$HERE/test_table.md"
cat "$HERE/validation_table.md" "$HERE/test_table.md"
