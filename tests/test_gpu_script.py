"""benchmarks/gpu_run.sh and benchmarks/bench_gpu.py, on the CPU with tiny sizes: the FLOP count, the batch
statistics behind tokens/s and MFU, one training benchmark run and its summary table, and the time caps."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch

from benchmarks import bench_gpu
from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_run.sh"


def test_flop_count_follows_the_stated_convention():
    shape = bench_gpu.ModelShape(layers=2, attention_width=8, vocab=100, hidden=8, frozen=1000, trainable=10)
    # Two sequences of 3 and 5 tokens, 4 answer positions.
    flops = bench_gpu.step_flops(shape, tokens=8, sum_squares=3**2 + 5**2, answer_positions=4)
    assert flops == 4 * 1000 * 8 + 6 * 10 * 8 + 6 * 2 * 8 * 34 + 4 * 100 * 8 * 4


def test_padded_and_padding_free_batches_count_the_same_work():
    lengths, answers = [3, 5], [[2], [3, 4]]  # answer token positions in each sequence
    padded_ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded_labels = torch.full((2, 5), -100)
    packed_labels = torch.full((1, 8), -100)
    for row, positions in enumerate(answers):
        for position in positions:
            padded_labels[row, position] = 1
            packed_labels[0, sum(lengths[:row]) + position] = 1
    padded = bench_gpu.batch_stats({"input_ids": padded_ids, "attention_mask": mask, "labels": padded_labels})
    packed = bench_gpu.batch_stats({"input_ids": torch.zeros(1, 8, dtype=torch.long), "labels": packed_labels,
                                    "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])})  # fmt: skip
    stats = dict(zip(bench_gpu.STATS, padded.tolist(), strict=True))
    assert stats == {"sequences": 2, "real_tokens": 8, "padded_tokens": 10, "sum_squares": 34, "answer_positions": 3}
    assert packed.tolist() == [2, 8, 8, 34, 3]


@pytest.mark.slow
def test_training_benchmark_runs_tiny_on_cpu_and_fills_the_table(tmp_path, pqal_path, monkeypatch):
    monkeypatch.setenv("PUBMEDQA_PATH", str(pqal_path))
    settings = bench_gpu.Settings(device="cpu", tiny=True, model=None, items=8, warmup_steps=1, timed_steps=1,
                                  seconds_per_variant=60)  # fmt: skip
    names = [bench_gpu.BASELINE, "64 x accum 1", "64 x 1, bf16 weights, torch.compile (padded to 64)"]
    written = []
    result = bench_gpu.run_training(settings, names, str(tmp_path / "run"), written.append)
    assert len(written) == len(names)  # written after every variant, so a time cap keeps what was measured
    baseline, bigger, compiled = result["variants"]
    assert compiled["status"] == "skipped: needs CUDA"
    for row in (baseline, bigger):
        assert row["status"] == "ok", row
        # One timed optimizer step: micro-batch x accumulation sequences (tiny sizes are the GPU's / 8).
        assert row["counts"]["sequences"] == row["micro_batch"] * row["accumulation"]
        assert row["real_tokens_per_s"] > row["sequences_per_s"] > 0
        assert 0 < row["mfu"] < 1
    assert (baseline["micro_batch"], baseline["accumulation"]) == (2, 4)
    assert (bigger["micro_batch"], bigger["accumulation"]) == (8, 1)

    table = bench_gpu.training_table(result).splitlines()
    header = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert header == ["variant", "status", "micro x accum", "sequences/s", "real tokens/s", "vs baseline",
                      "padding", "TFLOP/s", "MFU", "peak GiB", "last loss"]  # fmt: skip
    first = [cell.strip() for cell in table[4].strip("|").split("|")]
    assert first[:3] == [bench_gpu.BASELINE, "ok", "2 x 4"] and first[5] == "1.00x"
    assert re.fullmatch(r"\d+\.\d%", first[8])
    assert "skipped: needs CUDA" in table[6]


def test_step_caps_fit_the_gpu_time_limit():
    """A call stops starting steps at TOTAL_CAP, inside the device's 10 minutes a command; the model-free steps of
    the first call fit in it whole."""
    text = SCRIPT.read_text()
    steps = re.findall(r"^\s*(?:RETRY=1 )?step ([\w-]+) (\d+) ([01]) ", text, flags=re.MULTILINE)
    assert len(steps) >= 10
    total_cap = int(re.search(r"TOTAL_CAP=\$\{TOTAL_CAP:-(\d+)\}", text).group(1))
    assert total_cap <= 540
    assert sum(int(cap) for _, cap, needs_model in steps if needs_model == "0") <= total_cap
    assert all(int(cap) <= total_cap for _, cap, _ in steps)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_refuses_a_missing_output_folder_argument():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr
