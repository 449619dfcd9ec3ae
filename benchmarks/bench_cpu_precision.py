"""Label scoring on CPU under several numeric precisions, in one process, against float32 eager: speed, how many
labels stay the same, how far the label log-probabilities move, and accuracy / macro-F1 with 95% intervals.

    OMP_NUM_THREADS=1 PUBMEDQA_PATH=/path/to/ori_pqal.json python -m benchmarks.bench_cpu_precision \
        [--limit 500] [--variants fp32,bf16,autocast,bf16-weights,compile] [--output docs/cpu_precision.json] \
        [--parts outputs/cpu_precision_parts] [--time_budget SECONDS] [--summarize_only] [--adapter_path RUN]

Variants, run in this order on the embedded SmolLM2-135M-Instruct, chat prompt, paper-split test items in file
order, batch size 1 (what infer.py uses on a CPU):

- `fp32`: float32 eager, the baseline.
- `bf16`: the whole model in bfloat16 (`model.to(torch.bfloat16)`).
- `autocast`: float32 weights under `torch.autocast("cpu", dtype=torch.bfloat16)`: bfloat16 matrix multiplies,
  float32 residual stream.
- `bf16-weights`: linear weights in bfloat16, float32 embeddings / RMSNorm / attention / residual stream /
  vocabulary head (`domainqa.precision.bf16_linear_weights`).
- `compile`: `torch.compile(dynamic=True)` of the best bfloat16 variant above (the fastest that keeps >= 97% of
  the float32 labels, else the one that keeps most); `compile:NAME` compiles a named one. Compile time (two
  validation items scored before timing) is reported apart.

Each variant scores one validation item before timing starts. One torch thread, so that process CPU time is the
work done even on a shared machine; wall time is reported too. Every item's scores are appended to
`<parts>/<variant>.jsonl` as it is scored: a rerun resumes where a variant stopped (`--time_budget` stops a
variant after that many seconds, to be resumed later). The same process measures bfloat16 and float32 linear
layers at the model's shapes, so each variant's throughput is also given in GFLOP/s and as a fraction of that rate.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from domainqa import inference  # noqa: E402
from domainqa.data import load_task_data  # noqa: E402
from domainqa.metrics import bootstrap_intervals, official_scores  # noqa: E402
from domainqa.precision import bf16_autocast, bf16_linear_weights, cpu_flags, cpu_supports_bf16  # noqa: E402
from domainqa.prompts import PromptFormat  # noqa: E402

try:  # where the loaders live has moved between versions of the package
    from domainqa.modeling import EMBEDDED_MODEL, load_for_inference  # type: ignore[attr-defined]
except ImportError:
    from domainqa.embedded import EMBEDDED_MODEL
    from domainqa.families.causal_lm import load_for_inference

ALL_VARIANTS = ("fp32", "bf16", "autocast", "bf16-weights", "compile")
BF16_VARIANTS = ("bf16", "autocast", "bf16-weights")
DESCRIPTIONS = {
    "fp32": "float32 eager (baseline)",
    "bf16": "bfloat16 eager, whole model",
    "autocast": "bf16 autocast on float32 weights",
    "bf16-weights": "bf16 linear weights, fp32 norms / attention / lm_head",
}
AGREEMENT_TARGET = 0.97
# SmolLM2-135M's linear layers per decoder layer: (in, out) of q, k, v, o, gate, up, down.
LAYER_SHAPES = ((576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576))


def linear_rate(dtype: torch.dtype, rows: int, d_in: int, d_out: int, seconds: float = 0.6, op=F.linear) -> float:
    """GFLOP/s of `F.linear` (what nn.Linear runs; or `op(x, w)` such as torch.matmul on a (d_in, d_out) weight)
    on rows x d_in inputs, d_out outputs, one thread."""
    x = torch.randn(rows, d_in, dtype=dtype)
    w = torch.randn(d_out, d_in, dtype=dtype) if op is F.linear else torch.randn(d_in, d_out, dtype=dtype)
    op(x, w)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        op(x, w)
        count += 1
    return 2 * rows * d_in * d_out * count / (time.perf_counter() - start) / 1e9


def matmul_rates(rows: int = 512) -> dict:
    """Linear-layer GFLOP/s per shape and dtype, and the FLOP-weighted rate over one decoder layer's shapes
    (total FLOPs / total time), which is what the model's linear layers can reach at most."""
    shapes = sorted(set(LAYER_SHAPES))
    out: dict = {"rows": rows, "per_shape": {}, "model_shapes": {}}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        rates = {shape: linear_rate(dtype, rows, *shape) for shape in shapes}
        out["per_shape"][name] = {f"{rows}x{i}x{o}": round(r, 1) for (i, o), r in rates.items()}
        flops = [2 * rows * i * o for i, o in LAYER_SHAPES]
        seconds = sum(f / (rates[shape] * 1e9) for f, shape in zip(flops, LAYER_SHAPES, strict=True))
        out["model_shapes"][name] = sum(flops) / seconds / 1e9
        matmul = {shape: linear_rate(dtype, rows, *shape, seconds=0.3, op=torch.matmul) for shape in shapes}
        out["per_shape"][f"{name} torch.matmul"] = {f"{rows}x{i}x{o}": round(r, 1) for (i, o), r in matmul.items()}
    return out


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def linear_params(model: torch.nn.Module) -> int:
    """Weights that each prompt token multiplies: the decoder's linear layers (the vocabulary head runs at one
    position per item, so it is left out)."""
    return sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")
    )


def build_variant(
    name: str, base: torch.nn.Module
) -> tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]:
    if name == "fp32":
        return base, contextlib.nullcontext
    if name == "bf16":
        return copy.deepcopy(base).to(torch.bfloat16), contextlib.nullcontext
    if name == "autocast":
        return base, bf16_autocast
    if name == "bf16-weights":
        return bf16_linear_weights(copy.deepcopy(base)), contextlib.nullcontext
    raise ValueError(f"unknown variant {name!r}")


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def score_variant(name, model, context, tokenizer, fmt, items, warmup, path: Path, time_budget: float) -> dict:
    """Score the items not yet in `path` (one at a time, each appended as it is done); warm-up first."""
    meta_path = path.with_suffix(".meta.json")
    done = {r["id"] for r in read_rows(path)}
    todo = [e for e in items if e["id"] not in done]
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not todo:
        return meta
    with context():
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in inference.score_labels(model, tokenizer, fmt, warmup, 1):
            pass
        warm = {"warmup_seconds": time.perf_counter() - start, "warmup_cpu_seconds": time.process_time() - start_cpu}
        meta.setdefault("warmups", []).append(warm)
        meta.setdefault("load_average", []).append({"start": os.getloadavg()})
        meta_path.write_text(json.dumps(meta, indent=2))  # kept even if the run is cut short
        began = time.perf_counter()
        with path.open("a") as sink:
            rows = inference.score_labels(model, tokenizer, fmt, todo, 1)
            for example in todo:
                t, c = time.perf_counter(), time.process_time()
                row = next(rows)
                row.update(seconds=time.perf_counter() - t, cpu_seconds=time.process_time() - c)
                row["tokens"] = len(inference._label_token_ids(tokenizer, fmt, example)[0])
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                if time_budget and time.perf_counter() - began > time_budget:
                    print(f"{name}: stopped after the {time_budget:.0f} s budget; rerun to resume", file=sys.stderr)
                    break
        meta["load_average"][-1]["end"] = os.getloadavg()
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def margin(row: dict) -> float:
    """How far the best label's log-probability is ahead of the second's."""
    best, second = sorted(row["label_logprobs"].values(), reverse=True)[:2]
    return best - second


def summarize(name: str, rows: list[dict], reference: dict[str, dict], truth: dict[str, str], meta: dict) -> dict:
    ids = [r["id"] for r in rows]
    predicted = [r["prediction"] for r in rows]
    gold = [truth[i] for i in ids]
    same = [reference[i]["prediction"] == r["prediction"] for i, r in zip(ids, rows, strict=True) if i in reference]
    diffs = [
        abs(reference[r["id"]]["label_logprobs"][label] - value)
        for r in rows
        if r["id"] in reference
        for label, value in r["label_logprobs"].items()
    ]
    flipped = [
        reference[r["id"]] for r in rows if r["id"] in reference and reference[r["id"]]["prediction"] != r["prediction"]
    ]
    seconds, cpu = sum(r["seconds"] for r in rows), sum(r["cpu_seconds"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    return {
        "variant": name,
        "items": len(rows),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tokens": tokens,
        "tokens_per_cpu_second": tokens / cpu,
        "agreement_with_fp32": sum(same) / len(same) if same else None,
        "compared_items": len(same),
        "max_abs_logprob_diff": max(diffs) if diffs else None,
        "median_abs_logprob_diff": statistics.median(diffs) if diffs else None,
        "flipped_items_fp32_margin": [round(margin(r), 4) for r in flipped],  # how close float32's call was
        **official_scores(gold, predicted),
        "intervals_95": bootstrap_intervals(gold, predicted),
        "warmup_seconds": [w["warmup_seconds"] for w in meta.get("warmups", [])],
        "load_average": meta.get("load_average"),
    }


def best_bf16(summaries: dict[str, dict]) -> str:
    """The fastest bfloat16 variant keeping >= 97% of float32's labels, else the one keeping most."""
    done = [s for n, s in summaries.items() if n in BF16_VARIANTS and s["agreement_with_fp32"] is not None]
    if not done:
        raise SystemExit("compile needs a scored bfloat16 variant first (or name one: compile:bf16)")
    good = [s for s in done if s["agreement_with_fp32"] >= AGREEMENT_TARGET]
    pick = (
        max(good, key=lambda s: s["tokens_per_cpu_second"])
        if good
        else max(done, key=lambda s: s["agreement_with_fp32"])
    )
    return pick["variant"]


def markdown(result: dict) -> str:
    rate = result["matmul"]["model_shapes"]
    rows = [
        "| variant | items | CPU s | tokens/s | vs fp32 eager | GFLOP/s | of fp32 linear rate | of bf16 linear rate "
        "| agreement with fp32 | max abs log-prob diff | accuracy [95% CI] | macro-F1 [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = result["variants"][0]["tokens_per_cpu_second"]
    for s in result["variants"]:
        acc, f1 = s["intervals_95"]["accuracy"], s["intervals_95"]["macro_f1"]
        agree = "-" if s["variant"] == "fp32" else f"{s['agreement_with_fp32']:.3f} ({s['compared_items']})"
        diff = "-" if s["variant"] == "fp32" else f"{s['max_abs_logprob_diff']:.3f}"
        rows.append(
            f"| {s['label']} | {s['items']} | {s['cpu_seconds']:.0f} | {s['tokens_per_cpu_second']:.0f} "
            f"| {s['tokens_per_cpu_second'] / base:.2f}x | {s['gflops']:.1f} | {s['gflops'] / rate['float32']:.2f} "
            f"| {s['gflops'] / rate['bfloat16']:.2f} "
            f"| {agree} | {diff} | {s['accuracy']:.3f} [{acc[0]:.3f}, {acc[1]:.3f}] "
            f"| {s['macro_f1']:.3f} [{f1[0]:.3f}, {f1[1]:.3f}] |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=500, help="Score the first N paper-split test items.")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help="Comma-separated, run in this order.")
    parser.add_argument("--output", default="docs/cpu_precision.json")
    parser.add_argument("--adapter_path", default=None, help="A trained adapter on the embedded model (merged).")
    parser.add_argument("--parts", default="outputs/cpu_precision_parts", help="Per-item scores of each variant.")
    parser.add_argument("--time_budget", type=float, default=0, help="Stop a variant after this many seconds.")
    parser.add_argument("--summarize_only", action="store_true", help="Report the scores saved so far; score nothing.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    output = Path(args.output)
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    data = load_task_data(os.environ.get("PUBMEDQA_PATH"), "paper")
    items, warmup = data["test"][: args.limit], data["validation"][:2]
    truth = {e["id"]: e["final_decision"] for e in items}
    print(f"load average {os.getloadavg()}, bf16-capable CPU: {cpu_supports_bf16()}", file=sys.stderr)
    rates_before = matmul_rates()
    print(f"linear GFLOP/s at model shapes: {rates_before['model_shapes']}", file=sys.stderr)

    base, tokenizer = load_for_inference(EMBEDDED_MODEL, args.adapter_path, dtype="float32")
    fmt = PromptFormat("chat", tokenizer)
    flops_per_token = 2 * linear_params(base)
    summaries: dict[str, dict] = {}

    def summary(name: str) -> dict:
        rows = read_rows(parts / f"{name}.jsonl")
        meta_path = parts / f"{name}.meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        reference = {r["id"]: r for r in read_rows(parts / "fp32.jsonl")}
        s = summarize(name, [r for r in rows if r["id"] in truth], reference, truth, meta)
        s["gflops"] = flops_per_token * s["tokens_per_cpu_second"] / 1e9
        s.update({k: v for k, v in meta.items() if k in ("compiled", "compile_seconds", "compile_cpu_seconds")})
        return s

    for name in ("fp32", *(v for v in variants if v in BF16_VARIANTS)):  # the baseline first, always summarized
        if (parts / f"{name}.jsonl").is_file() or name in variants:
            if name in variants and not args.summarize_only:
                print(f"{name}: scoring", file=sys.stderr)
                model, context = build_variant(name, base)
                score_variant(name, model, context, tokenizer, fmt, items, warmup[:1], parts / f"{name}.jsonl",
                              args.time_budget)  # fmt: skip
                del model
            summaries[name] = {**summary(name), "label": DESCRIPTIONS[name]}
    for name in BF16_VARIANTS:  # variants scored earlier count for the choice of what to compile
        if name not in summaries and (parts / f"{name}.jsonl").is_file():
            summaries[name] = {**summary(name), "label": DESCRIPTIONS[name]}

    for spec in (v for v in variants if v.startswith("compile")):
        target = spec.partition(":")[2] or best_bf16(summaries)
        name = f"compile-{target}"
        meta_path = parts / f"{name}.meta.json"
        if not args.summarize_only:
            print(f"{name}: compiling and scoring", file=sys.stderr)
            model, context = build_variant(target, base)
            model = copy.deepcopy(model) if model is base else model
            model.compile(dynamic=True)
            score_variant(name, model, context, tokenizer, fmt, items, warmup, parts / f"{name}.jsonl",
                          args.time_budget)  # fmt: skip
            del model
            meta = json.loads(meta_path.read_text())
            first = meta["warmups"][0]
            meta.update(compiled=target, compile_seconds=first["warmup_seconds"],
                        compile_cpu_seconds=first["warmup_cpu_seconds"])  # fmt: skip
            meta_path.write_text(json.dumps(meta, indent=2))
        if (parts / f"{name}.jsonl").is_file():
            label = f"torch.compile(dynamic=True) of {DESCRIPTIONS[target]}"
            summaries[name] = {**summary(name), "label": label}

    rates_after = matmul_rates()
    result = {
        "model": "SmolLM2-135M-Instruct (embedded), chat prompt, label scoring, batch size 1",
        "adapter": args.adapter_path,
        "items": f"first {len(items)} paper-split test items",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_supports_bf16": cpu_supports_bf16(),
        "bf16_cpu_flags": sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flops_per_token": flops_per_token,
        "matmul": rates_before,
        "matmul_after": rates_after,
        "variants": [s for n, s in summaries.items() if n in variants or n == "fp32" or n.startswith("compile-")],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"linear-layer GFLOP/s at SmolLM2 shapes, 512 rows, one thread: before {rates_before['model_shapes']}, "
          f"after {rates_after['model_shapes']}\n")  # fmt: skip
    print(markdown(result))


if __name__ == "__main__":
    main()
