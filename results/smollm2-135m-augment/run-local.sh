#!/usr/bin/env bash
# rewriteQA, newQA and combinedQA from the paper split's 450 training items with the embedded
# SmolLM2-135M-Instruct under grammar-constrained decoding, all through one answer cache.
#
# The sources are taken in growing chunks (rewrite then new for each chunk) so that an interrupted run
# still holds both kinds of data; every answer is cached as it arrives, so running this script again
# resumes where it stopped and repeats no finished generation. The final outputs are exactly those of
# one `--max_sources 450` run per recipe.
#
# Usage, from the repository root: bash results/smollm2-135m-augment/run-local.sh
# Environment: CHUNKS (default "64 128 192 256 320 384 450"), BATCH_SIZE (8), MAX_TOKENS (700),
# CACHE (outputs/augment/smollm2-local-cache), THREADS (1).
set -euo pipefail

CHUNKS=${CHUNKS:-"64 128 192 256 320 384 450"}
BATCH_SIZE=${BATCH_SIZE:-8}
MAX_TOKENS=${MAX_TOKENS:-700}
CACHE=${CACHE:-outputs/augment/smollm2-local-cache}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export PUBMEDQA_PATH=${PUBMEDQA_PATH:-../shared/pubmedqa/ori_pqal.json}
PYTHON=${PYTHON:-.venv/bin/python}

augment() {  # recipe name, number of sources
    echo "== $(date -u +%FT%TZ) $1 --max_sources $2"
    "$PYTHON" -m augment "recipes/augment/$1.yaml" --max_sources "$2" --cache_dir "$CACHE" \
        --batch_size "$BATCH_SIZE" --max_tokens "$MAX_TOKENS"
}

for n in $CHUNKS; do
    augment smollm2-local-rewriteqa "$n"
    augment smollm2-local-newqa "$n"
done
augment smollm2-local-combinedqa 450
echo "== $(date -u +%FT%TZ) done"
