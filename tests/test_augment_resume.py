"""A run killed with SIGKILL and started again repeats no completed request and writes no duplicate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from domainqa.data import read_examples, split_pubmedqa
from tests.openai_server import FakeOpenAI, request_key

REPO = Path(__file__).resolve().parents[1]
SOURCES = 40
CONCURRENCY = 4


def start(server: FakeOpenAI, pqal_path: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "augment", "--dataset_path", str(pqal_path), "--base_url", server.base_url]
    cmd += ["--output_dir", str(out), "--max_sources", str(SOURCES), "--max_concurrency", str(CONCURRENCY)]
    env = dict(os.environ, OPENAI_API_KEY=server.api_key, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cached_keys(out: Path) -> set[str]:
    """The server-side key of every answer in the cache."""
    keys = set()
    for path in (out / "cache").rglob("*.json"):
        entry = json.loads(path.read_text())
        keys.add(request_key({"messages": entry["messages"], "seed": entry["params"]["seed"], "model": entry["model"]}))
    return keys


def test_kill_9_then_resume(tmp_path, pqal_path):
    out = tmp_path / "killed"
    with FakeOpenAI(latency=0.1) as server:
        process = start(server, pqal_path, out)
        deadline = time.monotonic() + 60
        while sum(server.completed.values()) < 10 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        done_before_kill = cached_keys(out)
        assert 0 < len(done_before_kill) < SOURCES  # killed in the middle
        assert not (out / "data.jsonl").exists()  # never a partial output

        process = start(server, pqal_path, out)
        _, stderr = process.communicate(timeout=90)
        assert process.returncode == 0, stderr.decode()

    for key in done_before_kill:
        assert server.counts[key] == 1  # an answer cached before the kill was never asked for again
    repeated = [k for k, n in server.counts.items() if n > 1]
    assert len(repeated) <= CONCURRENCY  # only requests in flight at the kill went out twice
    assert len(server.counts) == SOURCES

    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    train = split_pubmedqa(read_examples(pqal_path), "paper")["train"][:SOURCES]
    assert len(rows) == SOURCES and len({r["id"] for r in rows}) == SOURCES
    assert sorted(r["source_id"] for r in rows) == sorted(e["id"] for e in train)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cache_hits"] == len(done_before_kill) and summary["accepted"] == SOURCES
