"""One run per output folder, no silent replacement of another run's output, and an answer cache that several
runs share at the same time: real `python -m augment` processes against the fake OpenAI server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from augment.__main__ import EXIT_BAD_INPUT, PROG, main
from domainqa.config import run_main
from tests.openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
SOURCES = 6


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
        fake.gate = threading.Event()  # chat answers wait for the test to let them through
        yield fake
        fake.gate.set()


def start(server: FakeOpenAI, pqal_path: Path, out: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "augment", "--dataset_path", str(pqal_path), "--base_url", server.base_url]
    cmd += ["--output_dir", str(out), "--max_sources", str(SOURCES), "--request_timeout", "60", *flags]
    env = dict(os.environ, OPENAI_API_KEY=server.api_key, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]


def test_a_second_run_on_a_busy_output_dir_is_refused_naming_the_first(server, tmp_path, pqal_path):
    """Both runs used to pay for every request and the last writer won; now the second stops in one line, before
    any request, and the first completes alone."""
    out = tmp_path / "run"
    first = start(server, pqal_path, out, "--max_concurrency", "2")
    wait_for(lambda: sum(server.counts.values()) >= 2, first)  # its requests are out: it holds the folder
    second = start(server, pqal_path, out, "--strategy", "new")
    _, err = second.communicate(timeout=120)
    assert second.returncode == EXIT_BAD_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: {out} is in use by python -m augment")
    assert f"(pid {first.pid}," in lines[0] and "another --output_dir" in lines[0]
    server.gate.set()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert len(server.counts) == SOURCES and set(server.counts.values()) == {1}  # each request once, by the first
    assert [r["strategy"] for r in rows(out)] == ["rewrite"] * SOURCES


def test_a_rerun_with_another_strategy_is_refused_unless_overwrite(server, tmp_path, pqal_path, capsys):
    server.gate.set()
    out = tmp_path / "run"

    def run(*flags: str) -> int:
        args = ["--dataset_path", str(pqal_path), "--base_url", server.base_url, "--output_dir", str(out)]
        return run_main(main, [*args, "--max_sources", "3", *flags], PROG)

    assert run("--strategy", "new") == 0
    before, sent = (out / "data.jsonl").read_bytes(), sum(server.counts.values())
    capsys.readouterr()
    assert run("--strategy", "rewrite") == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'strategy: "new" -> "rewrite"' in err
    assert f"{out} holds the output of another run" in err and "--overwrite_output_dir true" in err
    assert (out / "data.jsonl").read_bytes() == before and sum(server.counts.values()) == sent  # nothing sent
    assert run("--strategy", "new", "--prompt_version", "v2") == EXIT_BAD_INPUT
    assert 'prompt_version: "v1" -> "v2"' in capsys.readouterr().err
    assert run("--strategy", "new", "--max_sources", "4") == 0  # more of the same data: allowed
    assert len(rows(out)) == 4
    assert run("--strategy", "rewrite", "--overwrite_output_dir", "true") == 0
    assert [r["strategy"] for r in rows(out)] == ["rewrite"] * 3
    assert json.loads((out / "summary.json").read_text())["strategy"] == "rewrite"


def test_two_runs_sharing_a_cache_send_each_request_once(server, tmp_path, pqal_path):
    """rewriteQA and combinedQA at the same time through one --cache_dir: combinedQA's rewrite requests are those
    of the rewriteQA run, which is sending them; it sends only its new pairs and waits for the rest."""
    cache = tmp_path / "cache"
    rewrite = start(server, pqal_path, tmp_path / "rewrite", "--cache_dir", str(cache), "--max_concurrency", "2")
    wait_for(lambda: sum(server.counts.values()) >= 2, rewrite)
    combined = start(server, pqal_path, tmp_path / "combined", "--cache_dir", str(cache), "--strategy", "combined")
    wait_for(lambda: sum(server.counts.values()) >= 2 + SOURCES, combined)  # its new pairs are out
    time.sleep(1.0)  # time in which a run that did not wait would send the rewrites too
    assert sum(server.counts.values()) == 2 + SOURCES
    server.gate.set()
    for process in (rewrite, combined):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert len(server.counts) == 2 * SOURCES and set(server.counts.values()) == {1}
    summary = json.loads((tmp_path / "combined" / "summary.json").read_text())
    assert summary["cache_hits"] == SOURCES and summary["accepted_by_strategy"] == {
        "original": SOURCES,
        "rewrite": SOURCES,
        "new": SOURCES,
    }
    assert "waiting for" in err and not list((cache / ".claims").glob("*.claims"))


def test_a_run_waiting_on_a_killed_run_sends_what_it_left(server, tmp_path, pqal_path):
    """The run that claimed the requests is killed (kill -9): its claims go with it, and the waiting run sends
    them itself; no answer file is ever torn."""
    cache = tmp_path / "cache"
    killed = start(server, pqal_path, tmp_path / "a", "--cache_dir", str(cache), "--max_concurrency", "2")
    wait_for(lambda: sum(server.counts.values()) >= 2, killed)
    waiting = start(server, pqal_path, tmp_path / "b", "--cache_dir", str(cache))
    wait_for(lambda: len(list((cache / ".claims").glob("*.claims"))) == 2, waiting)  # both runs claim
    time.sleep(1.0)
    assert sum(server.counts.values()) == 2  # the second waits
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    server.gate.set()
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert len(rows(tmp_path / "b")) == SOURCES
    assert sorted(server.counts.values()) == [1] * (SOURCES - 2) + [2, 2]  # only the two in flight at the kill
    for path in cache.rglob("*.json"):
        json.loads(path.read_text())


@pytest.mark.parametrize("value", ["sk-test-secret-0123456789", "hf_AbCdEfGhIjKlMnOpQrStUv0123456789"])
def test_a_key_given_as_api_key_env_is_never_echoed(server, tmp_path, pqal_path, capsys, value):
    args = ["--dataset_path", str(pqal_path), "--base_url", server.base_url, "--output_dir", str(tmp_path / "o")]
    assert run_main(main, [*args, "--api_key_env", value], PROG) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "looks like a key" in captured.err and value not in captured.err + captured.out
    assert not server.counts
