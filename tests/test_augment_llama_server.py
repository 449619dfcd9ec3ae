"""Opt-in: the openai backend against a real llama.cpp server (llama-cpp-python) serving the embedded GGUF.

llama-cpp-python has no binary wheel for this platform and builds llama.cpp from source (minutes), so the
test runs only with AUGMENT_LLAMA_SERVER=1 and `pip install 'llama-cpp-python[server]'` done:

    AUGMENT_LLAMA_SERVER=1 python -m pytest tests/test_augment_llama_server.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from augment.__main__ import main
from augment.prompts import output_schema, without_max_lengths
from domainqa.embedded import EMBEDDED_GGUF, EMBEDDED_PACKAGE
from tests.test_augment_smollm2 import cached_answers, satisfies

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("AUGMENT_LLAMA_SERVER") != "1", reason="set AUGMENT_LLAMA_SERVER=1 to run"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the llama.cpp server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the llama.cpp server did not answer {url}/models within {seconds:.0f} s")


@pytest.fixture(scope="module")
def llama_server():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("pip install 'llama-cpp-python[server]' first")
    gguf = Path(importlib.util.find_spec(EMBEDDED_PACKAGE).origin).parent / EMBEDDED_GGUF
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "4096", "--chat_format", "chatml", "--n_threads", "1"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_answers_from_a_real_llama_cpp_server_satisfy_the_schema(llama_server, tmp_path, pqal_path, monkeypatch):
    """llama-cpp-python refuses OpenAI's json_schema form (422) and takes the schema in its json_object form,
    without the maxLengths its grammar cannot hold: every answer is then grammar-constrained by llama.cpp and
    satisfies that schema (the maxima are checked after generation)."""
    monkeypatch.setenv("OPENAI_API_KEY", "no-key-needed")
    out = tmp_path / "llama"
    flags = ["--dataset_path", str(pqal_path), "--output_dir", str(out), "--base_url", llama_server]
    flags += ["--model", "smollm2", "--max_sources", "2", "--max_tokens", "700", "--max_concurrency", "1"]
    flags += ["--request_timeout", "600"]
    assert main(flags) == 0
    answers = cached_answers(out)
    assert len(answers) == 2
    for answer in answers:
        assert satisfies(json.loads(answer["text"]), without_max_lengths(output_schema("rewrite"))), answer["text"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_requests"] == 0 and "unparseable" not in summary["rejected_by_reason"]
