"""Cost of grammar-constrained decoding in the local (`transformers`) augment backend.

Same process, same model, same prompts, same batch, same seed: the backend's own generate call with the
answer schema (xgrammar logits processor) and without it, alternated `--repeats` times so that load from
other processes on the machine hits both alike. Reported per setting: wall time, decoding steps (the
longest answer in the batch), answer tokens (padding excluded), tokens/s and seconds per step. The cost
ratio is constrained over free seconds per step, since a free answer may stop early (or ramble) where
the constrained one does not, and tokens/s then compares different amounts of work.

Usage: python -m benchmarks.bench_augment_local [--batch_sizes 8] [--max_tokens 128] [--repeats 2]
       [--kind rewrite] [--pqal PATH] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import torch

from augment.arguments import AugmentArguments
from augment.backends import TransformersBackend, TransformersSettings
from augment.requests import Request
from augment.runner import make_request
from domainqa.data import PUBMEDQA_ENV, read_examples, split_pubmedqa

REPO = Path(__file__).resolve().parents[1]


def requests_for(args: AugmentArguments, pqal: str, kind: str, count: int) -> list[Request]:
    train = split_pubmedqa(read_examples(pqal), "paper")["train"][:count]
    return [make_request(args, kind, item, 0, {"kind": kind}) for item in train]


def measure(backend: TransformersBackend, batch: list[Request]) -> dict:
    started = time.perf_counter()
    answers = backend._generate(batch)
    wall = time.perf_counter() - started
    tokens = sum(a.tokens_out for a in answers)
    steps = max(a.tokens_out for a in answers)
    parsed = sum(_is_json(a.text) for a in answers)
    return {"wall_s": wall, "steps": steps, "tokens": tokens, "json_objects": parsed}


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def summarize(runs: list[dict]) -> dict:
    wall = sum(r["wall_s"] for r in runs)
    steps = sum(r["steps"] for r in runs)
    tokens = sum(r["tokens"] for r in runs)
    return {
        "wall_s": round(wall, 2),
        "steps": steps,
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "s_per_step": round(wall / steps, 4),
        "json_objects": sum(r["json_objects"] for r in runs),
        "answers": sum(r["answers"] for r in runs),
    }


def bench(backend: TransformersBackend, constrained: list[Request], repeats: int) -> dict:
    free = [Request(r.messages, r.params, r.backend, r.model, r.meta, None) for r in constrained]
    started = time.perf_counter()
    backend.grammars.grammar(constrained[0].schema)  # compiled once per run: a one-time cost, reported apart
    compile_s = time.perf_counter() - started
    results: dict[str, list[dict]] = {"constrained": [], "free": []}
    for _ in range(repeats):
        for name, batch in (("free", free), ("constrained", constrained)):
            run = measure(backend, batch)
            results[name].append({**run, "answers": len(batch)})
            print(name, json.dumps(run), flush=True)
    out: dict = {"grammar_compile_s": round(compile_s, 2)}
    out.update({name: summarize(runs) for name, runs in results.items()})
    out["cost_ratio_per_step"] = round(out["constrained"]["s_per_step"] / out["free"]["s_per_step"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_pqal = os.environ.get(PUBMEDQA_ENV)
    parser.add_argument("--pqal", default=default_pqal)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kind", default="rewrite", choices=("rewrite", "new"))
    parser.add_argument("--output", default="outputs/bench_augment_local.json")
    cli = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = AugmentArguments(backend="transformers", max_tokens=cli.max_tokens, json_mode="on")
    backend = TransformersBackend(TransformersSettings.from_arguments(args))
    started = time.perf_counter()
    asyncio.run(backend.preflight())
    report: dict = {"model": args.model, "threads": torch.get_num_threads(), "max_tokens": cli.max_tokens}
    report["load_s"] = round(time.perf_counter() - started, 2)
    for size in cli.batch_sizes:
        batch = requests_for(args, cli.pqal, cli.kind, size)
        report[f"batch_{size}"] = bench(backend, batch, cli.repeats)
    Path(cli.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cli.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
