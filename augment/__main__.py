"""`python -m augment RECIPE.yaml [--flag value ...]`: one augmentation run."""

from __future__ import annotations

import asyncio
import logging
import sys

from domainqa.config import EXIT_USAGE, parse_args, run_cli, setup_logging

from .arguments import AugmentArguments
from .batch import BatchPending
from .runner import execute

EXIT_BAD_INPUT = EXIT_USAGE  # a bad recipe, flag, value or set-up (AugmentError), as every command reports it
EXIT_BATCH_PENDING = 3
PROG = "augment"


def main(argv: list[str] | None = None) -> int:
    """One run; returns 0, or EXIT_BATCH_PENDING while a Batch API job is still running. Bad input raises
    AugmentError (a UsageError), which `run_cli` reports in one line."""
    (args,) = parse_args(AugmentArguments, args=argv)
    setup_logging(args.log_level.upper())
    for noisy in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # request logs may carry headers
    try:
        summary = asyncio.run(execute(args))
    except BatchPending as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BATCH_PENDING
    print(f"{PROG}: {summary['accepted']} examples in {args.output_dir}/data.jsonl ({summary['rejected']} rejected)")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
