"""train.py and infer.py under `accelerate launch` with 2 CPU processes (DDP over gloo), on the tiny llama."""

import json
import os
import subprocess
import sys

import pytest

import infer
from tests.helpers import REPO, free_port, infer_args, train_args


def launch(script: str, *args: str, config: tuple[str, ...] = ("--config_file", "accelerate_configs/cpu_2proc.yaml"),
           returncode: int = 0) -> subprocess.CompletedProcess:  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *config, "--main_process_port", str(free_port()),
        script, *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == returncode, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_llama, pqal_path):
    out = tmp_path_factory.mktemp("ddp") / "run"
    # 8 examples, 4 per device: one optimizer step per epoch on 2 processes (two on one). The class-weighted loss
    # reads the model inside its DDP wrapper.
    args = train_args(tiny_llama, out, pqal_path, "--max_steps", "-1", "--num_train_epochs", "2", "--use_cpu", "true",
                      "--class_weighted_loss", "true")  # fmt: skip
    return out, launch("train.py", *args)


def test_training_on_two_processes(two_process_run):
    out, result = two_process_run
    assert result.stderr.count("Training on 8 examples") == 2  # each rank loaded the data and trained
    assert result.stderr.count("100%|██████████| 2/2") >= 2  # each rank's progress bar ran both steps
    state = json.loads((out / "trainer_state.json").read_text())
    # 2 epochs x 1 step of 2 processes x 4 examples; one process would take 4 steps.
    assert state["global_step"] == 2 and state["train_batch_size"] == 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert len(list(out.rglob("adapter_model.safetensors"))) == 3  # the final adapter plus one per checkpoint
    assert [p.name for p in out.glob("*run_config*")] == ["run_config.yaml"]  # the main process only, no leftovers
    assert [p.name for p in out.glob("*.tmp*")] == []
    assert "--use_cpu" not in (out / "run_config.yaml").read_text()


def test_inference_on_two_processes_shards_and_merges(two_process_run, pqal_path):
    out, _ = two_process_run
    # No --cpu for the launcher: with it, accelerate starts a single process.
    result = launch("infer.py", *infer_args(out, pqal_path, "--predictions_name", "ddp"))
    assert result.stderr.count("Wrote ") == 1  # only the main process merges
    meta = json.loads((out / "ddp.meta.json").read_text())
    assert meta["processes"] == 2 and meta["num_examples"] == 6, result.stderr[-2000:]
    assert not list(out.glob("*.partial*"))
    single = infer.main(*infer.parse_args(infer_args(out, pqal_path, "--predictions_name", "single")))
    assert single["processes"] == 1
    ddp_rows = [json.loads(line) for line in (out / "ddp.jsonl").read_text().splitlines()]
    single_rows = [json.loads(line) for line in (out / "single.jsonl").read_text().splitlines()]
    assert [r["id"] for r in ddp_rows] == [r["id"] for r in single_rows] and len({r["id"] for r in ddp_rows}) == 6
    assert json.loads((out / "ddp.json").read_text()) == json.loads((out / "single.json").read_text())
    for a, b in zip(ddp_rows, single_rows, strict=True):
        assert a["prediction"] == b["prediction"]
        assert a["label_logprobs"] == pytest.approx(b["label_logprobs"], abs=1e-4)


def test_gpu_only_config_on_a_cpu_is_refused_before_work(tmp_path, tiny_llama, pqal_path):
    # accelerate runs FSDP only on GPUs: with --cpu its two processes would each train alone into one folder.
    out = tmp_path / "run"
    fsdp_on_cpu = tmp_path / "fsdp_cpu.yaml"  # `--cpu` on the command line would start one process instead
    fsdp = (REPO / "accelerate_configs/fsdp.yaml").read_text()
    fsdp_on_cpu.write_text(fsdp.replace("use_cpu: false", "use_cpu: true"))
    config = ("--config_file", str(fsdp_on_cpu), "--num_processes", "2")
    result = launch("train.py", *train_args(tiny_llama, out, pqal_path), config=config, returncode=1)
    assert "the launcher started 2 processes but they do not form one run" in result.stderr
    assert not out.exists()
