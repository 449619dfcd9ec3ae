"""Augmentation throughput and rate-limit use against a local OpenAI-compatible server.

The server (tests/openai_server.py) answers every chat request after a fixed latency (200 ms). Compared:
- baseline: one request at a time with a 1 s pause between requests, as the original research code did
  (measured on a few items, then compared per request);
- augment with --max_concurrency 32;
- augment with a requests-per-minute limit: the share of the limit actually used, and no item lost.

Usage: python -m benchmarks.bench_augment [--pqal PATH] [--items 200] [--rpm 600] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from augment.arguments import AugmentArguments
from augment.runner import execute, make_request
from domainqa.config import setup_logging
from domainqa.data import PUBMEDQA_ENV, read_examples, split_pubmedqa
from tests.openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]

LATENCY = 0.2
PAUSE = 1.0


def baseline(server: FakeOpenAI, pqal: Path, items: int) -> float:
    """Seconds per request, one at a time with a 1 s pause, through the plain synchronous client."""
    args = AugmentArguments(dataset_path=str(pqal), base_url=server.base_url)
    client = OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    train = split_pubmedqa(read_examples(pqal), "paper")["train"][:items]
    started = time.monotonic()
    for example in train:
        request = make_request(args, "rewrite", example, 0, {})
        client.chat.completions.create(model=args.model, messages=request.messages, **request.params)
        time.sleep(PAUSE)
    return (time.monotonic() - started) / items


def augment_run(server: FakeOpenAI, pqal: Path, items: int, **flags) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as out:
        args = AugmentArguments(
            dataset_path=str(pqal), base_url=server.base_url, output_dir=out, max_sources=items, **flags
        )
        started = time.monotonic()
        summary = asyncio.run(execute(args))
        return summary, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pqal",
        default=os.environ.get(PUBMEDQA_ENV),
        help=f"PQA-L file (default ${PUBMEDQA_ENV}, which scripts/setup.sh sets)",
    )
    parser.add_argument("--items", type=int, default=200, help="items for the concurrent run (at most 450)")
    parser.add_argument("--baseline_items", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpm", type=float, default=600.0)
    parser.add_argument("--rpm_items", type=int, default=100)
    parser.add_argument("--output", default="outputs/bench_augment.json")
    opts = parser.parse_args()
    import logging

    setup_logging(logging.WARNING)
    pqal = Path(opts.pqal)
    results: dict = {"latency_s": LATENCY, "pause_s": PAUSE}
    with FakeOpenAI(latency=LATENCY) as server:
        os.environ["OPENAI_API_KEY"] = server.api_key
        per_request = baseline(server, pqal, opts.baseline_items)
        results["baseline"] = {"items": opts.baseline_items, "s_per_request": per_request, "req_per_s": 1 / per_request}

        summary, wall = augment_run(server, pqal, opts.items, max_concurrency=opts.concurrency)
        rate = summary["requests"] / wall
        results["concurrent"] = {
            "items": opts.items,
            "concurrency": opts.concurrency,
            "wall_s": wall,
            "req_per_s": rate,
            "speedup": rate * per_request,
            "accepted": summary["accepted"],
        }

        first = len(server.times)
        summary, wall = augment_run(
            server, pqal, opts.rpm_items, max_concurrency=opts.concurrency, requests_per_minute=opts.rpm
        )
        arrivals = server.times[first:]
        used = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60 / opts.rpm  # rate while the run sends
        results["rpm_limited"] = {
            "items": opts.rpm_items,
            "rpm_limit": opts.rpm,
            "wall_s": wall,
            "share_of_limit_while_sending": used,
            "share_of_limit_end_to_end": summary["requests"] / wall * 60 / opts.rpm,
            "accepted": summary["accepted"],
            "lost": opts.rpm_items - summary["accepted"],
        }
        window = 60 / opts.rpm * 10  # never more than 10 requests in any 10 intervals: the limit is kept
        results["rpm_limited"]["max_requests_in_10_intervals"] = max(
            sum(1 for t in arrivals if start <= t < start + window) for start in arrivals
        )

    b, c, r = results["baseline"], results["concurrent"], results["rpm_limited"]
    print("| setting | requests | wall time (s) | requests/s | vs baseline |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| sequential, 1 s pause (baseline) | {b['items']} | {b['s_per_request'] * b['items']:.1f} "
          f"| {b['req_per_s']:.2f} | 1x |")  # fmt: skip
    print(f"| augment, concurrency {c['concurrency']} | {c['items']} | {c['wall_s']:.1f} | {c['req_per_s']:.1f} "
          f"| {c['speedup']:.0f}x |")  # fmt: skip
    print(f"| augment, {r['rpm_limit']:.0f} requests/min limit | {r['items']} | {r['wall_s']:.1f} "
          f"| {r['items'] / r['wall_s']:.1f} | share of limit used: {r['share_of_limit_while_sending']:.1%} "
          f"while sending, {r['share_of_limit_end_to_end']:.1%} end to end; lost items: {r['lost']} |")  # fmt: skip
    Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {opts.output}")


if __name__ == "__main__":
    main()
