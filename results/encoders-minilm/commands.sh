#!/usr/bin/env bash
# The runs of results/encoders-minilm: all-MiniLM-L6-v2 fine-tuned on all 450 paper-split training items (or
# one fold of the official split, FOLD, default 0), one seed after another; the test part is predicted and scored
# once per seed.
# Usage: bash results/encoders-minilm/commands.sh paper|official SEED...   (from the repository root)
#   FOLD=3 TAG=-lpft EXTRA="--head_init linear_probe" bash results/encoders-minilm/commands.sh official 1
# A variant of the recipe: EXTRA holds train.py flags and TAG names the variant's folders, e.g.
#   EXTRA="--class_weighted_loss false" TAG=-unweighted bash results/encoders-minilm/commands.sh paper 1
set -euo pipefail
SPLIT=$1; shift
RECIPE=recipes/encoders/all-minilm-l6-v2.yaml
EXTRA=${EXTRA:-}
TAG=${TAG:-}
FOLD=${FOLD:-0}
FOLD_TAG=$([ "$FOLD" = 0 ] || echo "-fold$FOLD")  # fold 0's folders predate the other folds' and keep their names
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for SEED in "$@"; do
    OUT=outputs/encoders/all-minilm-l6-v2$TAG-$SPLIT$FOLD_TAG-seed$SEED
    DEST=results/encoders-minilm/$SPLIT$TAG$FOLD_TAG-seed$SEED
    mkdir -p "$DEST"
    /usr/bin/time -f "%e s wall, %U s user" -o "$DEST/train_time.txt" \
        nice -n 15 .venv/bin/python train.py $RECIPE --split "$SPLIT" --fold "$FOLD" --seed "$SEED" --output_dir "$OUT" \
        $EXTRA > "$DEST/train.log" 2>&1
    /usr/bin/time -f "%e s wall, %U s user" -o "$DEST/infer_time.txt" \
        nice -n 15 .venv/bin/python infer.py $RECIPE --split "$SPLIT" --fold "$FOLD" --output_dir "$OUT" > "$DEST/infer.log" 2>&1
    STEM=predictions_${SPLIT}_test_score
    cp "$OUT/$STEM.json" "$OUT/$STEM.meta.json" "$OUT/trainer_state.json" "$OUT/run_config.yaml" \
        "$OUT/eval_results.json" "$DEST/"
    nice -n 15 .venv/bin/python evaluate.py --predictions "$OUT/$STEM.json" --split "$SPLIT" \
        --output_file "$DEST/metrics.json" > "$DEST/evaluate.log" 2>&1
done
