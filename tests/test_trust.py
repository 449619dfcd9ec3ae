"""Never a silent wrong answer: a diverged or damaged model, an interrupted or finished run, an item longer than
the model reads, a save cut off by a full disk, SIGTERM, and odd input each end in a result that is right or in
one line, never in a score for a model that is not what the user thinks it is."""

from __future__ import annotations

import csv
import errno
import json
import logging
import signal
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
from domainqa.config import UsageError
from domainqa.data import DataError, read_examples
from domainqa.families.causal_lm import AnswerLossSFTTrainer
from domainqa.run_folder import STAGING, checkpoint_folders
from domainqa.training import TrainingDiverged
from tests.helpers import REPO, infer_args, train_args


def run_script(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama, pqal_path) -> Path:
    """A finished 2-step LoRA run of the tiny llama (tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path)))
    return out


def copy_run(run: Path, target: Path) -> Path:
    subprocess.run(["cp", "-r", str(run), str(target)], check=True)
    (target / ".run.lock").unlink(missing_ok=True)
    return target


# ------------------------------------------------------------------------------------------ finite or refused


def test_a_diverging_run_stops_in_one_line_and_saves_no_bad_model(tmp_path, tiny_llama, pqal_path):
    out = tmp_path / "run"
    args = train_args(tiny_llama, out, pqal_path, "--learning_rate", "1e30", "--max_steps", "3")
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d \(.*(nan|inf|not finite)"):
        train.main(*train.parse_args(args))
    assert not (out / "adapter_model.safetensors").exists()  # no final model
    for checkpoint in checkpoint_folders(out):  # and no saved checkpoint holds a NaN
        weights = load_file(checkpoint / "adapter_model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_model_with_a_nan_weight_is_refused_before_it_predicts(tmp_path, trained_run, pqal_path):
    run = copy_run(trained_run, tmp_path / "run")
    weights = load_file(run / "adapter_model.safetensors")
    name = sorted(weights)[0]
    weights[name][0, 0] = float("nan")
    save_file(weights, run / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UsageError, match="holds NaN or infinite values"):
        infer.main(*infer.parse_args(infer_args(run, pqal_path)))
    assert not list(run.glob("predictions_*"))


def test_evaluate_refuses_rows_whose_scores_are_not_finite(tmp_path, pqal_path):
    rows = tmp_path / "predictions.jsonl"
    rows.write_text('{"id": "1", "prediction": "yes", "label_logprobs": {"yes": NaN, "no": -1.0, "maybe": -2.0}}\n')
    with pytest.raises(UsageError, match="are not finite"):
        evaluate.main(*evaluate.parse_args(["--predictions", str(rows), "--dataset_path", str(pqal_path)]))


# ------------------------------------------------------------------------------ zero-shot only when asked


def test_an_interrupted_run_is_not_predicted_zero_shot(tmp_path, trained_run, pqal_path):
    run = copy_run(trained_run, tmp_path / "run")
    for name in ("adapter_config.json", "adapter_model.safetensors", "run_config.yaml", "train_results.json"):
        (run / name).unlink()  # killed before its final save: checkpoints only
    with pytest.raises(UsageError, match=r"holds an interrupted training run \(checkpoint-2, no final model\)"):
        infer.main(*infer.parse_args(infer_args(run, pqal_path)))
    assert not list(run.glob("predictions_*"))
    meta = infer.main(*infer.parse_args(infer_args(run, pqal_path, "--zero_shot", "true")))
    assert meta["zero_shot"] is True and meta["trained_model"] is None


# ---------------------------------------------------------------------------------- finished means finished


def test_a_finished_run_is_not_trained_again(tmp_path, trained_run, tiny_llama, pqal_path):
    run = copy_run(trained_run, tmp_path / "run")
    adapter = (run / "adapter_model.safetensors").read_bytes()
    checkpoints = sorted(p.name for p in checkpoint_folders(run))
    metrics = train.main(*train.parse_args(train_args(tiny_llama, run, pqal_path)))
    assert metrics == json.loads((run / "train_results.json").read_text())
    assert (run / "adapter_model.safetensors").read_bytes() == adapter
    assert sorted(p.name for p in checkpoint_folders(run)) == checkpoints  # no checkpoint-3


def test_a_complete_prediction_set_is_reported_complete(tmp_path, trained_run, pqal_path, caplog):
    run = copy_run(trained_run, tmp_path / "run")
    first = infer.main(*infer.parse_args(infer_args(run, pqal_path)))
    official = Path(first["files"]["official"])
    before = official.stat().st_mtime_ns
    caplog.set_level(logging.INFO)
    caplog.clear()
    again = infer.main(*infer.parse_args(infer_args(run, pqal_path)))
    assert "is complete" in caplog.text and official.stat().st_mtime_ns == before
    assert again["num_examples"] == first["num_examples"]


def test_the_final_save_cut_by_a_full_disk_leaves_no_half_file(tmp_path, tiny_llama, pqal_path, monkeypatch):
    out = tmp_path / "run"

    real = AnswerLossSFTTrainer.save_model

    def full_disk(self, output_dir=None, _internal_call=False):
        if not str(output_dir).endswith(STAGING):  # the checkpoints save as usual
            return real(self, output_dir, _internal_call)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "tokenizer.json").write_text('{"version": "1.0", "trunc')  # cut off mid-write
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "tokenizer.json"))

    monkeypatch.setattr(AnswerLossSFTTrainer, "save_model", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path)))
    assert not (out / "tokenizer.json").exists() and not (out / STAGING).exists()
    monkeypatch.undo()
    with pytest.raises(UsageError, match="interrupted training run"):  # one line, not a JSONDecodeError
        infer.main(*infer.parse_args(infer_args(out, pqal_path)))


def test_outputs_follow_the_umask(trained_run):
    mode = (trained_run / "adapter_model.safetensors").stat().st_mode & 0o777
    assert mode == (trained_run / "run_config.yaml").stat().st_mode & 0o777 != 0o600


def test_the_run_folder_card_is_ours(trained_run):
    card = (trained_run / "README.md").read_text()
    assert "fine-tuned on PubMedQA" in card and "[None]" not in card


# ------------------------------------------------------------------------------------------ one length policy


def long_item_csv(path: Path, pqal_path: Path, context_chars: int) -> Path:
    """A data set of its own (12 PubMedQA items as uid,query,passage,verdict) whose contexts are repeated to
    2,000 characters, the first one's to `context_chars`."""
    items = list(json.loads(pqal_path.read_text()).items())[:12]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uid", "query", "passage", "verdict"])
        for n, (pmid, item) in enumerate(items):
            context = " ".join(item["CONTEXTS"])
            length = context_chars if n == 0 else 2_000  # every item over 256 tokens, the first far over
            context = ((context + " ") * (length // len(context) + 1))[:length]
            writer.writerow([pmid, item["QUESTION"], context, item["final_decision"]])
    return path


SPEC = ["--split", "custom", "--id_column", "uid", "--question_column", "query", "--context_column", "passage",
        "--label_column", "verdict", "--test_size", "4", "--validation_size", "2"]  # fmt: skip


def test_an_oversized_context_is_cut_the_same_way_in_training_and_inference(tmp_path, tiny_llama, pqal_path):
    data = long_item_csv(tmp_path / "long.csv", pqal_path, 200_000)  # over csv's default field limit too
    examples = read_examples(data, None, {"id": "uid", "question": "query", "context": "passage",
                                          "final_decision": "verdict"})  # fmt: skip
    assert len(examples[0]["context"]) == 200_000
    out = tmp_path / "run"
    args = [*SPEC, "--dataset_path", str(data), "--max_length", "256", "--max_train_samples", "6"]
    metrics = train.main(*train.parse_args(train_args(tiny_llama, out, data, *args)))
    assert metrics["train_examples"] == 6  # none dropped
    meta = infer.main(*infer.parse_args(["--output_dir", str(out), "--eval_split", "train", "--batch_size", "2"]))
    rows = [json.loads(line) for line in Path(meta["files"]["rows"]).read_text().splitlines()]
    cut = [row["id"] for row in rows if row.get("truncated")]
    assert meta["max_length"] == 256 and meta["num_truncated"] == len(cut) >= 1
    assert metrics["train_truncated"] == 6


def test_an_item_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, tiny_llama, pqal_path):
    data = long_item_csv(tmp_path / "long.csv", pqal_path, 2_000)
    out = tmp_path / "run"
    args = [*SPEC, "--dataset_path", str(data), "--max_length", "8"]
    with pytest.raises(UsageError, match="needs more than max_length 8 tokens even without its context"):
        train.main(*train.parse_args(train_args(tiny_llama, out, data, *args)))
    assert not out.exists() or not any(p.name != ".run.lock" for p in out.iterdir())


# ---------------------------------------------------------------------------------------------- odd input


def test_a_byte_order_mark_is_read_and_bad_ids_and_questions_are_named(tmp_path):
    columns = {"id": "id", "question": "question", "context": "context", "final_decision": "label"}
    good = tmp_path / "bom.csv"
    good.write_text("\ufeffid,question,context,label\n1,Is it?,Some text.,yes\n2,Is it not?,Other text.,no\n")
    assert [e["id"] for e in read_examples(good, ("yes", "no"), columns)] == ["1", "2"]
    empty_id = tmp_path / "empty_id.csv"
    empty_id.write_text("id,question,context,label\n ,Is it?,Some text.,yes\n")
    with pytest.raises(DataError, match="row 1: empty id"):
        read_examples(empty_id, ("yes", "no"), columns)
    number = tmp_path / "number.json"
    number.write_text('[{"id": "1", "question": 42, "context": "Some text.", "final_decision": "yes"}]')
    with pytest.raises(DataError, match="the question is not text"):
        read_examples(number)


@pytest.mark.parametrize(
    "args, message",
    [
        (["infer.py", "--adapter_path", "user/..%2F..%2Fetc"], "no such folder, nor a Hub id"),
        (["-m", "domainqa.hub_upload", "outputs", "--hub_model_id", "../../evil", "--dry_run"],
         "--hub_model_id must be a Hub repository id"),
        (["train.py", "--hub_model_id", "../evil", "--push_to_hub", "true"], "hub_model_id must be a Hub repository"),
    ],
)  # fmt: skip
def test_bad_names_stop_in_one_line(args, message):
    done = run_script(*args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_recipe_or_run_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1,\n")
    done = run_script("train.py", str(bad))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "invalid YAML" in done.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    (run / "run_config.yaml").write_text("model_name_or_path: !!python/object/apply:os.system [echo]\n")
    done = run_script("infer.py", "--adapter_path", str(run))
    assert done.returncode == 2 and "run_config.yaml: unreadable" in done.stderr and "Traceback" not in done.stderr


def test_push_to_hub_offline_stops_before_training(tmp_path, tiny_llama, pqal_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    args = train_args(tiny_llama, out, pqal_path, "--push_to_hub", "true", "--hub_model_id", "me/run")
    done = run_script("train.py", *args)
    assert done.returncode == 2 and "--push_to_hub with HF_HUB_OFFLINE=1" in done.stderr
    assert not out.exists()


def test_sigterm_during_training_is_one_line(tmp_path, tiny_llama, pqal_path):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", *train_args(tiny_llama, out, pqal_path, "--max_steps", "200")]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not checkpoint_folders(out) and time.time() < deadline:  # training has started
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in err  # a progress bar may close after the line
    assert "train.py: terminated; what was saved is kept, rerun the same command to go on\n" in err


def test_allow_partial_marks_the_table(tmp_path, trained_run, pqal_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    meta = infer.main(*infer.parse_args(infer_args(run, pqal_path)))
    capsys.readouterr()
    args = ["--predictions", meta["files"]["official"], "--dataset_path", str(pqal_path), "--allow_partial", "true"]
    results = evaluate.main(*evaluate.parse_args(args))
    assert "(partial: 6 of 500 items, not comparable)" in capsys.readouterr().out
    assert next(iter(results.values()))["predictions_file"] == meta["files"]["official"]
