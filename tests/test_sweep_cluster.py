"""sweep.py beyond one machine: one point run alone (--point), the points listed (--list), the report from the
points finished wherever they ran (--report), and the grid submitted through submitit (--submit) as real jobs of
its local executor, one of which is killed with kill -9 and one preempted midway."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import sweep
from domainqa.config import run_main
from sweeps.plan import Resources, SweepError, build_points
from sweeps.runner import POINT_LOCK, PointInUseError, point_held
from tests.conftest import REPO
from tests.test_sweep import sweep_args, write_sweep

PREDICTIONS = "predictions_paper_test_score"


def run_cli(argv: list[str]) -> int:
    return run_main(lambda args: sweep.main(*sweep.parse_args(args)), argv, "sweep.py")


def holder_pid(point_dir) -> int | None:
    """The pid the point's lock names (the process that runs the point), once it holds it."""
    text = (point_dir / POINT_LOCK).read_text() if (point_dir / POINT_LOCK).is_file() else ""
    found = re.search(r" pid (\d+)", text)
    return int(found.group(1)) if found else None


def predicted_rows(point_dir) -> int:
    partial = point_dir / f"{PREDICTIONS}.partial0.jsonl"
    return max(0, len(partial.read_text().splitlines()) - 1) if partial.is_file() else 0  # less the header


def signal_midway(out, signals: dict, timeout: float = 600) -> dict:
    """Send each point's signal to the process that runs it once it has predicted two items (the points get
    there in any order); returns the time each trained adapter was written, as it was then."""
    written, start = {}, time.monotonic()
    while signals:
        assert time.monotonic() - start < timeout, f"waited {timeout} s for {', '.join(signals)} to predict"
        for name, sig in list(signals.items()):
            pid = holder_pid(out / name) if predicted_rows(out / name) >= 2 else None
            if pid:
                adapter = out / name / "adapter_model.safetensors"
                written[name] = adapter.stat().st_mtime_ns if adapter.is_file() else None
                os.kill(pid, sig)
                del signals[name]
        time.sleep(0.02)
    return written


def test_one_point_alone_by_index_or_name_and_bad_points_refused(tmp_path, tiny_llama, pqal_path, capsys):
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4, 8], zero_shot=True)
    out = tmp_path / "out" / "tiny"
    for wanted in ("3", "lora_alpha-9", "-1"):  # one line, exit 2, nothing made
        assert run_cli(sweep_args(path, tmp_path, "--point", wanted)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"sweep.py: error: --point {wanted}: "), err
    assert not out.exists()
    assert run_cli(sweep_args(path, tmp_path, "--point", "1", "--list")) == 2
    assert "--point and --list: one at a time" in capsys.readouterr().err

    result = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--point", "1")))
    assert result == {"point": "lora_alpha-8", "status": "ran"}
    assert sorted(p.name for p in out.iterdir()) == ["lora_alpha-8"]
    assert (out / "lora_alpha-8" / "metrics.json").is_file()
    again = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--point", "lora_alpha-8")))
    assert again["status"] == "skipped"

    with point_held(out / "zero-shot"):  # as a job on another node holds it: its own open file, its own lock
        with pytest.raises(PointInUseError, match=r"point zero-shot is running in \S+ pid \d+"):
            sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--point", "zero-shot")))
        capsys.readouterr()  # what training printed
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--list")))
        listed = capsys.readouterr().out.splitlines()
        assert listed[0] == "0\tlora_alpha-4\tnot started" and listed[1] == "1\tlora_alpha-8\tfinished"
        assert re.fullmatch(rf"2\tzero-shot\trunning on \S+ pid {os.getpid()} since .+", listed[2])
    assert not (out / "zero-shot" / "metrics.json").exists()

    results = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--report")))
    printed = capsys.readouterr().out
    assert "Sweep tiny: 1 of 3 points finished" in printed
    assert "Missing: lora_alpha-4 (not started), zero-shot (not started)" in printed
    assert [p["name"] for p in results["points"]] == ["lora_alpha-8"]
    assert "| 4 | not run | not run |" in (tmp_path / "results" / "tiny" / "table.md").read_text()


def test_resources_from_the_sweep_file(tmp_path, tiny_llama, pqal_path, capsys):
    series = [
        {"label": "LoRA", "name": "big", "base_recipe": str(tmp_path / "base.yaml"), "parameter": "lora_alpha",
         "values": [4], "resources": {"gpus_per_node": 2, "slurm_partition": "long"}},
        {"label": "LoRA", "base_recipe": str(tmp_path / "base.yaml"), "parameter": "lora_alpha", "values": [4]},
    ]  # fmt: skip
    path = write_sweep(tmp_path, tiny_llama, pqal_path, series=series, resources={"mem_gb": 64, "timeout_min": 30})
    args = sweep.parse_args(sweep_args(path, tmp_path))[0]
    big, small = build_points(args)
    assert (big.name, small.name) == ("big-lora_alpha-4", "lora_alpha-4")
    assert big.resources == Resources(gpus_per_node=2, mem_gb=64, timeout_min=30, slurm_partition="long")
    assert small.resources == Resources(mem_gb=64, timeout_min=30)

    for resources, message in [
        ({"gpus": 1}, "resources: unknown key 'gpus' (known: gpus_per_node, cpus_per_task, mem_gb, "),
        ({"timeout_min": "2h"}, "resources: timeout_min must be a whole number >= 1, got '2h'"),
        ({"gpus_per_node": True}, "resources: gpus_per_node must be a whole number >= 0, got True"),
        ({"slurm_partition": ""}, "resources: slurm_partition must be a name, got ''"),
    ]:
        bad = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4], resources=resources)
        assert run_cli(sweep_args(bad, tmp_path)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"sweep.py: error: {message}"), err
    assert not (tmp_path / "out").exists()  # refused before any work
    good = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4])  # the same file again
    assert run_cli(sweep_args(good, tmp_path, "--wait")) == 2 and "--wait goes with --submit" in capsys.readouterr().err
    if not shutil.which("sbatch"):
        assert run_cli(sweep_args(good, tmp_path, "--submit")) == 2
        assert "sweep.py: error: --cluster slurm: no sbatch here; " in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
    bad_entry = [{**series[1], "resources": {"mem": 3}}]
    with pytest.raises(SweepError, match=r"^series LoRA resources: unknown key 'mem' \(known: "):
        build_points(sweep.parse_args(sweep_args(write_sweep(tmp_path, tiny_llama, pqal_path, series=bad_entry),
                                                 tmp_path))[0])  # fmt: skip


def test_a_grid_as_local_jobs_survives_a_kill_and_a_preemption_and_reports_as_a_local_run(
    tmp_path, tiny_llama, pqal_path, capsys
):
    """Three points as real submitit jobs (processes of this machine). lora_alpha-8's job is killed with kill -9
    while it predicts: the job fails, the resubmission runs that point alone and it resumes. zero-shot's job gets
    the preemption signal while it predicts: submitit requeues it and it resumes. The report then holds each point
    once, with the predictions and numbers of a local run of the same sweep."""
    overrides = {"max_train_samples": 4, "max_eval_samples": 12, "batch_size": 1, "bootstrap_samples": 50}
    # 15 minutes: a signal half a minute in is a preemption to submitit (near the end it would be a time-out);
    # the SLURM keys are checked by submitit's AutoExecutor and unused by its local executor
    resources = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 4, "timeout_min": 15,
                 "slurm_partition": "gpu", "array_parallelism": 2}  # fmt: skip
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4, 8], zero_shot=True,
                       overrides=overrides, resources=resources)  # fmt: skip
    out = tmp_path / "out" / "tiny"
    outcome = {}

    def submit():
        try:
            outcome["result"] = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--submit", "--cluster",
                                                                        "local", "--wait")))  # fmt: skip
        except SweepError as e:
            outcome["error"] = str(e)

    thread = threading.Thread(target=submit)
    thread.start()
    written = signal_midway(out, {"lora_alpha-8": signal.SIGKILL, "zero-shot": signal.SIGUSR2})
    thread.join(600)

    assert outcome["error"].startswith("point(s) failed: lora_alpha-8; --submit again reruns them")
    submissions = [json.loads(line) for line in (out / "_jobs" / "submissions.jsonl").read_text().splitlines()]
    assert [s["point"] for s in submissions] == ["lora_alpha-4", "lora_alpha-8", "zero-shot"]
    assert {s["resources"]["mem_gb"] for s in submissions} == {4}
    logs = {p.parent.name: p.read_text() for p in (out / "_jobs").glob("*/*_log.err")}
    assert "this job is preempted" in logs[submissions[2]["job"]] and "Requeued job" in logs[submissions[2]["job"]]
    requeued = json.loads((out / "zero-shot" / "point.json").read_text())["ran_on"]
    assert len(requeued) == 2 and requeued[0] != requeued[1]  # the preempted job, then its requeued run
    assert (out / "zero-shot" / "metrics.json").is_file() and not (out / "lora_alpha-8" / "metrics.json").exists()
    assert "Missing: lora_alpha-8 (started)" in capsys.readouterr().out

    again = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--submit", "--cluster", "local", "--wait")))
    assert again["status"] == {"lora_alpha-8": "ran"}  # only the unfinished point was submitted
    adapter = out / "lora_alpha-8" / "adapter_model.safetensors"
    assert adapter.stat().st_mtime_ns == written["lora_alpha-8"]  # trained before the kill: not retrained
    assert "Resuming: " in "".join(p.read_text() for p in (out / "_jobs").glob("*/*_log.err"))
    assert len(json.loads((out / "lora_alpha-8" / "point.json").read_text())["ran_on"]) == 2

    local = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path / "local")))  # the same sweep, one process
    report = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--report")))
    assert "Sweep tiny: 3 of 3 points finished" in capsys.readouterr().out and report["missing"] == {}
    assert [p["name"] for p in report["points"]] == ["lora_alpha-4", "lora_alpha-8", "zero-shot"]
    same = ("accuracy", "macro_f1", "bootstrap_95", "num_examples", "predicted_distribution", "train_steps")
    for ours, theirs in zip(report["points"], local["points"], strict=True):
        assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
        official = f"{ours['name']}/{PREDICTIONS}.json"
        assert (out / official).read_bytes() == (tmp_path / "local" / "out" / "tiny" / official).read_bytes()
    assert "Unfinished" not in (tmp_path / "results" / "tiny" / "table.md").read_text()
    assert (tmp_path / "results" / "tiny" / "figure.png").is_file()


def run_lock_pid(point_dir) -> int | None:
    """The pid the run folder's own lock names: the process of the script running now (infer.py here)."""
    text = (point_dir / ".run.lock").read_text() if (point_dir / ".run.lock").is_file() else ""
    found = re.search(r"\(pid (\d+),", text)
    return int(found.group(1)) if found else None


def gone(pid: int, timeout: float = 20) -> bool:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_job_that_stops_takes_its_step_process_with_it(tmp_path, tiny_llama, pqal_path):
    """The default launcher runs each script in a process of its own. A job that leaves (Ctrl-C; submitit's exit
    when it requeues a preempted job) stops that process instead of waiting for the script to finish, and a job
    killed with kill -9 leaves no orphan holding the run folder: the next job resumes the point."""
    overrides = {"max_eval_samples": 12, "batch_size": 1, "bootstrap_samples": 50}
    path = write_sweep(tmp_path, tiny_llama, pqal_path, zero_shot=True, overrides=overrides)
    point = tmp_path / "out" / "tiny" / "zero-shot"
    command = [sys.executable, "sweep.py", str(path), "--output_root", str(tmp_path / "out"), "--point", "zero-shot"]
    seen = 0
    for sig, status in ((signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)):
        log = tmp_path / f"{sig.name}.log"
        with log.open("w") as err:
            job = subprocess.Popen(command, cwd=REPO, stdout=err, stderr=err)
        start = time.monotonic()
        while not (predicted_rows(point) > max(seen, 1) and (step := run_lock_pid(point)) not in (None, job.pid)):
            assert time.monotonic() - start < 600 and job.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
        job.send_signal(sig)  # to the job's own process only, as a scheduler's signal or kill reaches it
        assert job.wait(60) == status, log.read_text()[-3000:]
        assert gone(step), f"infer.py's process {step} outlived the job ({sig.name})"
        seen = predicted_rows(point)
        assert 2 <= seen < 12 and not (point / "metrics.json").exists()
    assert "sweep.py: interrupted; rerun the same command to go on" in (tmp_path / "SIGINT.log").read_text()

    result = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--point", "zero-shot")))
    assert result["status"] == "ran" and json.loads((point / "metrics.json").read_text())["num_examples"] == 12
    assert len(json.loads((point / f"{PREDICTIONS}.json").read_text())) == 12
