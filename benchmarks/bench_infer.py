"""Inference speed and accuracy: `score` mode (label likelihoods, shared context cache) against the
paper's `generate` decoding (beam search 5, repetition penalty 2.0), against scoring each
context+answer in full, and score mode's batching (file order, longest first, one item at a time), on the
same test items with the same model.

    python -m benchmarks.bench_infer [--items 50] [--adapter_path RUN]   # RUN: a causal-LM LoRA run folder
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from domainqa import inference
from domainqa.data import LABELS, load_task_data
from domainqa.embedded import EMBEDDED_MODEL
from domainqa.families.causal_lm import load_for_inference
from domainqa.metrics import official_scores
from domainqa.prompts import PromptFormat

REPO = Path(__file__).resolve().parents[1]


def score_each_full_sequence(model, tokenizer, fmt, items, batch_size):
    """The straightforward way: one forward over every context+answer, three per item."""
    for batch in inference.batches(items, batch_size):
        encoded = [inference._label_token_ids(tokenizer, fmt, e) for e in batch]
        scores = inference._score_batch_full(model, [p for p, _ in encoded], [c for _, c in encoded],
                                             tokenizer.pad_token_id)  # fmt: skip
        for example, row in zip(batch, scores.tolist(), strict=True):
            yield {"id": example["id"], "prediction": LABELS[max(range(3), key=row.__getitem__)]}


def single_forward(model, tokenizer, fmt, items, batch_size):
    """The floor for score mode: one forward over each prompt's shared context, last position's logits only
    (score mode adds the short answer continuations on the cache)."""
    for batch in inference.batches(items, batch_size):
        prefixes = [inference._label_token_ids(tokenizer, fmt, e)[0] for e in batch]
        ids, mask = inference._pad(prefixes, tokenizer.pad_token_id, left=True)
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, position_ids=inference._positions(mask), logits_to_keep=1)
        for example in batch:
            yield {"id": example["id"], "prediction": None, "timing_only": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--adapter_path", default=None, help="A trained adapter; default: the base model.")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--output", default="outputs/bench_infer.json")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads; 1 makes CPU time a fair clock.")
    parser.add_argument("--skip", nargs="*", default=[], help="Leave out the modes whose name starts with these.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # with one thread, CPU time is the work done, whatever else runs

    items = load_task_data(os.environ.get("PUBMEDQA_PATH"))["test"][: args.items]
    model, tokenizer = load_for_inference(EMBEDDED_MODEL, args.adapter_path)
    fmt = PromptFormat("chat", tokenizer)
    runs = {
        "generate (paper: 5 beams, repetition penalty 2.0)": lambda: inference.generate_answers(
            model, tokenizer, fmt, items, args.batch_size, max_new_tokens=args.max_new_tokens
        ),
        "score, each context+answer in full": lambda: score_each_full_sequence(
            model, tokenizer, fmt, items, args.batch_size
        ),
        "score, shared context cache, file order": lambda: inference.score_labels(
            model, tokenizer, fmt, items, args.batch_size
        ),
        "score, longest first (infer.py's order)": lambda: inference.score_labels(
            model, tokenizer, fmt, inference.longest_first(items), args.batch_size
        ),
        "score, one item per forward pass (no padding)": lambda: inference.score_labels(
            model, tokenizer, fmt, items, 1
        ),
        "one forward per prompt, last logits only (score mode's floor; no prediction)": lambda: single_forward(
            model, tokenizer, fmt, items, args.batch_size
        ),
    }
    truth = [e["final_decision"] for e in items]
    results = []
    runs = {name: run for name, run in runs.items() if not any(name.startswith(skip) for skip in args.skip)}
    for name, run in runs.items():
        start, start_cpu = time.perf_counter(), time.process_time()
        by_id = {row["id"]: row for row in run()}
        rows = [by_id[e["id"]] for e in items]  # in the items' order, whatever order they were scored in
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        timing_only = any(r.get("timing_only") for r in rows)
        unparsed = None if timing_only else sum(r["prediction"] is None for r in rows)
        predicted = [r["prediction"] or "maybe" for r in rows]  # infer.py's default fallback
        scores = {"accuracy": None, "macro_f1": None} if timing_only else official_scores(truth, predicted)
        results.append({"mode": name, "wall_seconds": seconds, "cpu_seconds": cpu_seconds,
                        "examples_per_cpu_second": len(rows) / cpu_seconds, "unparsed": unparsed,
                        **scores})  # fmt: skip
        print(f"{name}: {cpu_seconds:.1f} CPU s", file=sys.stderr)
    baseline = results[0]["examples_per_cpu_second"]
    model_name = f"SmolLM2-135M-Instruct + {args.adapter_path}" if args.adapter_path else "SmolLM2-135M-Instruct"
    print(f"{model_name}, first {len(items)} paper-split test items, batch {args.batch_size}, "
          f"{args.threads} CPU thread(s)\n")  # fmt: skip
    first = "generate" if results[0]["mode"].startswith("generate") else "first row"
    print(f"| mode | examples per CPU-second | vs {first} | CPU s | wall s | accuracy | macro-F1 | unparsed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        rate = r["examples_per_cpu_second"]
        quality = ["n/a"] * 3
        if r["accuracy"] is not None:
            quality = [f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", r["unparsed"]]
        print(f"| {r['mode']} | {rate:.3f} | {rate / baseline:.2f}x | {r['cpu_seconds']:.0f} | {r['wall_seconds']:.0f} "
              f"| {' | '.join(map(str, quality))} |")  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
