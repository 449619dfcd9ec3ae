"""Running a sweep: each unfinished point's steps (train -> infer -> evaluate), resumable point by point.

The scripts are called with their argument objects, in this process (`--launcher inprocess`) or each in a fresh
Python process (`--launcher subprocess`, the default). The fresh process is there for isolation, not for the
arguments: a training run leaves memory behind in the process that ran it (the CUDA caching allocator, the
allocator's arenas, modules the libraries keep), so a long sweep in one process grows point by point; a process
per script gives it all back and keeps each script's output in the point's log.

A point is held by one process from its first step to its last (`point_held`: an flock on the point folder's
`.point.lock`), so that two sweeps, or two jobs on two nodes sharing the output folder, never run it at once; the
second is refused with the name of the holder. `--point` runs one point as a scheduler's job does; `--list`,
`--report` and `--submit` (sweeps/cluster.py) are the other ways in.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from domainqa.io import atomic_write_json
from domainqa.run_folder import METRICS, TRAIN_RESULTS

from .plan import (
    SCRIPTS,
    TEST_METRICS,
    Point,
    Step,
    SweepArguments,
    SweepError,
    build_points,
    infer_step,
    point_steps,
    scoring_steps,
    select_point,
)
from .report import POINT_RECORD, collect, write_finalist

logger = logging.getLogger(__name__)

POINT_LOCK = ".point.lock"  # held by the process that runs the point, from its first step to its last
PR_SET_PDEATHSIG = 1  # prctl: the signal a process gets when its parent ends


class PointInUseError(SweepError):
    """Another process, on this machine or on another node, runs the point."""


def where_this_runs() -> str:
    """This process as a lock's holder and a point's record name it: host, pid and the scheduler's job."""
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env:
        job = f"{env.get('SLURM_ARRAY_JOB_ID')}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")
    return f"{socket.gethostname()} pid {os.getpid()}" + (f" job {job}" if job else "")


def _try_lock(fd: int, attempts: int = 5) -> bool:
    """An exclusive flock, without waiting for a holder; a few tries, because --list and --report test the lock
    for an instant and must not make a starting job give its point up."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < attempts - 1:
                time.sleep(0.2)
        except OSError as e:  # a file system without locks (e.g. Lustre without -o flock): no guarantee to give
            raise SweepError(f"the file system refuses the point's lock ({e.strerror}); see docs/scaling.md") from e
    return False


@contextmanager
def point_held(point_dir: Path) -> Iterator[None]:
    """Hold the point until the block ends or the process dies (the kernel, or the NFS server for a node that
    died, drops an flock with its holder); raises PointInUseError naming the holder when another has it."""
    point_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(point_dir / POINT_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
            raise PointInUseError(f"point {point_dir.name} is running in {holder}; wait for it, or end that process")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{where_this_runs()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def point_holder(point_dir: Path) -> str | None:
    """Who runs the point now (None: nobody); a shared lock for an instant, nothing written."""
    try:
        fd = os.open(point_dir / POINT_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(fd)


def run_step(step: Step) -> Any:
    """The step's script, called with its argument objects; returns what its main returns."""
    return SCRIPTS[step.script].main(*step.arguments())


def _step_process_setup(parent: int) -> None:
    """In a step's process, first: end with the sweep's process (a job killed with kill -9 leaves no orphan that
    holds the run folder), and leave a submitit job's preemption signal to the job's own process, which
    checkpoints and requeues the job, then stops this one."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the sweep's process ended before the line above took effect
        os._exit(1)
    if "SUBMITIT_EXECUTOR" in os.environ:
        preemption = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
        if preemption is not None:
            signal.signal(preemption, signal.SIG_IGN)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the step's process at once: the sweep's process is leaving (Ctrl-C, or a job being requeued), and the
    pool would otherwise wait for the step to finish. The step resumes from its files, as after a kill."""
    # The pool's own processes: concurrent.futures has no public way to stop a running call.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()


def _run_step_logged(step: Step, log_file: str) -> Any:
    """run_step in a fresh process, everything it prints (Python's output and the libraries' own) in `log_file`."""
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"\n$ {step.command_line()}\n")
        log.flush()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(log.fileno(), stream.fileno())
    try:
        return run_step(step)
    except BaseException:
        traceback.print_exc()  # into the log; the exception itself goes back to the sweep
        raise


def run_step_in_fresh_process(step: Step, log_file: Path) -> Any:
    """run_step in a new Python process (spawned: nothing of this one's state is copied), then the process ends."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s (log: %s)", step.command_line(), log_file)
    spawn = get_context("spawn")
    with ProcessPoolExecutor(1, spawn, initializer=_step_process_setup, initargs=(os.getpid(),)) as pool:
        try:
            return pool.submit(_run_step_logged, step, str(log_file)).result()
        except Exception as e:  # noqa: BLE001 - its own error, or a process that died (BrokenProcessPool)
            logger.error("%s.py failed; the end of %s:\n%s", step.script, log_file, _tail(log_file))
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"{step.script}.py failed ({reason}); its log is {log_file}") from e
        except BaseException:  # Ctrl-C, or submitit's SystemExit that requeues a preempted job
            _stop(pool)
            raise


def _tail(log_file: Path, lines: int = 30) -> str:
    if not log_file.is_file():  # the process died before it could write
        return ""
    return "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-lines:])


def _launch(step: Step, launcher: str, log_file: Path) -> Any:
    if launcher == "inprocess":
        logger.info("%s", step.command_line())
        return run_step(step)
    return run_step_in_fresh_process(step, log_file)


def _record(point: Point, point_dir: Path, steps: dict[str, Step]) -> tuple[dict, dict]:
    """The point's record (point.json) and the seconds each script took so far; refuses a point folder that was
    started with other settings."""
    record_file = point_dir / POINT_RECORD
    record = {"name": point.name, "kind": point.kind, "recipe": point.recipe, "settings": point.settings}
    timings = {}
    if record_file.is_file():
        earlier = json.loads(record_file.read_text(encoding="utf-8"))
        same = ("recipe", "settings")  # what decides the result; names and kinds are labels
        if {k: earlier.get(k) for k in same} != json.loads(json.dumps({k: record[k] for k in same})):
            raise SweepError(
                f"{point_dir} was started with other settings ({record_file}); remove the folder to rerun it"
            )
        timings = earlier.get("seconds", {})
        record["ran_on"] = earlier.get("ran_on", [])
    record["ran_on"] = [*record.get("ran_on", []), where_this_runs()]  # each attempt: where a point ran is kept
    record["commands"] = {script: step.command_line() for script, step in steps.items()}
    return record, timings


def _done(script: str, point_dir: Path, steps: dict[str, Step]) -> bool:
    """Whether an interrupted point got past this script already (evaluate's output marks the whole point)."""
    if script == "train":
        return (point_dir / TRAIN_RESULTS).is_file()
    if script == "infer":
        return Path(steps["evaluate"].settings["predictions"][0]).is_file()
    return False


def run_point(point: Point, point_dir: Path, launcher: str) -> str:
    """Bring one point to the finished state; returns what was done ("skipped" when it was finished). Raises
    PointInUseError when another process runs it."""
    if (point_dir / METRICS).is_file():
        return "skipped"
    with point_held(point_dir):
        if (point_dir / METRICS).is_file():  # its holder finished it while this process tried the lock
            return "skipped"
        return _run_steps(point, point_dir, launcher)


def _run_steps(point: Point, point_dir: Path, launcher: str) -> str:
    steps = point_steps(point, point_dir)
    record, timings = _record(point, point_dir, steps)
    atomic_write_json(point_dir / POINT_RECORD, {**record, "seconds": timings})
    for script, step in steps.items():
        if _done(script, point_dir, steps):
            continue
        start = time.perf_counter()
        result = _launch(step, launcher, point_dir / f"{script}.log")
        if script == "infer":  # evaluate scores the file infer reports it wrote
            steps["evaluate"].settings["predictions"] = [result["files"]["official"]]
        timings[script] = round(timings.get(script, 0.0) + time.perf_counter() - start, 1)
        atomic_write_json(point_dir / POINT_RECORD, {**record, "seconds": timings})
    return "ran"


def _print_unfinished(points: list[Point], sweep_dir: Path) -> None:
    for point in points:
        if not (sweep_dir / point.name / METRICS).is_file():
            for step in point_steps(point, sweep_dir / point.name).values():
                print(step.command_line())


def _run_points(args: SweepArguments, points: list[Point], sweep_dir: Path) -> dict[str, str]:
    status = {}
    for point in points:
        logger.info("Point %s", point.name)
        try:
            status[point.name] = run_point(point, sweep_dir / point.name, args.launcher)
        except Exception as e:  # noqa: BLE001 - any failure of one point, reported below
            if not args.keep_going:
                raise
            logger.error("Point %s failed: %s", point.name, e)
            status[point.name] = f"failed: {str(e).splitlines()[0]}"
        logger.info("Point %s: %s", point.name, status[point.name])
    return status


def _check_chosen_on_validation(points: list[Point], sweep_dir: Path) -> None:
    for point in points:
        _, _, infer_args = infer_step(point, sweep_dir / point.name).arguments()
        if infer_args.eval_split != "validation":
            raise SweepError(
                f"test_finalist: point {point.name} scores the {infer_args.eval_split} items; the finalist is chosen "
                "on validation items (set overrides: {eval_split: validation})"
            )


def _score_on_test(point: Point, point_dir: Path, launcher: str, baseline: Path | None) -> Path:
    """Run the point's test steps unless they ran; returns its test predictions file."""
    steps = scoring_steps(point, point_dir, test=True, baseline=baseline)
    predictions = Path(steps["evaluate"].settings["predictions"][0])
    if not (point_dir / TEST_METRICS).is_file():
        result = _launch(steps["infer"], launcher, point_dir / "infer_test.log")
        steps["evaluate"].settings["predictions"] = [result["files"]["official"]]
        _launch(steps["evaluate"], launcher, point_dir / "evaluate_test.log")
    return predictions


def score_finalist(args: SweepArguments, points: list[Point], sweep_dir: Path, results: dict) -> dict:
    """The trained point with the best validation macro-F1 (the first of equals, in the sweep's order) and the
    untrained model, each scored once on the test items; writes finalist.json and finalist.md."""
    trained = [r for r in results["points"] if r["kind"] != "zero-shot"]
    if not trained:
        raise SweepError("test_finalist: no trained point finished, so there is no finalist")
    best = max(trained, key=lambda r: r["macro_f1"])
    by_name = {p.name: p for p in points}
    baseline = None
    if "zero-shot" in by_name:  # first: the finalist is compared with its test predictions
        baseline = _score_on_test(by_name["zero-shot"], sweep_dir / "zero-shot", args.launcher, None)
    _score_on_test(by_name[best["name"]], sweep_dir / best["name"], args.launcher, baseline)
    return write_finalist(args, best, len(trained), sweep_dir)


def point_state(point_dir: Path) -> str:
    """finished, running (and where), started (interrupted or failed) or not started."""
    if (point_dir / METRICS).is_file():
        return "finished"
    holder = point_holder(point_dir)
    if holder:
        return f"running on {holder}"
    return "started" if (point_dir / POINT_RECORD).is_file() else "not started"


def list_points(points: list[Point], sweep_dir: Path) -> dict:
    """Print each point: its index (what --point takes, as does a job array's task id), name and state."""
    states = {p.name: point_state(sweep_dir / p.name) for p in points}
    for index, point in enumerate(points):
        print(f"{index}\t{point.name}\t{states[point.name]}")
    return {"points": states}


def report(args: SweepArguments, points: list[Point], sweep_dir: Path) -> dict:
    """The tables and figure from the finished points (wherever they ran: every node writes into the shared
    output folder), and a line on which points are missing."""
    results = collect(args, points)
    missing = {name: point_state(sweep_dir / name) for name in results["unfinished"]}
    print(
        f"Sweep {args.name}: {len(results['points'])} of {len(points)} points finished; tables in "
        f"{Path(args.results_root) / args.name / 'table.md'}"
    )
    if missing:
        print("Missing: " + ", ".join(f"{name} ({state})" for name, state in missing.items()))
    results["missing"] = missing
    return results


def run_one_point(args: SweepArguments, point: Point, sweep_dir: Path) -> dict:
    """--point: this point's steps and nothing else (no tables: --report makes them once the points are done)."""
    logger.info("Point %s on %s", point.name, where_this_runs())
    status = run_point(point, sweep_dir / point.name, args.launcher)
    logger.info("Point %s: %s", point.name, status)
    return {"point": point.name, "status": status}


def run_sweep(args: SweepArguments) -> dict:
    """Run the unfinished points (or with --dry_run print their commands), then collect the results; or one of
    the other modes: --point, --list, --report, --submit."""
    points = build_points(args)
    sweep_dir = Path(args.output_root) / args.name
    unknown = sorted(set(args.only or []) - {p.name for p in points})
    if unknown:
        raise SweepError(f"--only names unknown point(s) {', '.join(unknown)}; points: {[p.name for p in points]}")
    chosen = [p for p in points if not args.only or p.name in args.only]
    if args.point is not None:
        chosen = [select_point(points, args.point)]  # a bad --point is refused before any work
    if args.list_points:
        return list_points(points, sweep_dir)
    if args.dry_run:
        if not args.collect_only:
            _print_unfinished(chosen, sweep_dir)
        return {"points": [p.name for p in points]}
    if args.test_finalist:
        _check_chosen_on_validation(points, sweep_dir)
    if args.report:
        return report(args, points, sweep_dir)
    if args.point is not None:
        return run_one_point(args, chosen[0], sweep_dir)
    if args.submit:
        from .cluster import submit_sweep  # submitit only where jobs are submitted

        return submit_sweep(args, points, chosen, sweep_dir)
    status = {} if args.collect_only else _run_points(args, chosen, sweep_dir)
    results = collect(args, points)
    results["status"] = status
    failed = [name for name, state in status.items() if state.startswith("failed")]
    if failed:
        raise SweepError(f"point(s) failed: {', '.join(failed)} (the others ran; see their logs)")
    if args.test_finalist and not args.collect_only:
        if len(results["points"]) == len(points):
            results["finalist"] = score_finalist(args, points, sweep_dir, results)
        else:  # a choice among some of the points would be another selection
            logger.info("The finalist is chosen once every point has finished (%s unfinished)", results["unfinished"])
    return results
