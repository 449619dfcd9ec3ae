"""A sweep's points as jobs of a cluster, through submitit: one SLURM job array per set of resources, or with
`--cluster local` one process per point on this machine (how the tests run real jobs).

Each job runs one point as `python sweep.py SWEEP --point NAME` does, in the shared output folder; nothing here
schedules anything. What happens to a job is the scheduler's and submitit's:

- preempted, or near its time limit: SLURM signals the job, submitit checkpoints it (`PointJob` is
  Checkpointable; its checkpoint is the job itself, since a point's progress is on disk) and requeues it, and the
  requeued job resumes the point from its run folder (`max_num_timeout` bounds the requeues after a time-out);
- failed or killed: the next `--submit` submits the points still unfinished, and a point resumes where it stopped;
- finished: never submitted again, and a job that finds its point finished skips it;
- the same point in two jobs (a resubmission while an earlier job still runs): the point's lock lets one run it,
  the other ends at once with the point `busy`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import submitit

from domainqa.config import setup_logging
from domainqa.run_folder import METRICS

from .plan import Point, Resources, SweepArguments, SweepError
from .runner import PointInUseError, point_holder, report, run_sweep, where_this_runs

logger = logging.getLogger(__name__)

JOBS_DIR = "_jobs"  # beside the point folders: submitit's pickles and each job's stdout and stderr, by job id
SUBMISSIONS = "submissions.jsonl"  # one line per submitted point: when, which job, what it asked for
REPO = Path(__file__).resolve().parents[1]  # the jobs import sweeps, train, infer and evaluate from here


class PointJob(submitit.helpers.Checkpointable):
    """One point of a sweep, as a job: `sweep.py SWEEP --point NAME` in the directory it was submitted from."""

    def __init__(self, args: SweepArguments, point: str, workdir: str) -> None:
        self.args = dataclasses.replace(args, submit=False, wait=False, only=None, point=point)
        self.point = point
        self.workdir = workdir

    def __call__(self) -> dict:
        os.chdir(self.workdir)  # recipes and data are named relative to it, as on the submitting machine
        setup_logging()
        try:
            status = run_sweep(self.args)["status"]
        except PointInUseError as e:  # another job has it: not this job's failure, and not to be run twice
            logger.info("%s", e)
            status = f"busy: {e}"
        return {"point": self.point, "status": status, "ran_on": where_this_runs()}


def executor_parameters(args: SweepArguments, resources: Resources) -> dict[str, Any]:
    """submitit's parameters for the jobs of points with these resources (slurm_* reach SLURM only)."""
    generic = {
        "name": f"sweep-{args.name}",
        "nodes": 1,
        "tasks_per_node": 1,  # one process per point; its scripts start their own where the launcher says so
        "cpus_per_task": resources.cpus_per_task,
        "mem_gb": resources.mem_gb,
        "timeout_min": resources.timeout_min,
    }
    if resources.gpus_per_node:  # none asked for is no GPU line in the job script
        generic["gpus_per_node"] = resources.gpus_per_node
    slurm = {
        "slurm_partition": resources.slurm_partition,
        "slurm_account": resources.slurm_account,
        "slurm_qos": resources.slurm_qos,
        "slurm_constraint": resources.slurm_constraint,
        "slurm_array_parallelism": resources.array_parallelism,
    }
    return {**generic, **{key: value for key, value in slurm.items() if value is not None}}


def _executor(args: SweepArguments, resources: Resources, folder: Path) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(
        folder=folder / "%j",
        cluster=args.cluster,
        slurm_max_num_timeout=resources.max_num_timeout,
        local_max_num_timeout=resources.max_num_timeout,
    )
    executor.update_parameters(**executor_parameters(args, resources))
    return executor


def _by_resources(points: list[Point]) -> dict[Resources, list[Point]]:
    """Points that ask for the same resources share a job array, in the sweep's order."""
    groups: dict[Resources, list[Point]] = {}
    for point in points:
        groups.setdefault(point.resources, []).append(point)
    return groups


def _to_submit(points: list[Point], sweep_dir: Path) -> list[Point]:
    """The points without their metrics, less those a job runs now (a new job would only find them busy)."""
    todo = []
    for point in points:
        point_dir = sweep_dir / point.name
        if (point_dir / METRICS).is_file():
            continue
        holder = point_holder(point_dir)
        if holder:
            logger.info("Point %s is running on %s: not submitted again", point.name, holder)
            continue
        todo.append(point)
    return todo


def _submit(args: SweepArguments, points: list[Point], jobs_dir: Path) -> list[tuple[Point, submitit.Job]]:
    submitted = []
    # The job's Python finds the repository's modules wherever the scheduler starts it (SLURM passes the
    # environment of sbatch on; a local job inherits it).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    with submitit.helpers.environment_variables(PYTHONPATH=path):
        for resources, group in _by_resources(points).items():
            executor = _executor(args, resources, jobs_dir)
            jobs = executor.submit_array([PointJob(args, p.name, os.getcwd()) for p in group])
            submitted += list(zip(group, jobs, strict=True))
            _record(jobs_dir, group, jobs, args.cluster, resources)
    return submitted


def _record(jobs_dir: Path, points: list[Point], jobs: list, cluster: str, resources: Resources) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(jobs_dir / SUBMISSIONS, "a", encoding="utf-8") as out:
        for point, job in zip(points, jobs, strict=True):
            line = {"submitted": when, "job": job.job_id, "point": point.name, "cluster": cluster}
            out.write(json.dumps({**line, "resources": dataclasses.asdict(resources)}) + "\n")
            logger.info("Point %s: job %s (%s)", point.name, job.job_id, cluster)


def _outcome(job: submitit.Job) -> str:
    """What the job did with its point: ran, skipped, busy: ..., or failed: the reason and the job's log."""
    if isinstance(job, submitit.LocalJob):
        job._results_timeout_s = 1  # a local job's result is on this disk; 15 s are for a shared one's caches
    try:
        return job.result()["status"]
    except submitit.core.utils.FailedJobError as e:  # the point raised: the last line of its traceback
        lines = [line for line in str(e).split("----------------------")[1].splitlines() if line.strip()]
        return f"failed: {lines[-1] if lines else 'see the log'} (log: {job.paths.stderr})"
    except submitit.core.utils.UncompletedJobError:  # killed, out of memory or out of requeues: no result
        return f"failed: the job ended without a result (killed?); log: {job.paths.stderr}"


def submit_sweep(args: SweepArguments, points: list[Point], chosen: list[Point], sweep_dir: Path) -> dict:
    """Submit the chosen points that are unfinished and not running; with --wait, wait for their jobs and
    report. Returns each submitted point's job id (and with --wait its outcome and the report)."""
    if args.cluster == "slurm" and not shutil.which("sbatch"):
        raise SweepError("--cluster slurm: no sbatch here; submit from a SLURM login node, or --cluster local")
    jobs_dir = sweep_dir / JOBS_DIR
    jobs_dir.mkdir(parents=True, exist_ok=True)
    todo = _to_submit(chosen, sweep_dir)
    submitted = _submit(args, todo, jobs_dir) if todo else []
    logger.info("Submitted %d of %d points (%s); logs in %s", len(todo), len(chosen), args.cluster, jobs_dir)
    if args.test_finalist:
        logger.info("test_finalist: once every point has finished, `python sweep.py` (it skips them) scores it")
    result: dict[str, Any] = {"jobs": {p.name: job.job_id for p, job in submitted}}
    if not args.wait:
        print(f"Submitted {len(submitted)} point(s); `python sweep.py ... --report` shows what has finished")
        return result
    result["status"] = {point.name: _outcome(job) for point, job in submitted}
    result.update(report(args, points, sweep_dir))
    failed = {name: state for name, state in result["status"].items() if state.startswith("failed")}
    for name, state in failed.items():
        logger.error("Point %s %s", name, state)
    if failed:
        raise SweepError(f"point(s) failed: {', '.join(failed)}; --submit again reruns them, from where they stopped")
    return result
