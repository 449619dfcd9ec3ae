"""Training throughput in real (non-pad) tokens per second: padding every example to 512 tokens and
computing the LM head on every position, as the original research code did, against this project's
training (TRL's answer-only LM head, dynamic padding, length-grouped batches); plus peak memory and
a profile of where one step's time goes.

    python -m benchmarks.bench_train [--examples 32] [--batch_size 4]

Every variant trains one epoch of LoRA on SmolLM2-135M over the same examples (truncated at 512
tokens, so all see the same tokens), interleaved in one process; peak memory is measured in a
process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


BASELINE = "original: pad to 512, LM head on every position"
VARIANTS = {  # name: (trainer, TrainingArguments set on top of the common ones)
    BASELINE: ("plain", {"pad_to_multiple_of": 512, "train_sampling_strategy": "random"}),
    "TRL SFTTrainer as is: dynamic padding, its fused LM head": ("trl", {"train_sampling_strategy": "random"}),
    "answer-only LM head, pad to 512": ("ours", {"pad_to_multiple_of": 512, "train_sampling_strategy": "random"}),
    "answer-only LM head, dynamic padding": ("ours", {"train_sampling_strategy": "random"}),
    "train.py: answer-only LM head, dynamic padding, length-grouped": ("ours", {}),
}


def make_trainer(variant: str, examples: int, batch_size: int, output_dir: str):
    """A fresh LoRA on SmolLM2-135M over the first `examples` training items, for one epoch."""
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    from domainqa.arguments import TrainingArguments
    from domainqa.data import load_task_data
    from domainqa.embedded import EMBEDDED_MODEL
    from domainqa.families.causal_lm import AnswerLossSFTTrainer, build_peft_config, training_dataset
    from domainqa.modeling import load_model, load_tokenizer
    from domainqa.prompts import PromptFormat

    torch.manual_seed(0)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    fmt = PromptFormat("chat", tokenizer)
    dataset = training_dataset(load_task_data(os.environ.get("PUBMEDQA_PATH"))["train"], fmt, examples)
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch_size, num_train_epochs=1, max_length=512,
        learning_rate=5e-5, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_pin_memory=False, seed=0, **VARIANTS[variant][1],
    )  # fmt: skip
    kind, _ = VARIANTS[variant]
    trainer_class = AnswerLossSFTTrainer if kind == "ours" else SFTTrainer
    peft_config = build_peft_config("lora", "llama", lora_alpha=32)
    trainer = trainer_class(model=load_model(EMBEDDED_MODEL), args=args, train_dataset=dataset,
                            processing_class=tokenizer, peft_config=peft_config)  # fmt: skip
    if kind == "plain":
        # A plain Trainer computes the loss from the logits of every position, padding included, as a
        # fine-tuning script that pads to max_length does; same tokens, labels, LoRA and optimizer.
        trainer = Trainer(model=trainer.model, args=args, train_dataset=trainer.train_dataset,
                          data_collator=trainer.data_collator)  # fmt: skip
    return trainer


def train_once(variant: str, examples: int, batch_size: int) -> dict:
    trainer = make_trainer(variant, examples, batch_size, "outputs/bench_train_run")
    real_tokens = sum(min(len(ids), 512) for ids in trainer.train_dataset["input_ids"])
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "real_tokens": real_tokens,
            "mean_loss": sum(losses) / len(losses), "steps": trainer.state.global_step}  # fmt: skip


def peak_memory(variant: str, examples: int, batch_size: int) -> float:
    """Peak resident memory (GiB) of a whole training run, in a process of its own."""
    code = (f"import sys, resource, torch; torch.set_num_threads(1); "
            f"import benchmarks.bench_train as b; b.train_once({variant!r}, {examples}, {batch_size}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def profile_one_step(batch_size: int) -> list[tuple[str, float]]:
    """Self CPU time of the top operators in one forward and backward of train.py's trainer."""
    from torch.profiler import ProfilerActivity, profile

    trainer = make_trainer(list(VARIANTS)[-1], batch_size, batch_size, "outputs/bench_train_run")
    batch = next(iter(trainer.get_train_dataloader()))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.compute_loss(trainer.model, batch).backward()
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return [(e.key, e.self_cpu_time_total / total) for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--output", default="outputs/bench_train.json")
    parser.add_argument("--rounds", type=int, default=1, help="Each variant runs once per round, interleaved.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads; 1 makes CPU time a fair clock.")
    args = parser.parse_args()
    import torch

    # With one thread, the process's CPU time is the work done, whatever else the machine runs; wall
    # time is reported too.
    torch.set_num_threads(args.threads)
    # Variants run interleaved in one process, so that a change in machine load hits them all alike.
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        for name in VARIANTS:
            runs[name].append(train_once(name, args.examples, args.batch_size))
            print(f"round {round_index + 1} {name}: {runs[name][-1]['cpu_seconds']:.1f} CPU s", file=sys.stderr)
    results = []
    for name, done in runs.items():
        cpu_seconds = statistics.median(r["cpu_seconds"] for r in done)
        first = done[0]
        results.append({"variant": name, "cpu_seconds": cpu_seconds,
                        "real_tokens_per_cpu_second": first["real_tokens"] / cpu_seconds,
                        "wall_seconds": statistics.median(r["seconds"] for r in done), "steps": first["steps"],
                        "mean_loss": first["mean_loss"], "runs": done})  # fmt: skip
    baseline = results[0]["real_tokens_per_cpu_second"]
    memory = {name: peak_memory(name, args.examples, args.batch_size) for name in (BASELINE, list(VARIANTS)[-1])}
    print(f"LoRA on SmolLM2-135M, {args.examples} PubMedQA training items, batch {args.batch_size}, one epoch, "
          f"{args.threads} CPU thread(s), median of {args.rounds} interleaved round(s)\n")  # fmt: skip
    print("| variant | real tokens per CPU-second | vs original | CPU s | wall s | steps | mean loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        rate = r["real_tokens_per_cpu_second"]
        print(f"| {r['variant']} | {rate:.1f} | {rate / baseline:.2f}x | {r['cpu_seconds']:.1f} "
              f"| {r['wall_seconds']:.1f} | {r['steps']} | {r['mean_loss']:.4f} |")  # fmt: skip
    print(
        "\nPeak resident memory of a whole run (own process): "
        + ", ".join(f"{name}: {gib:.2f} GiB" for name, gib in memory.items())
    )
    profile = profile_one_step(args.batch_size)
    print("\nWhere a train.py step's CPU time goes (forward and backward, top operators by self time):\n")
    print("| operator | share |\n| --- | --- |")
    for key, share in profile:
        print(f"| `{key}` | {share:.1%} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps({"variants": results, "peak_rss_gib": memory, "profile": profile}, indent=2)
    )


if __name__ == "__main__":
    main()
