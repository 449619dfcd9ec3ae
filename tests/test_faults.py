"""Faults a run must survive: files cut off by a kill or a full disk, settings changed between a run and
its resume, two processes on one folder, test items under other ids, and bad values. Each test uses
real files and, where cheap, real processes; docs/guarantees.md lists what they cover."""

import base64
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import evaluate
import infer
import train
from domainqa.config import run_main
from domainqa.data import DataError, load_task_data
from domainqa.families import causal_lm
from domainqa.io import atomic_write_text
from domainqa.run_folder import (
    FINGERPRINT,
    LOCK,
    RunInUseError,
    checkpoint_problem,
    last_complete_checkpoint,
    lock_run_folder,
    partial_file,
    release_run_folder,
)
from tests.helpers import REPO, STEM, free_port, infer_args, kill_9_when, stop_infer_after, train_args
from tests.openai_server import FakeOpenAI


def cli(capsys, script, args: list[str]) -> tuple[int, str]:
    """Run a script's main() as its command line does: (exit status, what it printed on stderr)."""
    capsys.readouterr()
    code = run_main(lambda argv: script.main(*script.parse_args(argv)), args)
    return code, capsys.readouterr().err


def one_line(text: str) -> bool:
    return text.strip() != "" and "\n" not in text.strip() and "Traceback" not in text


@pytest.fixture
def no_model_loads(monkeypatch):
    """Make loading a model an error, to show a check came before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(causal_lm, "load_model", refuse)
    monkeypatch.setattr(causal_lm, "load_for_inference", refuse)


def predictions(out: Path) -> tuple[bytes, list[dict]]:
    """The official file's bytes, and the rows with their label scores rounded: a resumed run scores the
    remaining items in other batches, whose other padding moves float sums in the last digits."""
    rows = [json.loads(line) for line in (out / f"{STEM}.jsonl").read_text().splitlines()]
    for row in rows:
        row["label_logprobs"] = {label: round(score, 3) for label, score in row["label_logprobs"].items()}
    return (out / f"{STEM}.json").read_bytes(), rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_llama, pqal_path):
    """predictions() of an uninterrupted run on the first `samples` test items in batches of `batch_size`, to
    compare resumed runs with; each is predicted once for the module."""
    made = {}

    def of(samples: int = 6, batch_size: int = 3) -> tuple[bytes, list[dict]]:
        if (samples, batch_size) not in made:
            out = tmp_path_factory.mktemp("uninterrupted")
            infer.main(*infer.parse_args(infer_args(out, pqal_path, "--model_name_or_path", str(tiny_llama),
                                                    "--max_eval_samples", str(samples), "--batch_size",
                                                    str(batch_size))))  # fmt: skip
            made[samples, batch_size] = predictions(out)
        return made[samples, batch_size]

    return of


# ------------------------------------------------------------------------------- prediction resume


@pytest.mark.parametrize(
    "stop, samples, batch_size, rerun",
    [
        # Stopped in this process; a setting that does not change predictions (the batch size) does not restart
        # the work.
        ("interrupted", 6, 3, ["--batch_size", "2"]),
        # What a full disk leaves, then a later run appending after it: a row cut in the middle, a whole row.
        ("cut_row", 6, 3, []),
        # A real process, on enough items to be killed part-way; the kernel releases its lock with it.
        ("kill_9", 120, 1, []),
    ],
    ids=["interrupted", "cut_row", "kill_9"],
)
def test_prediction_resumes_where_it_stopped(
    stop, samples, batch_size, rerun, tmp_path, tiny_llama, pqal_path, monkeypatch, uninterrupted
):
    """The rerun keeps the complete rows, predicts only the missing ones and writes what an uninterrupted run
    writes: rows after a cut are predicted again, none lost or doubled."""
    out = tmp_path / "run"
    args = infer_args(out, pqal_path, "--model_name_or_path", str(tiny_llama), "--max_eval_samples", str(samples),
                      "--batch_size", str(batch_size))  # fmt: skip
    partial = partial_file(out / STEM, 0)
    if stop == "kill_9":
        settings_and_three_rows = lambda: partial.is_file() and partial.read_bytes().count(b"\n") >= 4  # noqa: E731
        kill_9_when([sys.executable, str(REPO / "infer.py"), *args], settings_and_three_rows, "prediction")
    else:
        stop_infer_after(3, args)
    assert not (out / f"{STEM}.json").exists()
    complete = partial.read_bytes().count(b"\n") - 1  # the rows after the settings line
    if stop == "kill_9":
        assert 3 <= complete < samples
    else:
        assert complete == 3
    if stop == "cut_row":
        lines = partial.read_bytes().splitlines(keepends=True)
        partial.write_bytes(b"".join(lines[:-1]) + lines[-1][:25] + lines[-1])
        complete -= 1

    real, scored = causal_lm.score_labels, []

    def counting(model, tokenizer, fmt, items, batch_size):
        scored.extend(e["id"] for e in items)
        yield from real(model, tokenizer, fmt, items, batch_size)

    monkeypatch.setattr(causal_lm, "score_labels", counting)
    meta = infer.main(*infer.parse_args([*args, *rerun]))
    assert meta["num_examples"] == samples and len(scored) == samples - complete
    assert predictions(out) == uninterrupted(samples, batch_size)
    assert not list(out.glob("*.partial*"))


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_prediction_after_a_full_disk_exits_in_one_line_and_resumes(tmp_path, tiny_llama, pqal_path, uninterrupted):
    out = tmp_path / "run"
    args = infer_args(out, pqal_path, "--model_name_or_path", str(tiny_llama))
    stop_infer_after(2, args)
    release_run_folder(out)  # the process below must be able to take the folder
    partial = partial_file(out / STEM, 0)
    limit = partial.stat().st_size + 100  # room for less than one more row
    command = [sys.executable, str(REPO / "infer.py"), *args]
    for _ in range(2):  # failing again changes nothing: the file never grows past its complete rows + a cut one
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(limit)
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert one_line(done.stderr.splitlines()[-1]) and "Traceback" not in done.stderr
        assert f"{partial}: File too large; free space and rerun" in done.stderr
        assert partial.stat().st_size == limit and not partial.read_bytes().endswith(b"\n")
    infer.main(*infer.parse_args(args))  # space again: the run completes from its complete rows
    assert predictions(out) == uninterrupted()


@pytest.mark.parametrize("changed", ["model", "data", "dtype"])
def test_prediction_resume_refuses_changed_input_then_starts_afresh(changed, tmp_path, tiny_llama, pqal_path, capsys):
    """The model replaced under the same path (as a retrained adapter would be), the data file edited, or another
    precision asked for: the rerun refuses in one line naming what changed, mixes nothing in, and starts afresh on
    request."""
    model, data, out = tmp_path / "model", tmp_path / "pqal.json", tmp_path / "run"
    shutil.copytree(tiny_llama, model)
    shutil.copy(pqal_path, data)
    args = infer_args(out, data, "--model_name_or_path", str(model))
    stop_infer_after(2, args)
    extra = []
    if changed == "model":
        weights = load_file(model / "model.safetensors")
        weights = {k: v * 1.5 if v.dtype.is_floating_point else v for k, v in weights.items()}
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif changed == "dtype":  # auto computed in float32 on this CPU
        extra = ["--dtype", "bfloat16"]
    else:
        items = json.loads(data.read_text())
        first_test = list(items)[500]  # the first test item of the paper split, one of the six predicted
        items[first_test]["QUESTION"] = "Edited? " + items[first_test]["QUESTION"]
        data.write_text(json.dumps(items))
    partial = partial_file(out / STEM, 0)
    kept = partial.read_bytes()

    args += extra
    code, err = cli(capsys, infer, args)
    named = 'dtype: "float32" -> "bfloat16"' if changed == "dtype" else f"{changed}_hash:"
    assert code == 2 and one_line(err) and named in err and "--overwrite_output_dir" in err, err
    assert partial.read_bytes() == kept  # nothing mixed in, nothing lost

    infer.main(*infer.parse_args([*args, "--overwrite_output_dir", "true"]))
    fresh = tmp_path / "fresh"
    infer.main(*infer.parse_args(infer_args(fresh, data, "--model_name_or_path", str(model), *extra)))
    assert predictions(out) == predictions(fresh)  # every row from the new model or data


# ----------------------------------------------------------------------------------- training resume


def test_checkpoint_problems_are_found_in_every_file(tmp_path, tiny_llama, pqal_path):
    out = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, "--max_steps", "1")))
    good = out / "checkpoint-1"
    assert checkpoint_problem(good) is None

    def broken(name: str, damage) -> str:
        copy = tmp_path / name
        shutil.copytree(good, copy)
        damage(copy)
        return checkpoint_problem(copy)

    def cut_half(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    assert "trainer_state.json does not parse" in broken("state", lambda c: (c / "trainer_state.json").write_text(""))
    assert "trainer_state.json is missing" in broken("nostate", lambda c: (c / "trainer_state.json").unlink())
    assert "adapter_model.safetensors" in broken(
        "garbage", lambda c: (c / "adapter_model.safetensors").write_bytes(b"x" * 64)
    )
    assert "adapter_model.safetensors is cut off" in broken("cut", lambda c: cut_half(c / "adapter_model.safetensors"))
    assert "optimizer.pt is not a complete torch file" in broken("optim", lambda c: cut_half(c / "optimizer.pt"))
    assert "optimizer.pt is empty" in broken("empty", lambda c: (c / "optimizer.pt").write_bytes(b""))
    assert "no optimizer state" in broken("nooptim", lambda c: (c / "optimizer.pt").unlink())
    assert "scheduler.pt" in broken("sched", lambda c: cut_half(c / "scheduler.pt"))


def test_training_resume_passes_over_broken_checkpoints(tmp_path, tiny_llama, pqal_path, caplog):
    whole = tmp_path / "whole"
    train.main(*train.parse_args(train_args(tiny_llama, whole, pqal_path, "--max_steps", "3")))
    out = tmp_path / "run"
    args = train_args(tiny_llama, out, pqal_path, "--max_steps", "3")
    train.main(*train.parse_args(args))
    # A full disk during the last two saves, so that the run ended before its final save: an empty state in one,
    # a garbage adapter in the other, and no final model.
    for name in ("adapter_config.json", "adapter_model.safetensors", "run_config.yaml", "train_results.json"):
        (out / name).unlink()
    (out / "checkpoint-3" / "trainer_state.json").write_text("")
    (out / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"\0garbage")
    assert last_complete_checkpoint(out) == str(out / "checkpoint-1")
    caplog.clear()
    train.main(*train.parse_args(args))
    log = caplog.text
    assert "Passing over" in log and "checkpoint-3" in log and "trainer_state.json does not parse" in log
    assert "checkpoint-2" in log and "adapter_model.safetensors" in log
    resumed = load_file(out / "adapter_model.safetensors")
    uninterrupted = load_file(whole / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)  # as if it had never stopped
    assert checkpoint_problem(out / "checkpoint-3") is None  # saved again, completely


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size (root only), unmounted afterwards: a disk that really fills up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()

    def mount(size: int, remount: bool = False) -> Path:
        options = f"{'remount,' if remount else ''}size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        return mount_point

    yield mount
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def _disk_pages(paths) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in paths)


def test_training_after_a_full_disk_resumes_from_the_last_complete_checkpoint(
    tmp_path, tiny_llama, pqal_path, small_disk
):
    whole = tmp_path / "whole"
    train.main(*train.parse_args(train_args(tiny_llama, whole, pqal_path, "--max_steps", "3")))
    # Room for the run's own small files, checkpoint-1 and the first files of checkpoint-2: the disk fills
    # up while checkpoint-2 is being saved.
    first = whole / "checkpoint-1"
    early = [p for p in first.iterdir() if p.suffix not in (".pt", ".pth") and p.name != "trainer_state.json"]
    size = 3 * 4096 + _disk_pages(first.iterdir()) + _disk_pages(early) + 8192
    out = small_disk(size) / "run"
    command = [sys.executable, str(REPO / "train.py"), *train_args(tiny_llama, out, pqal_path, "--max_steps", "3")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "free space and rerun to go on" in done.stderr, done.stderr[-3000:]
    assert checkpoint_problem(out / "checkpoint-1") is None
    assert checkpoint_problem(out / "checkpoint-2") is not None  # what the full disk left

    small_disk(16 * 2**20, remount=True)  # space again
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Passing over" in done.stderr and f"Resuming from {out / 'checkpoint-1'}" in done.stderr
    resumed, uninterrupted = (
        load_file(out / "adapter_model.safetensors"),
        load_file(whole / "adapter_model.safetensors"),
    )
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_full_disk_errors_of_every_writer_are_recognised(small_disk):
    from tokenizers import Tokenizer, models

    from domainqa.config import storage_failure

    disk = small_disk(8192)
    writers = {
        "open": lambda: (disk / "a.json").write_text("x" * 100_000),
        "torch": lambda: torch.save({"a": torch.zeros(100_000)}, disk / "b.pt"),
        "safetensors": lambda: save_file({"a": torch.zeros(100_000)}, disk / "c.safetensors"),
        "tokenizers": lambda: Tokenizer(models.BPE(vocab={str(i): i for i in range(5000)}, merges=[])).save(
            str(disk / "d.json")
        ),
    }
    for name, write in writers.items():
        with pytest.raises(Exception) as error:  # noqa: PT011 - each library raises its own type
            write()
        assert storage_failure(error.value) is not None, (name, error.value)
        for leftover in disk.iterdir():
            leftover.unlink()
    assert storage_failure(RuntimeError("CUDA out of memory")) is None


def test_training_refuses_to_resume_under_other_settings(tmp_path, tiny_llama, pqal_path, capsys):
    out = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path)))
    outputs = lambda: {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != LOCK}  # noqa: E731
    before = outputs()

    code, err = cli(capsys, train, train_args(tiny_llama, out, pqal_path, "--learning_rate", "1e-4"))
    assert code == 2 and one_line(err)
    assert "learning_rate: 0.001 -> 0.0001" in err and "--overwrite_output_dir true or a new --output_dir" in err

    other = tmp_path / "train.jsonl"
    items = load_task_data(str(pqal_path))["train"][:8]
    items[0] = {**items[0], "question": "Edited? " + items[0]["question"]}
    other.write_text("".join(json.dumps(e) + "\n" for e in items))
    code, err = cli(capsys, train, train_args(tiny_llama, out, pqal_path, "--train_data", str(other)))
    assert code == 2 and one_line(err) and "train_data_hash:" in err
    assert outputs() == before  # nothing touched

    train.main(
        *train.parse_args(
            train_args(tiny_llama, out, pqal_path, "--learning_rate", "1e-4", "--overwrite_output_dir", "true")
        )
    )
    saved = json.loads((out / FINGERPRINT).read_text())
    assert saved["settings"]["learning_rate"] == 1e-4
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert [e["learning_rate"] for e in state["log_history"] if "loss" in e][0] == pytest.approx(1e-4)


# ------------------------------------------------------------------------------------------ locking


def test_a_locked_run_folder_refuses_a_second_process(tmp_path, tiny_llama, pqal_path, capsys, no_model_loads):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from domainqa.run_folder import lock_run_folder; "
         "lock_run_folder(sys.argv[1], 'holder.py'); print('locked', flush=True); time.sleep(600)", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=rf"in use by holder.py \(pid {holder.pid},"):
            lock_run_folder(out, "test")
        code, err = cli(capsys, train, train_args(tiny_llama, out, pqal_path))
        assert code == 2 and one_line(err) and "in use by holder.py" in err
        done = subprocess.run(
            [sys.executable, "infer.py", *infer_args(out, pqal_path, "--model_name_or_path", str(tiny_llama))],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 2 and one_line(done.stderr) and "in use by holder.py" in done.stderr
        # The folder as the model to predict with, from elsewhere: a model in training is not one to load.
        elsewhere = infer_args(tmp_path / "elsewhere", pqal_path, "--model_name_or_path", str(tiny_llama),
                               "--adapter_path", str(out))  # fmt: skip
        code, err = cli(capsys, infer, elsewhere)
        assert code == 2 and one_line(err) and f"{out} is being trained by holder.py (pid {holder.pid}" in err, err
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written by the refused runs
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_run_folder(out, "test")  # the kernel released the lock with the killed process
    release_run_folder(out)


def test_only_rank_zero_of_a_launch_locks(tmp_path, monkeypatch):
    out = tmp_path / "run"
    lock_run_folder(out, "rank 0")
    try:
        monkeypatch.setenv("RANK", "1")  # another process of the same accelerate launch
        lock_run_folder(tmp_path / "elsewhere", "rank 1")  # takes nothing
        assert not (tmp_path / "elsewhere").exists()
    finally:
        release_run_folder(out)


# ------------------------------------------------------------------------------------------ test leaks


def test_training_data_leaks_are_found_by_content_whatever_the_id(tmp_path, pqal_path):
    parts = load_task_data(str(pqal_path))
    test_item, train_item = parts["test"][0], parts["train"][0]
    rows = [
        train_item,
        {**test_item, "id": " " + test_item["id"]},
        {**test_item, "id": "x" + test_item["id"], "question": test_item["question"].upper() + "  ",
         "context": test_item["context"].replace(" ", "   ").replace(".", " .")},
    ]  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    leaked = rf"2 training row\(s\) are, or come from, paper-split test items: {test_item['id']}$"
    with pytest.raises(DataError, match=leaked):
        load_task_data(str(pqal_path), train_data=str(data))


# ------------------------------------------------------------------------------- bad values, one line


@pytest.mark.parametrize(
    "script, args, message",
    [
        (train, ["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be at least 1, got 0"),
        (train, ["--per_device_eval_batch_size", "-1"], "per_device_eval_batch_size must be at least 1, got -1"),
        (train, ["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be at least 1, got 0"),
        (train, ["--max_train_samples", "0"], "max_train_samples must be at least 1, got 0"),
        (train, ["--max_eval_samples", "-3"], "max_eval_samples must be at least 1, got -3"),
        (train, ["--lora_r", "0"], "lora_r must be at least 1, got 0"),
        (train, ["--num_virtual_tokens", "0"], "num_virtual_tokens must be at least 1, got 0"),
        (train, ["--split", "paper", "--fold", "10"], "fold must be in 0..9, got 10"),
        (train, ["--dtype", "float8"], "invalid choice: 'float8'"),
        (infer, ["--batch_size", "0"], "batch_size must be at least 1, got 0"),
        (infer, ["--num_beams", "0"], "num_beams must be at least 1, got 0"),
        (infer, ["--max_new_tokens", "0"], "max_new_tokens must be at least 1, got 0"),
        (infer, ["--max_eval_samples", "0"], "max_eval_samples must be at least 1, got 0"),
        (infer, ["--unparsed_fallback", "banana"], "invalid choice: 'banana'"),
        (infer, ["--mode", "sample"], "invalid choice: 'sample'"),
        (infer, ["--adapter_path", "./no-such-adapter"], "adapter_path ./no-such-adapter: no such folder"),
        (infer, ["--adapter_path", "a/b/c"], "adapter_path a/b/c: no such folder"),
        (infer, ["--output_dir", "/proc/domainqa/run"], "output_dir /proc/domainqa/run: cannot write in /proc"),
        (evaluate, ["--predictions", "p.json", "--bootstrap_samples", "-5"], "bootstrap_samples must be at least 0"),
    ],
)
def test_bad_values_exit_in_one_line_before_a_model_loads(script, args, message, tmp_path, capsys, no_model_loads):
    if script is train:
        args = [*args, "--output_dir", str(tmp_path / "run")]
    code, err = cli(capsys, script, args)
    assert code == 2 and one_line(err) and message in err, err


def test_bad_paths_exit_in_one_line_before_a_model_loads(tmp_path, capsys, no_model_loads):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    cases = [
        (train, ["--output_dir", str(a_file)], f"output_dir {a_file} is a file, not a folder"),
        (infer, ["--output_dir", str(a_file)], f"output_dir {a_file} is a file, not a folder"),
        (infer, ["--adapter_path", str(a_file)], f"adapter_path {a_file} is a file"),
        (infer, ["--adapter_path", str(tmp_path / "missing")], f"adapter_path {tmp_path / 'missing'}: no such folder"),
        (
            train,
            ["--model_name_or_path", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")],
            "no such folder",
        ),
        (evaluate, ["--predictions", "p.json", "--output_file", str(tmp_path)], f"output_file {tmp_path} is a folder"),
    ]
    for script, args, message in cases:
        code, err = cli(capsys, script, args)
        assert code == 2 and one_line(err) and message in err, (args, err)


def test_bad_resume_requests_exit_in_one_line(tmp_path, tiny_llama, pqal_path, capsys, no_model_loads):
    out = tmp_path / "run"
    missing = tmp_path / "checkpoint-9"
    code, err = cli(capsys, train, train_args(tiny_llama, out, pqal_path, "--resume_from_checkpoint", str(missing)))
    assert code == 2 and one_line(err) and f"{missing}: cannot resume from it (trainer_state.json is missing)" in err
    both = ("--resume_from_checkpoint", str(missing), "--overwrite_output_dir", "true")
    code, err = cli(capsys, train, train_args(tiny_llama, out, pqal_path, *both))
    assert code == 2 and one_line(err) and "contradict each other" in err


def test_a_recipe_value_of_the_wrong_type_names_the_recipe(tmp_path, capsys, no_model_loads):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'run'}\nlora_r: four\n")
    code, err = cli(capsys, train, [str(recipe)])
    assert code == 2 and one_line(err) and f"{recipe}: lora_r: invalid int value: 'four'" in err
    recipe.write_text(f"output_dir: {tmp_path / 'run'}\nlora_r: 0\n")
    code, err = cli(capsys, train, [str(recipe)])
    assert code == 2 and one_line(err) and f"{recipe}: invalid argument: lora_r must be at least 1" in err


def test_a_bad_value_exits_2_from_a_real_process():
    done = subprocess.run(
        [sys.executable, "infer.py", "--num_beams", "0"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and one_line(done.stderr)
    assert done.stderr.strip() == "infer.py: error: invalid argument: num_beams must be at least 1, got 0"


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "out.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o640


def test_ambiguous_prediction_and_truth_files_exit_in_one_line(tmp_path, pqal_path, capsys):
    twice = tmp_path / "twice.jsonl"
    twice.write_text(
        '{"id": "1", "prediction": "yes"}\n{"id": "2", "prediction": "no"}\n{"id": "1", "prediction": "no"}\n'
    )
    code, err = cli(capsys, evaluate, ["--predictions", str(twice)])
    assert code == 2 and one_line(err) and f"{twice}, line 3: id 1 appears a second time" in err

    keys_twice = tmp_path / "keys_twice.json"
    keys_twice.write_text('{"1": "yes", "2": "no", "1": "no"}')
    code, err = cli(capsys, evaluate, ["--predictions", str(keys_twice)])
    assert code == 2 and one_line(err) and f"{keys_twice}: key 1 appears a second time" in err

    predictions = tmp_path / "p.json"
    predictions.write_text('{"1": "yes"}')
    truth = tmp_path / "truth.json"
    truth.write_text('{"1": "yes", "2": "probably"}')
    code, err = cli(capsys, evaluate, ["--predictions", str(predictions), "--ground_truth_file", str(truth)])
    assert code == 2 and one_line(err) and f"{truth}: PMID 2: label 'probably' is not one of yes, no, maybe" in err


def test_a_data_file_with_an_id_twice_is_refused(tmp_path):
    data = tmp_path / "pqal.json"
    item = '{"QUESTION": "Q?", "CONTEXTS": ["C."], "final_decision": "yes"}'
    data.write_text(f'{{"1": {item}, "2": {item}, "1": {item}}}')
    with pytest.raises(DataError, match=r"pqal.json: key 1 appears a second time"):
        load_task_data(str(data))


# ------------------------------------------------------------------------------------- every command


COMMANDS = {  # how each command is started, and the name its errors begin with
    "train.py": ["train.py"],
    "infer.py": ["infer.py"],
    "evaluate.py": ["evaluate.py"],
    "calibrate.py": ["calibrate.py"],
    "sweep.py": ["sweep.py"],
    "augment": ["-m", "augment"],
    "augment.merge": ["-m", "augment.merge"],
    "domainqa.hub_upload": ["-m", "domainqa.hub_upload"],
}


@pytest.mark.parametrize("prog", COMMANDS)
def test_every_command_exits_2_with_one_line_on_a_bad_argument(prog):
    done = subprocess.run(
        [sys.executable, *COMMANDS[prog], "--no_such_option", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert one_line(done.stderr) and done.stderr.startswith(f"{prog}: error: "), done.stderr[-2000:]


def test_an_interrupted_command_exits_130_with_a_short_line(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert run_main(interrupted, [], "train.py") == 130
    assert capsys.readouterr().err == "train.py: interrupted; rerun the same command to go on\n"


# ------------------------------------------------------------------------------ the Hub out of reach


def hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child's environment with the Hub endpoint on a closed port, an empty cache, no PubMedQA file."""
    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "PUBMEDQA_PATH")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {**env, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", **extra}


@pytest.fixture(scope="module")
def start_seconds() -> float:
    """How long train.py (the slowest to import) takes to start and stop without any Hub look-up."""
    start = time.monotonic()
    subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, timeout=600, check=True)
    return time.monotonic() - start


@pytest.mark.parametrize(
    "script, args, offline, message",
    [
        ("infer.py", ["--adapter_path", "someone/adapter"], False, "someone/adapter: cannot reach the Hub"),
        ("train.py", ["--model_name_or_path", "someone/base"], False, "someone/base: cannot reach the Hub"),
        ("train.py", ["--train_data", "someone/data"], False, "someone/data: cannot reach the Hub"),
        ("evaluate.py", [], False, "qiaojin/PubMedQA: cannot reach the Hub"),
        ("infer.py", ["--adapter_path", "someone/adapter@v2"], True, "someone/adapter@v2: not in the local Hub cache"),
        ("train.py", ["--train_data", "someone/data"], True, "someone/data: no such file or folder, nor a Hub data"),
        ("scripts/export_yesno_csv.py", [], True, "could not load qiaojin/PubMedQA/pqa_labeled from the Hub"),
    ],
)
def test_offline_hub_ids_fail_fast_in_one_line(
    script, args, offline, message, tmp_path, tiny_llama, pqal_path, start_seconds
):
    """Without a network (the endpoint on a closed port) or with HF_HUB_OFFLINE=1 and nothing cached, a Hub id
    stops the script in one line, exit status 2, instead of the client retrying each file for ~25 s."""
    predictions = tmp_path / "p.json"
    predictions.write_text('{"1": "yes"}')
    if script.endswith(".py") and script not in ("evaluate.py", "scripts/export_yesno_csv.py"):
        # evaluate.py and the export read PubMedQA from the Hub: no --dataset_path, no $PUBMEDQA_PATH
        args = [*args, "--dataset_path", str(pqal_path), "--output_dir", str(tmp_path / "run")]
    if script == "scripts/export_yesno_csv.py":
        args = ["--output_dir", str(tmp_path / "csv")]
    if script == "train.py" and "--model_name_or_path" not in args:
        args = [*args, "--model_name_or_path", str(tiny_llama)]
    if script == "evaluate.py":
        args = ["--predictions", str(predictions)]
    env = hub_env(tmp_path, **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    start = time.monotonic()
    done = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    seconds = time.monotonic() - start
    assert done.returncode == 2 and one_line(done.stderr), done.stderr[-3000:]
    assert done.stderr.startswith(f"{Path(script).name}: error: {message}"), done.stderr
    if not offline:
        assert f"{env['HF_ENDPOINT']} (ConnectError" in done.stderr and "set HF_HUB_OFFLINE=1" in done.stderr
    # A behaviour check, not a benchmark: one retried file alone would add 23 s of waiting.
    assert seconds < 1.5 * start_seconds + 20, (seconds, start_seconds)


# --------------------------------------------------------------------------- credentials in a base URL

PASSWORD = "pw-SECRET-in-the-url-0123"
QUERY_KEY = "qk-SECRET-in-the-query-4567"


def test_credentials_in_a_base_url_are_never_shown_or_written(tmp_path, pqal_path):
    """python -m augment with a password in --base_url (a server behind a proxy taking user:password), a key in
    its query, a wrong password (the server echoes the Authorization header it got) and an unreachable server:
    the secrets, decoded or as the Basic header carries them, are in no output file and nowhere on stdout or
    stderr; where the run works, they were sent."""
    with FakeOpenAI(basic_auth=("user", PASSWORD)) as server:
        host = server.base_url.removeprefix("http://")
        wrong = f"wrong-{PASSWORD}"
        cases = {
            "password": (f"http://user:{PASSWORD}@{host}", 0),
            "query": (f"{server.base_url}?api_key={QUERY_KEY}", 0),
            "refused": (f"http://user:{wrong}@{host}", 2),
            "unreachable": (f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/v1", 2),
        }
        encoded = {p: base64.b64encode(f"user:{p}".encode()).decode() for p in (PASSWORD, wrong)}
        secrets = [PASSWORD, QUERY_KEY, wrong, *encoded.values()]
        for case, (url, status) in cases.items():
            out = tmp_path / case
            command = [sys.executable, "-m", "augment", "--dataset_path", str(pqal_path), "--max_sources", "2",
                       "--base_url", url, "--output_dir", str(out), "--request_timeout", "5", "--backoff_base", "0.01",
                       "--log_level", "DEBUG"]  # fmt: skip
            env = {**os.environ, "OPENAI_API_KEY": server.api_key, "PUBMEDQA_PATH": str(pqal_path)}
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == status, (case, done.stderr[-3000:])
            written = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()] if out.exists() else []
            assert bool(written) == (status == 0), case
            for text in [done.stdout, done.stderr, *written]:
                assert not [s for s in secrets if s in text], (case, text[-2000:])
            if status:  # the log lines, then the error naming the server without its password
                error = done.stderr.strip().splitlines()[-1]
                assert error.startswith("augment: error: ") and "http://***@127.0.0.1:" in error, (case, error)
    assert server.auth_seen.count(f"Basic {encoded[PASSWORD]}") >= 3  # the models check and two requests
    assert server.queries.count(f"api_key={QUERY_KEY}") >= 3  # and with the query's key


def test_a_damaged_final_model_is_one_line(tmp_path, tiny_llama, pqal_path, capsys):
    """A final adapter cut off (a copy interrupted, a disk that filled outside train.py) or a config that is no
    JSON: infer.py names the file in one line instead of a loader's traceback."""
    out = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, "--save_strategy", "no")))
    adapter = out / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    code, err = cli(capsys, infer, infer_args(out, pqal_path))
    assert code == 2 and one_line(err), err
    assert f"{out}: the trained model cannot be loaded" in err and "adapter_model.safetensors" in err, err
    assert not list(out.glob("predictions*"))
