"""GPU throughput of training and scoring, with model FLOP utilisation (MFU) against the chip's own measured
bf16 matrix-multiply rate, plus a check that a short training run learned and saved a reloadable adapter.

    python -m benchmarks.bench_gpu train [--variants all] [--out outputs/bench_gpu_train]
    python -m benchmarks.bench_gpu score [--items 500] [--out outputs/bench_gpu_score]
    python -m benchmarks.bench_gpu check-run OUTPUT_DIR [--model PATH]
    python -m benchmarks.bench_gpu init-model FOLDER            # random weights, SmolLM2-135M shapes

`train` runs LoRA on SmolLM2-135M over the paper's 450 training items (chat format, as train.py) for each
variant in one process, baseline first: today's train.py GPU settings (the GPU sweep's 16 x accumulation 4,
float32 weights under bf16 autocast, SDPA, dynamic padding), then faster candidates for the same 64-sequence
optimizer step. Each variant runs a few warm-up steps (kernel selection, compilation), then is timed over
whole optimizer steps. The FLOP count is the work the answer-only LoRA step must do:

    4 * N_frozen * T     frozen decoder weights: forward 2N, gradient w.r.t. activations 2N, no weight gradient
  + 6 * N_lora * T       LoRA weights: forward, activation gradient and weight gradient
  + 6 * L * d * sum(s^2) causal attention scores and mixing (forward s^2 d per layer, backward twice that)
  + 4 * V * d * A        the vocabulary head at the A answer positions only (the loss needs no other)

with T real (non-pad) tokens, s each sequence's length, N excluding the embedding. MFU is that count per second
over the bf16 rate that a loop of large `torch.matmul`s reaches on the same chip in the same process.

`DEVICE=cpu TINY=1` (or --device cpu --tiny) runs every command on a shrunk model and a few items, so the
logic is tested without a GPU (tests/test_gpu_script.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# The GPU sweep's settings (recipes/sweeps/smollm2-135m-peft-gpu.yaml) are the baseline; each other variant
# changes what its name says. They run in this order, the slow-to-start compiled ones last, so that a time cap
# cuts the least informative.
BASELINE = "train.py today: 16 x accum 4, fp32 weights + bf16 autocast, SDPA, padded"
VARIANTS: dict[str, dict] = {
    BASELINE: {"micro": 16, "accum": 4},
    "64 x accum 1": {"micro": 64, "accum": 1},
    "64 x 1, bf16 frozen weights": {"micro": 64, "accum": 1, "dtype": "bfloat16"},
    "64 x 1, bf16 weights, Liger RMSNorm/SwiGLU/RoPE kernels": {
        "micro": 64, "accum": 1, "dtype": "bfloat16", "liger": True, "needs_cuda": True,
    },
    "64 x 1, bf16 weights, padding-free SDPA (block-diagonal mask)": {
        "micro": 64, "accum": 1, "dtype": "bfloat16", "padding_free": True,
    },
    "64 x 1, bf16 weights, padding-free flex attention (document mask)": {
        "micro": 64, "accum": 1, "dtype": "bfloat16", "padding_free": True, "attn": "flex_attention",
        "needs_cuda": True,
    },
    "64 x 1, bf16 weights, torch.compile (padded to 64)": {
        "micro": 64, "accum": 1, "dtype": "bfloat16", "compile": True, "needs_cuda": True,
    },
}  # fmt: skip
# Tiny sizes for a CPU run of the same code: micro-batches scaled by 1/8, 16 items, a 2-layer model.
TINY_SCALE = 8


@dataclass
class Settings:
    device: str
    tiny: bool
    model: str | None  # a model folder; None: random weights in SmolLM2-135M's shapes (same FLOPs)
    items: int
    warmup_steps: int
    timed_steps: int
    seconds_per_variant: float


def settings_from(args: argparse.Namespace) -> Settings:
    tiny = args.tiny or os.environ.get("TINY") == "1"
    device = args.device or os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return Settings(
        device=device,
        tiny=tiny,
        model=args.model,
        items=args.items or (16 if tiny else 450),
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else (1 if tiny else 2),
        timed_steps=args.timed_steps or (2 if tiny else 5),
        seconds_per_variant=args.seconds_per_variant,
    )


# ---------------------------------------------------------------------------------------------- models


def skeleton_config(tiny: bool):
    """SmolLM2-135M's configuration (from the embedded model's folder); shrunk to two thin layers when tiny."""
    from transformers import AutoConfig

    from domainqa.embedded import EMBEDDED_MODEL, resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    if tiny:
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})  # fmt: skip
    return config


def build_model(settings: Settings, dtype: torch.dtype, attn: str):
    """The model a variant trains: the given folder's weights, or random ones of the same shapes."""
    from transformers import AutoModelForCausalLM

    from domainqa.embedded import resolve_model_path

    if settings.model and not settings.tiny:
        return AutoModelForCausalLM.from_pretrained(resolve_model_path(settings.model), dtype=dtype,
                                                    attn_implementation=attn)  # fmt: skip
    torch.manual_seed(0)  # the same random weights for every variant
    return AutoModelForCausalLM.from_config(skeleton_config(settings.tiny), dtype=dtype, attn_implementation=attn)


def load_tokenizer():
    from domainqa.embedded import EMBEDDED_MODEL
    from domainqa.modeling import load_tokenizer as load

    return load(EMBEDDED_MODEL)


def init_model(folder: str, tiny: bool) -> None:
    """Save a randomly initialised model (SmolLM2-135M's shapes, or the tiny ones) with the real tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(skeleton_config(tiny), dtype=torch.float32).save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)


# ---------------------------------------------------------------------------------------------- peak rate


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, tiny: bool, seconds: float = 2.0) -> dict:
    """FLOP/s of a loop of large square matrix products: bf16 on a GPU, float32 on a CPU (the dtype each
    trains its matrix products in here)."""
    size, dtype = (256, torch.float32) if device == "cpu" else (8192, torch.bfloat16)
    if tiny:
        seconds = min(seconds, 0.3)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):  # a batch of launches between clock reads, so the GPU queue stays full
            a @ b
        synchronize(device)
        runs += 10
    elapsed = time.perf_counter() - start
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "flops_per_s": 2 * size**3 * runs / elapsed}


# ---------------------------------------------------------------------------------------------- FLOPs


@dataclass
class ModelShape:
    layers: int
    attention_width: int  # query heads x head dimension
    vocab: int
    hidden: int
    frozen: int  # decoder parameters that get no gradient (embedding and head excluded)
    trainable: int


def model_shape(model) -> ModelShape:
    config = model.config
    heads, head_dim = config.num_attention_heads, getattr(config, "head_dim", None)
    head_dim = head_dim or config.hidden_size // heads
    frozen = trainable = 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            trainable += parameter.numel()
        elif "embed_tokens" not in name and "lm_head" not in name:
            frozen += parameter.numel()
    return ModelShape(config.num_hidden_layers, heads * head_dim, config.vocab_size, config.hidden_size, frozen,
                      trainable)  # fmt: skip


def step_flops(shape: ModelShape, tokens: float, sum_squares: float, answer_positions: float) -> float:
    """The FLOPs one answer-only LoRA training pass needs (the convention in the module docstring)."""
    linear = 4 * shape.frozen * tokens + 6 * shape.trainable * tokens
    attention = 6 * shape.layers * shape.attention_width * sum_squares
    head = 4 * shape.vocab * shape.hidden * answer_positions
    return linear + attention + head


# ---------------------------------------------------------------------------------------------- training


STATS = ("sequences", "real_tokens", "padded_tokens", "sum_squares", "answer_positions")


def batch_stats(inputs: dict) -> torch.Tensor:
    """The STATS of one micro-batch, computed where the batch lives: only device kernels, no copy from the
    host, which would wait for the GPU and stall the launches of the next micro-batch."""
    ids = inputs["input_ids"]
    answers = (inputs["labels"][:, 1:] != -100).sum().double()
    padded = torch.full((), float(ids.numel()), device=ids.device, dtype=torch.double)
    if "attention_mask" not in inputs:  # padding-free: one packed row; sequence i has positions 0..s_i-1,
        positions = inputs["position_ids"].double()  # and sum over p < s of (2p + 1) is s^2
        starts = (inputs["position_ids"] == 0).sum().double()
        return torch.stack([starts, padded, padded, (2 * positions + 1).sum(), answers])
    lengths = inputs["attention_mask"].sum(-1).double()
    sequences = torch.full((), float(ids.shape[0]), device=ids.device, dtype=torch.double)
    return torch.stack([sequences, lengths.sum(), padded, (lengths**2).sum(), answers])


def counting_trainer_class():
    """AnswerLossSFTTrainer that adds each micro-batch's STATS into a device tensor."""
    from domainqa.families.causal_lm import AnswerLossSFTTrainer

    class CountingTrainer(AnswerLossSFTTrainer):
        stats: torch.Tensor | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            counted = batch_stats(inputs)
            self.stats = counted if self.stats is None else self.stats + counted
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return CountingTrainer


def timing_callback(settings: Settings, trainer_ref: list):
    """Marks the start of the timed steps (after warm-up) and stops a variant at its step or time budget."""
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        start: float | None = None
        start_stats: torch.Tensor | None = None
        end: float | None = None
        end_stats: torch.Tensor | None = None
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(settings.device)
            now, trainer = time.perf_counter(), trainer_ref[0]
            if state.global_step == settings.warmup_steps:
                self.start, self.start_stats = now, trainer.stats.clone()
            elif self.start is not None:
                self.end, self.end_stats = now, trainer.stats.clone()
                self.steps = state.global_step - settings.warmup_steps
                over_time = now - self.start > settings.seconds_per_variant
                if self.steps >= settings.timed_steps or over_time:
                    control.should_training_stop = True
            return control

    return Timing()


def training_args(settings: Settings, spec: dict, output_dir: str):
    from domainqa.arguments import TrainingArguments

    scale = TINY_SCALE if settings.tiny else 1
    cuda = settings.device.startswith("cuda")
    extra = {}
    if spec.get("liger"):
        extra = {"use_liger_kernel": True, "liger_kernel_config": {
            "rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
            "fused_linear_cross_entropy": False,  # the answer-only loss already skips the head elsewhere
        }}  # fmt: skip
    if spec.get("compile"):
        extra |= {"torch_compile": True, "pad_to_multiple_of": 64}  # few shapes, few recompilations
    # TRL cannot cut the rows of an unpacked padding-free batch, so it refuses a max_length there; the items go
    # whole (the FLOP count follows the tokens each step really holds).
    max_length = None if spec.get("padding_free") else 1024
    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=max(1, spec["micro"] // scale),
        gradient_accumulation_steps=spec["accum"], max_steps=settings.warmup_steps + settings.timed_steps,
        learning_rate=5e-5, lr_scheduler_type="linear", warmup_steps=0.1, max_length=max_length, logging_steps=1,
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, seed=42,
        bf16=cuda, use_cpu=not cuda, dataloader_pin_memory=cuda, padding_free=spec.get("padding_free", False),
        **extra,
    )  # fmt: skip


def training_items(settings: Settings, tokenizer):
    from domainqa.data import load_task_data
    from domainqa.families.causal_lm import training_dataset
    from domainqa.prompts import PromptFormat

    items = load_task_data(os.environ.get("PUBMEDQA_PATH"))["train"][: settings.items]
    return training_dataset(items, PromptFormat("chat", tokenizer))


def unavailable_reason(settings: Settings, spec: dict) -> str | None:
    if spec.get("needs_cuda") and not settings.device.startswith("cuda"):
        return "needs CUDA"
    if spec.get("liger"):
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            return "liger-kernel is not installed"
    return None


def train_variant(name: str, settings: Settings, tokenizer, dataset, workdir: str) -> dict:
    """Train one variant for its warm-up and timed steps; its throughput, FLOP rate and loss."""
    from domainqa.families.causal_lm import build_peft_config

    spec = VARIANTS[name]
    if reason := unavailable_reason(settings, spec):
        return {"variant": name, "status": f"skipped: {reason}"}
    dtype = torch.bfloat16 if spec.get("dtype") == "bfloat16" else torch.float32
    model = build_model(settings, dtype, spec.get("attn", "sdpa"))
    args = training_args(settings, spec, workdir)
    trainer_ref: list = []
    timing = timing_callback(settings, trainer_ref)
    peft = build_peft_config("lora", "llama", lora_r=4, lora_alpha=256, lora_target_modules=["q_proj", "v_proj"])
    trainer = counting_trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                       peft_config=peft, callbacks=[timing])  # fmt: skip
    trainer_ref.append(trainer)
    if settings.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return measured(name, spec, trainer, timing, settings)


def measured(name: str, spec: dict, trainer, timing, settings: Settings) -> dict:
    if timing.start is None or timing.end is None:
        return {"variant": name, "status": "failed: no timed step finished"}
    counts = dict(zip(STATS, (timing.end_stats - timing.start_stats).tolist(), strict=True))
    seconds = timing.end - timing.start
    shape = model_shape(trainer.model)
    flops = step_flops(shape, counts["real_tokens"], counts["sum_squares"], counts["answer_positions"])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    peak = torch.cuda.max_memory_allocated() / 2**30 if settings.device.startswith("cuda") else None
    return {
        "variant": name, "status": "ok", "micro_batch": trainer.args.per_device_train_batch_size,
        "accumulation": trainer.args.gradient_accumulation_steps, "timed_steps": timing.steps,
        "seconds": seconds, "sequences_per_s": counts["sequences"] / seconds,
        "real_tokens_per_s": counts["real_tokens"] / seconds,
        "padding_share": 1 - counts["real_tokens"] / counts["padded_tokens"], "flops_per_s": flops / seconds,
        "counts": counts, "frozen_parameters": shape.frozen, "lora_parameters": shape.trainable,
        "last_loss": losses[-1] if losses else None, "peak_gib": peak,
    }  # fmt: skip


def run_training(settings: Settings, names: list[str], workdir: str, on_row=None) -> dict:
    """Every variant in this process, the baseline first, so that the ratios share one machine state.
    `on_row(result)` is called after each variant, so a run stopped by its time cap keeps what it measured."""
    tokenizer = load_tokenizer()
    dataset = training_items(settings, tokenizer)
    peak = matmul_rate(settings.device, settings.tiny)
    result = {"settings": asdict(settings), "matmul": peak, "variants": [], "device_name": device_name(settings)}
    for name in names:
        try:
            row = train_variant(name, settings, tokenizer, dataset, workdir)
        except Exception as error:  # noqa: BLE001 - one variant's failure must not lose the others' figures
            row = {"variant": name, "status": f"failed: {type(error).__name__}: {str(error)[:300]}"}
        if row["status"] == "ok":
            row["mfu"] = row["flops_per_s"] / peak["flops_per_s"]
        result["variants"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if on_row:
            on_row(result)
        if settings.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return result


def device_name(settings: Settings) -> str:
    if settings.device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} thread(s)"


def training_table(result: dict) -> str:
    peak = result["matmul"]
    rows = result["variants"]
    base = next((r for r in rows if r["status"] == "ok" and r["variant"] == BASELINE), None)
    lines = [
        f"Training: LoRA r4 q/v on SmolLM2-135M, chat format, {result['settings']['items']} training items, "
        f"{result['device_name']}. Peak: {peak['flops_per_s'] / 1e12:.3g} TFLOP/s "
        f"({peak['dtype']} {peak['size']}^3 matmul loop).",
        "",
        "| variant | status | micro x accum | sequences/s | real tokens/s | vs baseline | padding | TFLOP/s | MFU "
        "| peak GiB | last loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['variant']} | {r['status']} |  |  |  |  |  |  |  |  |  |")
            continue
        ratio = f"{r['sequences_per_s'] / base['sequences_per_s']:.2f}x" if base else "n/a"
        peak_gib = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else ""
        loss = f"{r['last_loss']:.4f}" if r["last_loss"] is not None else ""
        lines.append(
            f"| {r['variant']} | ok | {r['micro_batch']} x {r['accumulation']} | {r['sequences_per_s']:.1f} "
            f"| {r['real_tokens_per_s']:.0f} | {ratio} | {r['padding_share']:.1%} | {r['flops_per_s'] / 1e12:.3g} "
            f"| {r['mfu']:.1%} | {peak_gib} | {loss} |"
        )
    lines += ["", WHY_LOW_MFU]
    return "\n".join(lines) + "\n"


WHY_LOW_MFU = (
    "MFU counts 4N per token for the frozen weights (6N for LoRA's), causal attention and the head at answer "
    "positions only. A 135M model stays far below the ~40% of a 1.6B one: its 576-wide matrices are too thin to "
    "fill the tensor cores, and element-wise work and thousands of kernel launches per step take most of the time."
)


# ---------------------------------------------------------------------------------------------- scoring


def timed_items(run, items: list, batch_size: int, budget_s: float, device: str) -> dict:
    """Items per second of `run` over `items`, after one warm-up batch; stops at the first batch boundary past
    `budget_s`, so a slow mode is measured on fewer items instead of overrunning its step's time cap."""
    list(run(items[:batch_size]))  # warm-up: kernel selection, allocator
    synchronize(device)
    done, start = 0, time.perf_counter()
    for done, _ in enumerate(run(items), start=1):
        if done % batch_size == 0 and time.perf_counter() - start > budget_s:
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"items": done, "seconds": seconds, "items_per_s": done / seconds}


def scoring_model(settings: Settings, adapter: str | None, dtype: str):
    from domainqa.families.causal_lm import load_for_inference

    if settings.model and not settings.tiny:
        model, tokenizer = load_for_inference(settings.model, adapter, dtype)
    else:
        model = build_model(settings, getattr(torch, dtype), "sdpa").eval()
        tokenizer = load_tokenizer()
    return model.to(settings.device), tokenizer


def run_scoring(settings: Settings, adapter: str | None, batch_size: int, budget_s: float, on_row=None) -> dict:
    """Items per second of label scoring and of the paper's beam search, with float32 weights (as infer.py
    loads the recipes' models) and with bf16 weights."""
    from domainqa import inference
    from domainqa.data import load_task_data
    from domainqa.prompts import PromptFormat

    items = load_task_data(os.environ.get("PUBMEDQA_PATH"))["test"][: settings.items]
    result = {"settings": asdict(settings), "batch_size": batch_size, "adapter": adapter, "modes": [],
              "device_name": device_name(settings)}  # fmt: skip
    dtypes = ["float32"] if settings.device == "cpu" else ["float32", "bfloat16"]
    for dtype in dtypes:
        model, tokenizer = scoring_model(settings, adapter, dtype)
        fmt = PromptFormat("chat", tokenizer)
        modes = {
            "label scoring (shared context cache)": partial(
                inference.score_labels, model, tokenizer, fmt, batch_size=batch_size),
            "beam search (5 beams, repetition penalty 2.0, 32 new tokens)": partial(
                inference.generate_answers, model, tokenizer, fmt, batch_size=batch_size, max_new_tokens=32),
        }  # fmt: skip
        for name, run in modes.items():
            row = {"mode": name, "dtype": dtype, **timed_items(run, items, batch_size, budget_s, settings.device)}
            result["modes"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if on_row:
                on_row(result)
    return result


def scoring_table(result: dict) -> str:
    model = result["settings"]["model"] or "random weights"
    lines = [
        f"Scoring: SmolLM2-135M ({model}{', adapter ' + result['adapter'] if result['adapter'] else ''}), "
        f"paper-split test items, batch {result['batch_size']}, {result['device_name']}.",
        "",
        "| mode | weights | items | seconds | items/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['mode']} | {r['dtype']} | {r['items']} | {r['seconds']:.1f} | {r['items_per_s']:.1f} |"
        for r in result["modes"]
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- checks


def check_run(output_dir: str, model: str) -> dict:
    """Did a short train.py run learn (mean loss of the last two logged steps below the first two) and save an
    adapter that reloads and changes the model's output?"""
    from domainqa.families.causal_lm import load_for_inference

    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    first, last = sum(losses[:2]) / len(losses[:2]), sum(losses[-2:]) / len(losses[-2:])
    tuned, tokenizer = load_for_inference(model, output_dir)
    base, _ = load_for_inference(model)
    ids = tokenizer("Is the answer yes, no or maybe?", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        change = (tuned(input_ids=ids).logits - base(input_ids=ids).logits).abs().max().item()
    return {"first_loss": first, "last_loss": last, "loss_falls": last < first, "steps": len(losses),
            "adapter_changes_logits": change > 0 and math.isfinite(change), "max_logit_change": change}  # fmt: skip


# ---------------------------------------------------------------------------------------------- CLI


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda or cpu; default $DEVICE, else cuda when present.")
    parser.add_argument("--tiny", action="store_true", help="Shrunk model, few items (also TINY=1).")
    parser.add_argument("--model", default=None, help="Model folder or embedded:...; default random weights.")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--warmup_steps", type=int, default=None)
    parser.add_argument("--timed_steps", type=int, default=None)
    parser.add_argument("--seconds_per_variant", type=float, default=12.0)
    parser.add_argument("--out", default="outputs/bench_gpu", help="Writes OUT.json and OUT.md.")


def write_result(out: str, result: dict, table: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=2))
    Path(f"{out}.md").write_text(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    common_arguments(train)
    train.add_argument("--variants", nargs="+", default=["all"], help="Variant names or 'all'.")
    score = commands.add_parser("score")
    common_arguments(score)
    score.add_argument("--adapter", default=None)
    score.add_argument("--batch_size", type=int, default=32)
    score.add_argument("--seconds_per_mode", type=float, default=15.0, help="Stop a mode after this (batch end).")
    check = commands.add_parser("check-run")
    check.add_argument("output_dir")
    check.add_argument("--model", required=True)
    init = commands.add_parser("init-model")
    init.add_argument("folder")
    init.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "init-model":
        return init_model(args.folder, args.tiny or os.environ.get("TINY") == "1")
    if args.command == "check-run":
        result = check_run(args.output_dir, args.model)
        print(json.dumps(result))
        sys.exit(0 if result["loss_falls"] and result["adapter_changes_logits"] else 1)
    settings = settings_from(args)
    if args.command == "train":
        names = list(VARIANTS) if args.variants == ["all"] else args.variants
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
        run_training(settings, names, f"{args.out}_run", lambda r: write_result(args.out, r, training_table(r)))
    else:
        if args.items is None:  # scoring reads the test items: all 500, or 8 when tiny
            settings.items = 8 if settings.tiny else 500
        batch = 4 if settings.tiny else args.batch_size
        run_scoring(settings, args.adapter, batch, args.seconds_per_mode,
                    lambda r: write_result(args.out, r, scoring_table(r)))  # fmt: skip


if __name__ == "__main__":
    main()
