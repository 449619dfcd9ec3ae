"""Running a sweep: each unfinished point's steps (train -> infer -> evaluate), resumable point by point.

The scripts are called with their argument objects, in this process (`--launcher inprocess`) or each in a fresh
Python process (`--launcher subprocess`, the default). The fresh process is there for isolation, not for the
arguments: a training run leaves memory behind in the process that ran it (the CUDA caching allocator, the
allocator's arenas, modules the libraries keep), so a long sweep in one process grows point by point; a process
per script gives it all back and keeps each script's output in the point's log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
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
)
from .report import POINT_RECORD, collect, write_finalist

logger = logging.getLogger(__name__)


def run_step(step: Step) -> Any:
    """The step's script, called with its argument objects; returns what its main returns."""
    return SCRIPTS[step.script].main(*step.arguments())


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
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(_run_step_logged, step, str(log_file)).result()
        except Exception as e:  # noqa: BLE001 - its own error, or a process that died (BrokenProcessPool)
            logger.error("%s.py failed; the end of %s:\n%s", step.script, log_file, _tail(log_file))
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"{step.script}.py failed ({reason}); its log is {log_file}") from e


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
    """Bring one point to the finished state; returns what was done ("skipped" when it was finished)."""
    if (point_dir / METRICS).is_file():
        return "skipped"
    steps = point_steps(point, point_dir)
    record, timings = _record(point, point_dir, steps)
    point_dir.mkdir(parents=True, exist_ok=True)
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


def run_sweep(args: SweepArguments) -> dict:
    """Run the unfinished points (or with --dry_run print their commands), then collect the results."""
    points = build_points(args)
    sweep_dir = Path(args.output_root) / args.name
    unknown = sorted(set(args.only or []) - {p.name for p in points})
    if unknown:
        raise SweepError(f"--only names unknown point(s) {', '.join(unknown)}; points: {[p.name for p in points]}")
    chosen = [p for p in points if not args.only or p.name in args.only]
    if args.dry_run:
        if not args.collect_only:
            _print_unfinished(chosen, sweep_dir)
        return {"points": [p.name for p in points]}
    if args.test_finalist:
        _check_chosen_on_validation(points, sweep_dir)
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
