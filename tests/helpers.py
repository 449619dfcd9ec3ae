"""Helpers that several test modules share: the repository root, the tiny runs' command lines, a run stopped
part-way (in this process, or a real process killed), a free port. Fixtures live in conftest.py."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEM = "predictions_paper_test_score"  # the files infer.py writes by default: STEM.json, .jsonl, .meta.json


def train_args(model, out, pqal, *extra):
    """train.py's arguments for a 2-step run on 8 items, a checkpoint at every step; `extra` overrides them."""
    return [
        "--model_name_or_path", str(model), "--dataset_path", str(pqal), "--output_dir", str(out),
        "--max_train_samples", "8", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
        "--max_steps", "2", "--logging_steps", "1", "--save_steps", "1", "--learning_rate", "1e-3",
        "--report_to", "none", *extra,
    ]  # fmt: skip


def infer_args(out, pqal, *extra):
    """infer.py's arguments for 6 test items in batches of 3; `extra` overrides them."""
    return ["--output_dir", str(out), "--dataset_path", str(pqal), "--max_eval_samples", "6", "--batch_size", "3",
            *extra]  # fmt: skip


def stop_infer_after(rows: int, args: list[str]) -> None:
    """Run infer.py with `args` in this process and stop it, as a kill would, once `rows` rows are written."""
    import infer  # here, not at the top: conftest.py imports this module, and most tests need no infer.py
    from domainqa.families import causal_lm

    real = causal_lm.score_labels

    def interrupted(model, tokenizer, fmt, items, batch_size):
        for n, row in enumerate(real(model, tokenizer, fmt, items, batch_size)):
            if n == rows:
                raise KeyboardInterrupt
            yield row

    with pytest.MonkeyPatch.context() as patch:  # its own patch: the caller's monkeypatch stays as it was
        patch.setattr(causal_lm, "score_labels", interrupted)
        with pytest.raises(KeyboardInterrupt):
            infer.main(*infer.parse_args(args))


def kill_9_when(command: list[str], ready: Callable[[], bool], what: str, env: dict[str, str] | None = None) -> None:
    """Start `command` as a real process in the repository and kill -9 it as soon as `ready()` holds."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ready():
        assert process.poll() is None, f"{what} ended before it could be killed"
        assert time.time() < deadline, f"{what} got nowhere within 4 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a connection to it is refused at once) and a server may take."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
