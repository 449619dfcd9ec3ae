"""Run a sweep (a hyperparameter range or a set of training-data variants) through train.py -> infer.py ->
evaluate.py, point by point and resumably, and write the paper-style tables and figure.

    python sweep.py recipes/sweeps/smollm2-135m-peft.yaml                 # run (finished points are skipped)
    python sweep.py recipes/sweeps/smollm2-135m-peft.yaml --collect_only  # rebuild results/<name> only
    python sweep.py recipes/sweeps/smollm2-135m-peft.yaml --dry_run       # print the commands left to run

On a cluster (docs/scaling.md, "A grid on a cluster"), the output folder on a file system every node shares:

    python sweep.py SWEEP --list            # index, name and state of every point
    python sweep.py SWEEP --point 3         # one point only (index or name), as any scheduler's job runs it
    python sweep.py SWEEP --submit          # the unfinished points as SLURM job arrays, through submitit
    python sweep.py SWEEP --report          # tables and figure from the points finished so far; the missing ones

Each point goes to outputs/sweeps/<name>/<point>; the results (results.json, table.md, figure.png) to
results/<name>. The definition format is in sweeps/plan.py.
"""

from __future__ import annotations

from domainqa import config
from domainqa.config import run_cli, setup_logging
from sweeps.plan import SweepArguments
from sweeps.runner import run_sweep


def parse_args(args: list[str] | None = None) -> tuple[SweepArguments]:
    """The command line (default: this process's): a sweep definition and flags."""
    return config.parse_args(SweepArguments, args=args)


def main(sweep_args: SweepArguments) -> dict:
    """Run the sweep; returns its results (with each point's status)."""
    setup_logging()
    return run_sweep(sweep_args)


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
