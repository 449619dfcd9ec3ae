"""`python -m augment RECIPE.yaml [--flag value ...]`: one augmentation run."""

from __future__ import annotations

import asyncio
import logging
import sys

from domainqa.config import UsageError, parse_args

from .arguments import AugmentArguments, AugmentError
from .batch import BatchPending
from .runner import execute

EXIT_BAD_INPUT = 2
EXIT_BATCH_PENDING = 3


def main(argv: list[str] | None = None) -> int:
    try:
        (args,) = parse_args(AugmentArguments, args=argv)
    except UsageError as e:  # a bad recipe, flag or value (AugmentError is one too)
        print(f"augment: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # request logs may carry headers
    try:
        summary = asyncio.run(execute(args))
    except AugmentError as e:
        print(f"augment: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BatchPending as e:
        print(f"augment: {e}", file=sys.stderr)
        return EXIT_BATCH_PENDING
    print(f"augment: {summary['accepted']} examples in {args.output_dir}/data.jsonl ({summary['rejected']} rejected)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
