"""LoRA training steps on CPU under three numeric precisions, in one process: real tokens per CPU-second and
each step's loss side by side.

    OMP_NUM_THREADS=1 PUBMEDQA_PATH=/path/to/ori_pqal.json python -m benchmarks.bench_cpu_train_precision \
        [--steps 6] [--batch_size 8] [--max_length 512] [--output docs/cpu_train_precision.json]

Training items: the first steps x batch_size paper-split training items that fit in max_length tokens whole
(about 380 tokens each at 512). Variants, on the same batches in the same order from the same LoRA
initialisation (r 4 on q/v, no dropout):

- `fp32`: float32 model and LoRA.
- `autocast`: float32 model and LoRA, the Trainer's `bf16=True` (torch.autocast on CPU: bfloat16 matrix
  multiplies, float32 master weights).
- `bf16-base`: the frozen base model stored in bfloat16, LoRA parameters in float32 (PEFT's default).

One torch thread, so that process CPU time is the work done even on a shared machine; each step is timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from domainqa.precision import cpu_supports_bf16  # noqa: E402

VARIANTS = {  # name: (model dtype, Trainer bf16, description)
    "fp32": ("float32", False, "float32 (baseline)"),
    "autocast": ("float32", True, "Trainer bf16=True (autocast), float32 weights"),
    "bf16-base": ("bfloat16", False, "bfloat16 frozen base, float32 LoRA"),
}


class StepClock(TrainerCallback):
    """Process CPU time and wall time of every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.process_time(), time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        cpu, wall = self._start
        self.steps.append({"cpu_seconds": time.process_time() - cpu, "seconds": time.perf_counter() - wall})


def train_variant(name: str, steps: int, batch_size: int, max_length: int) -> dict:
    from domainqa.arguments import TrainingArguments
    from domainqa.data import load_task_data
    from domainqa.prompts import PromptFormat

    try:  # where the loaders live has moved between versions of the package
        from domainqa.modeling import EMBEDDED_MODEL  # type: ignore[attr-defined]
    except ImportError:
        from domainqa.embedded import EMBEDDED_MODEL
    from domainqa.families.causal_lm import AnswerLossSFTTrainer, build_peft_config, training_dataset
    from domainqa.modeling import load_model, load_tokenizer

    dtype, bf16, _ = VARIANTS[name]
    torch.manual_seed(0)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    fmt = PromptFormat("chat", tokenizer)
    # Items that fit in max_length whole: truncation would cut the answer, and TRL drops answerless rows.
    train = load_task_data(os.environ.get("PUBMEDQA_PATH"))["train"]
    fits = [e for e in train if len(tokenizer(fmt.prompt(e) + fmt.completion(e))["input_ids"]) <= max_length]
    if len(fits) < steps * batch_size:
        raise SystemExit(f"only {len(fits)} training items fit in {max_length} tokens")
    dataset = training_dataset(fits, fmt, steps * batch_size)
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            max_length=max_length,
            learning_rate=5e-5,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
            seed=0,
            bf16=bf16,
            use_cpu=True,  # a CPU benchmark; the Trainer also asks for it before it autocasts to bf16 on CPU
            train_sampling_strategy="sequential",
        )
        clock = StepClock()
        trainer = AnswerLossSFTTrainer(
            model=load_model(EMBEDDED_MODEL, dtype=dtype),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=build_peft_config("lora", "llama", lora_alpha=32, lora_dropout=0.0),
            callbacks=[clock],
        )
        trainable = {str(p.dtype) for p in trainer.model.parameters() if p.requires_grad}
        frozen = {str(p.dtype) for p in trainer.model.parameters() if not p.requires_grad}
        real_tokens = sum(min(len(ids), max_length) for ids in trainer.train_dataset["input_ids"])
        trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    cpu = sum(s["cpu_seconds"] for s in clock.steps)
    return {
        "variant": name,
        "label": VARIANTS[name][2],
        "trainable_dtypes": sorted(trainable),
        "frozen_dtypes": sorted(frozen),
        "steps": len(clock.steps),
        "real_tokens": real_tokens,
        "cpu_seconds": cpu,
        "seconds": sum(s["seconds"] for s in clock.steps),
        "real_tokens_per_cpu_second": real_tokens / cpu,
        "step_times": clock.steps,
        "losses": losses,
        "load_average_end": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated, run in this order.")
    parser.add_argument("--output", default="docs/cpu_train_precision.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}, bf16-capable CPU: {cpu_supports_bf16()}", file=sys.stderr)
    results = []
    for name in (v.strip() for v in args.variants.split(",") if v.strip()):
        results.append(train_variant(name, args.steps, args.batch_size, args.max_length))
        print(f"{name}: {results[-1]['cpu_seconds']:.1f} CPU s, losses {results[-1]['losses']}", file=sys.stderr)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"torch": torch.__version__, "threads": 1, "cpu_supports_bf16": cpu_supports_bf16(),
                                  "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                                  "variants": results}, indent=2))  # fmt: skip
    base = results[0]["real_tokens_per_cpu_second"]
    steps = max(len(r["losses"]) for r in results)
    print(f"LoRA (r 4, q/v) on SmolLM2-135M-Instruct, {args.steps} steps of {args.batch_size} sequences "
          f"(<= {args.max_length} tokens), one CPU thread\n")  # fmt: skip
    print("| variant | real tokens per CPU-second | vs float32 | CPU s | wall s | "
          + " | ".join(f"loss {i + 1}" for i in range(steps)) + " |")  # fmt: skip
    print("| --- " * (5 + steps) + "|")
    for r in results:
        rate = r["real_tokens_per_cpu_second"]
        print(f"| {r['label']} | {rate:.1f} | {rate / base:.2f}x | {r['cpu_seconds']:.0f} | {r['seconds']:.0f} | "
              + " | ".join(f"{loss:.4f}" for loss in r["losses"]) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
