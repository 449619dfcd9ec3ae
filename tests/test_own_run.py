"""A run on a data set of one's own is an artifact that stands alone: infer.py --adapter_path RUN and evaluate.py
--predictions FILE need no recipe, domainqa.predict gives infer.py's scores, and the release names the user's task
and labels and ships no test labels unless asked."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import train
from domainqa import predict
from tests.helpers import REPO, train_args

VERDICTS = {"yes": "supported", "no": "refuted", "maybe": "unclear"}
SPEC = ["--split", "custom", "--id_column", "uid", "--question_column", "query", "--context_column", "passage",
        "--label_column", "verdict", "--labels", "supported", "refuted", "unclear", "--test_size", "8",
        "--validation_size", "4"]  # fmt: skip


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, tiny_llama, pqal_path) -> tuple[Path, Path]:
    """40 PubMedQA items as a claim-verification task (uid,query,passage,verdict: supported/refuted/unclear),
    trained for 2 steps."""
    folder = tmp_path_factory.mktemp("own")
    data = folder / "claims.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uid", "query", "passage", "verdict"])
        for pmid, item in list(json.loads(pqal_path.read_text()).items())[:40]:
            writer.writerow([pmid, item["QUESTION"], " ".join(item["CONTEXTS"]), VERDICTS[item["final_decision"]]])
    run = folder / "run"
    train.main(*train.parse_args(train_args(tiny_llama, run, data, *SPEC)))
    return data, run


def test_infer_and_evaluate_need_no_recipe(own_run):
    data, run = own_run
    done = run_script("infer.py", "--adapter_path", str(run))
    assert done.returncode == 0, done.stderr
    meta = json.loads((run / "predictions_custom_test_score.meta.json").read_text())
    assert meta["num_examples"] == 8 and meta["labels"] == ["supported", "refuted", "unclear"]
    assert meta["dataset_path"] == str(data) and meta["zero_shot"] is False
    official = run / "predictions_custom_test_score.json"
    elsewhere = run.parent  # evaluate.py from another folder, with nothing but the file
    done = run_script(str(REPO / "evaluate.py"), "--predictions", str(official), "--output_file", "m.json",
                      cwd=elsewhere)  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((elsewhere / "m.json").read_text())
    assert set(metrics["per_class"]) == {"supported", "refuted", "unclear"} and metrics["num_unparsed"] == 0
    assert metrics["predictions_file"] == str(official)


def test_predict_gives_the_scores_of_infer(own_run):
    data, run = own_run
    done = run_script("infer.py", "--adapter_path", str(run))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (run / "predictions_custom_test_score.jsonl").read_text().splitlines()]
    with data.open(newline="") as f:
        items = {row["uid"]: row for row in csv.DictReader(f)}
    for row in rows[:3]:
        item = items[row["id"]]
        scores = predict(str(run), question=item["query"], context=item["passage"])
        assert scores["prediction"] == row["prediction"]
        assert scores["label_logprobs"] == pytest.approx(row["label_logprobs"], abs=1e-5)


def test_the_release_names_the_task_and_keeps_the_test_labels_home(own_run):
    data, run = own_run
    assert run_script("infer.py", "--adapter_path", str(run)).returncode == 0
    done = run_script("-m", "domainqa.hub_upload", str(run), "--hub_model_id", "me/claims", "--dry_run")
    assert done.returncode == 0, done.stderr
    card, files = done.stdout.split("would upload:", 1)
    assert "fine-tuned on claims.csv" in card and "supported, refuted, unclear" in card
    assert "PubMedQA" not in card.split("## Data, licence")[0] and "pubmedqa" not in card.split("---")[1]
    assert "predictions_" not in files and "run_config.yaml" in files
    config = subprocess.run(
        [sys.executable, "-c", "import sys; from domainqa.hub_upload import release_files; "
         "sys.stdout.buffer.write(release_files(sys.argv[1])['run_config.yaml'])", str(run)],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    assert str(data.parent) not in config and "dataset_path: claims.csv" in config
