"""Run a sweep (a hyperparameter range or a set of training-data variants) through train.py -> infer.py ->
evaluate.py, point by point and resumably, and write the paper-style tables and figure.

    python sweep.py recipes/sweeps/smollm2-135m-peft.yaml                 # run (finished points are skipped)
    python sweep.py recipes/sweeps/smollm2-135m-peft.yaml --collect_only  # rebuild results/<name> only
    python sweep.py recipes/sweeps/smollm2-135m-peft.yaml --dry_run       # print the commands left to run

Each point goes to outputs/sweeps/<name>/<point>; the results (results.json, table.md, figure.png) to
results/<name>. The definition format is in domainqa/sweep.py.
"""

from __future__ import annotations

import logging

from domainqa.config import parse_args, run_cli
from domainqa.sweep import SweepArguments, run_sweep


def main(args: list[str] | None = None) -> dict:
    (sweep_args,) = parse_args(SweepArguments, args=args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run_sweep(sweep_args)


if __name__ == "__main__":
    run_cli(main)
