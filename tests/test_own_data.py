"""A data set of one's own: PubMedQA's yes/no items re-exported by scripts/export_yesno_csv.py as CSV files with
other column names (pmid, query, passage, conclusion, answer) and the label set yes/no, a binary task of
another shape. It goes through augment (the fake OpenAI server), train.py, infer.py (score and generate),
calibrate.py and evaluate.py with only a recipe; every bad spec stops the real scripts with one line."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import calibrate
import evaluate
import infer
import train
from augment.__main__ import main as augment_main
from augment.prompts import build_messages, output_schema, parse_output
from domainqa.calibration import fit_label_bias
from domainqa.config import parse_args
from domainqa.data_spec import DataSpec, load_parts
from domainqa.prompts import PromptFormat, parse_answer
from domainqa.run_folder import DATA_SPLIT, RUN_CONFIG
from tests.helpers import REPO
from tests.openai_server import FakeOpenAI

RECIPE = REPO / "recipes" / "own-data" / "smollm2-135m-yesno-csv.yaml"
AUGMENT_RECIPE = REPO / "recipes" / "own-data" / "augment-yesno-csv.yaml"
SPEC = {
    "split": "custom",
    "id_column": "pmid",
    "question_column": "query",
    "context_column": "passage",
    "long_answer_column": "conclusion",
    "label_column": "answer",
}
TRAIN_ROWS, TEST_ROWS = 30, 8


def _export_module():
    spec = importlib.util.spec_from_file_location("export_yesno_csv", REPO / "scripts" / "export_yesno_csv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pqal_path) -> Path:
    """The whole export, as a user makes it."""
    folder = tmp_path_factory.mktemp("pubmedqa-yesno")
    written = _export_module().export(str(pqal_path), folder)
    assert written == {"train": 434, "test": 456}  # PQA-L's yes/no items: 552 yes + 338 no
    return folder


@pytest.fixture(scope="module")
def yesno(exported, tmp_path_factory) -> dict[str, Path]:
    """A slice of the export for quick runs: the first training and test rows."""
    folder = tmp_path_factory.mktemp("yesno-small")
    return {
        "train": write_csv(folder / "train.csv", read_csv(exported / "train.csv")[:TRAIN_ROWS]),
        "test": write_csv(folder / "test.csv", read_csv(exported / "test.csv")[:TEST_ROWS]),
    }


def write_recipe(path: Path, **keys) -> Path:
    """A recipe as a user writes it: labels in YAML's plain [yes, no]."""
    labels = keys.pop("labels", "[yes, no]")
    text = yaml.safe_dump(keys, sort_keys=False) + (f"labels: {labels}\n" if labels else "")
    path.write_text(text, encoding="utf-8")
    return path


def pipeline_recipe(tmp_path: Path, yesno: dict, model: Path, out: Path, **extra) -> Path:
    keys = {
        "model_name_or_path": str(model), **SPEC, "dataset_path": str(yesno["train"]), "test_data": str(yesno["test"]),
        "validation_size": 6, "split_seed": 1, "output_dir": str(out), "max_steps": 2,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 1.0e-3,
        "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 4,
        "report_to": "none", "batch_size": 4, **extra,
    }  # fmt: skip
    return write_recipe(tmp_path / "recipe.yaml", **keys)


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------ the pipeline


def test_a_csv_of_ones_own_goes_through_augment_train_infer_calibrate_evaluate(tmp_path, yesno, tiny_llama,
                                                                               monkeypatch, capsys):  # fmt: skip
    # augment: the prompts and the schema ask for yes or no, and every output keeps its source's label
    augmented = tmp_path / "augmented"
    augment_recipe = write_recipe(
        tmp_path / "augment.yaml", strategy="rewrite", **SPEC, dataset_path=str(yesno["train"]),
        test_data=str(yesno["test"]), validation_size=6, split_seed=1, output_dir=str(augmented), max_sources=4,
    )  # fmt: skip
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        assert augment_main([str(augment_recipe), "--base_url", server.base_url, "--backoff_base", "0.01"]) == 0
        schemas = [f["json_schema"]["schema"] for f in server.response_formats]
    progress = capsys.readouterr().err  # the progress bar of the requests
    assert "augment: 100%" in progress and "4/4" in progress
    assert schemas and all(s["properties"]["final_decision"]["enum"] == ["yes", "no"] for s in schemas)
    summary = json.loads((augmented / "summary.json").read_text())
    assert summary["labels"] == ["yes", "no"] and summary["accepted"] == 4
    sources = {r["pmid"]: r["answer"] for r in read_csv(yesno["train"])}
    augmented_rows = rows_of(augmented / "data.jsonl")
    assert [r["answer"] for r in augmented_rows] == [sources[r["source_id"]] for r in augmented_rows]
    card = (augmented / "README.md").read_text()
    assert "`answer` (yes/no)" in card and "- Decisions: yes: " in card and "maybe" not in card

    # train on the augmented rows; validation items are held out of the CSV by the seed
    out = tmp_path / "run"
    recipe = pipeline_recipe(tmp_path, yesno, tiny_llama, out, train_data=str(augmented))
    metrics = train.main(*train.parse_args([str(recipe)]))
    assert metrics["train_examples"] == 4
    config = yaml.safe_load((out / RUN_CONFIG).read_text())
    assert config["labels"] == ["yes", "no"] and config["split"] == "custom" and config["label_column"] == "answer"
    recorded = json.loads((out / DATA_SPLIT).read_text())
    assert recorded["labels"] == ["yes", "no"] and recorded["split_seed"] == 1 and len(recorded["validation"]) == 6
    assert recorded["test"] == [r["pmid"] for r in read_csv(yesno["test"])]
    evaluations = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in e]
    assert evaluations and {"eval_share_yes", "eval_share_no"} <= set(evaluations[-1])
    assert "eval_share_maybe" not in evaluations[-1]

    # infer: label scoring over yes/no, generation parsed against yes/no; the label set comes from the run
    infer.main(*infer.parse_args([str(recipe)]))
    scored = rows_of(out / "predictions_custom_test_score.jsonl")
    assert len(scored) == TEST_ROWS and all(set(r["label_logprobs"]) == {"yes", "no"} for r in scored)
    meta = infer.main(
        *infer.parse_args([str(recipe), "--mode", "generate", "--max_new_tokens", "4", "--num_beams", "2"])
    )
    assert meta["labels"] == ["yes", "no"] and meta["unparsed_fallback"] == "yes"  # no "maybe" in this set
    generated = json.loads((out / "predictions_custom_test_generate.json").read_text())
    assert len(generated) == TEST_ROWS and set(generated.values()) <= {"yes", "no"}

    # calibrate on the validation items, then the test predictions come calibrated too
    infer.main(*infer.parse_args([str(recipe), "--eval_split", "validation"]))
    calibration = calibrate.main(
        *calibrate.parse_args([str(recipe), "--predictions", str(out / "predictions_custom_validation_score.jsonl")])
    )
    assert set(calibration["bias"]) == {"yes", "no"} and calibration["bias"]["yes"] == 0
    infer.main(*infer.parse_args([str(recipe)]))
    calibrated = json.loads((out / "predictions_custom_test_score_calibrated.json").read_text())
    assert len(calibrated) == TEST_ROWS and set(calibrated.values()) <= {"yes", "no"}

    # evaluate: accuracy and macro-F1 over yes/no, against the CSV's own test items
    result_file = tmp_path / "metrics.json"
    evaluate.main(*evaluate.parse_args([str(recipe), "--predictions", str(out / "predictions_custom_test_score.json"),
                   "--output_file", str(result_file)]))  # fmt: skip
    result = json.loads(result_file.read_text())
    assert result["num_examples"] == TEST_ROWS and list(result["per_class"]) == ["yes", "no"]
    assert result["confusion_matrix"]["labels"] == ["yes", "no"]
    assert np.array(result["confusion_matrix"]["rows_true_cols_predicted"]).sum() == TEST_ROWS
    truth = [r["answer"] for r in read_csv(yesno["test"])]
    assert result["per_class"]["yes"]["support"] == truth.count("yes")


def test_a_classifier_head_follows_the_label_set(tmp_path, yesno, tiny_bert):
    out = tmp_path / "run"
    recipe = pipeline_recipe(tmp_path, yesno, tiny_bert, out, task_type="sequence_classification")
    train.main(*train.parse_args([str(recipe)]))
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert yaml.safe_load((out / RUN_CONFIG).read_text())["labels"] == ["yes", "no"]
    infer.main(*infer.parse_args([str(recipe)]))
    rows = rows_of(out / "predictions_custom_test_score.jsonl")
    assert len(rows) == TEST_ROWS and all(list(r["label_logprobs"]) == ["yes", "no"] for r in rows)
    assert {r["prediction"] for r in rows} <= {"yes", "no"}


# ------------------------------------------------------------------------------------- the spec, in parts


def test_the_example_recipe_reads_the_exported_files(exported):
    """recipes/own-data: its spec reads the script's CSV (paths moved to where the export went)."""
    from domainqa.arguments import DataArguments, pipeline_keys

    (data_args,) = parse_args(DataArguments, args=[str(RECIPE)], shared_keys=pipeline_keys())
    assert data_args.labels == ["yes", "no"] and data_args.split == "custom"
    data_args.dataset_path = str(exported / Path(data_args.dataset_path).name)
    data_args.test_data = str(exported / Path(data_args.test_data).name)
    task = load_parts(data_args)
    assert [len(task[p]) for p in ("train", "validation", "test")] == [391, 43, 456]
    assert task["test"][0]["id"] == read_csv(exported / "test.csv")[0]["pmid"]
    assert {e["final_decision"] for part in task.parts.values() for e in part} == {"yes", "no"}
    (augment_args,) = parse_args(*_augment_classes(), args=[str(AUGMENT_RECIPE)])
    assert {k: getattr(augment_args, k) for k in SPEC} == {k: getattr(data_args, k) for k in SPEC}


def _augment_classes():
    from augment.arguments import AugmentArguments

    return (AugmentArguments,)


def test_a_label_set_read_off_the_data_and_a_seeded_split(yesno):
    spec = DataSpec(dataset_path=str(yesno["train"]), **SPEC, test_size=0.2, validation_size=0.1, split_seed=3)
    task = load_parts(spec)
    assert task.labels == ("yes", "no") and spec.labels == ["yes", "no"]  # PubMedQA's order, recorded
    ids = {part: [e["id"] for e in task[part]] for part in ("train", "validation", "test")}
    assert [len(v) for v in ids.values()] == [22, 2, 6] and len(set(sum(ids.values(), []))) == TRAIN_ROWS
    order = [r["pmid"] for r in read_csv(yesno["train"])]
    assert ids["test"] == sorted(ids["test"], key=order.index)  # file order kept inside a part
    again = load_parts(DataSpec(dataset_path=str(yesno["train"]), **SPEC, test_size=0.2, split_seed=3))
    assert [e["id"] for e in again["test"]] == ids["test"]
    other = load_parts(DataSpec(dataset_path=str(yesno["train"]), **SPEC, test_size=0.2, split_seed=4))
    assert [e["id"] for e in other["test"]] != ids["test"]


def test_labels_keep_the_spelling_of_the_set(tmp_path, yesno):
    rows = read_csv(yesno["train"])
    for row in rows:
        row["answer"] = {"yes": "Relevant", "no": "IRRELEVANT"}[row["answer"]]
    path = write_csv(tmp_path / "relevance.csv", rows)
    task = load_parts(DataSpec(dataset_path=str(path), **SPEC, labels=["relevant", "irrelevant"]))
    assert {e["final_decision"] for e in task["train"]} == {"relevant", "irrelevant"}
    with pytest.raises(ValueError, match="differ only in case"):
        rows[0]["answer"] = "relevant"
        load_parts(DataSpec(dataset_path=str(write_csv(tmp_path / "mixed.csv", rows)), **SPEC))


def test_prompts_parsing_and_schema_follow_the_label_set():
    labels = ("relevant", "irrelevant")
    example = {"id": "1", "question": "Is it about X?", "context": "X.", "long_answer": "It is.",
               "final_decision": "irrelevant"}  # fmt: skip
    fmt = PromptFormat("biogpt", labels=labels)
    assert fmt.completion(example) == " the answer to the question given the context is irrelevant."
    assert parse_answer("The answer is Irrelevant.", labels) == "irrelevant"
    assert parse_answer("relevant, though partly irrelevant", labels) == "relevant"  # the first word decides
    assert parse_answer("yes", labels) is None and parse_answer("no", ("yes", "no")) == "no"
    assert parse_answer("The answer is (B).", ("A", "B", "C", "D")) == "B"
    schema = output_schema("new", labels=labels)
    assert schema["properties"]["final_decision"]["enum"] == list(labels)
    user = build_messages("verify", example, labels)[1]["content"]
    assert 'one of "relevant" or "irrelevant"' in user and "maybe" not in user
    parsed = parse_output('{"question": "q", "context": "c", "long_answer": "a", "final_decision": "Relevant"}',
                          labels)  # fmt: skip
    assert parsed["final_decision"] == "relevant"
    assert parse_output('{"final_decision": "maybe"}', labels)["final_decision"] is None


@pytest.mark.parametrize("labels", [("yes", "no"), ("A", "B", "C", "D")])
def test_calibration_fits_any_number_of_labels(labels):
    rng = np.random.default_rng(0)
    truth = rng.choice(labels, 200).tolist()
    scores = rng.normal(size=(200, len(labels)))
    for i, label in enumerate(truth):
        scores[i, labels.index(label)] += 1.5
    scores[:, -1] -= 4.0  # the last label never wins uncalibrated
    bias = fit_label_bias(scores, truth, labels)
    assert list(bias) == list(labels) and bias[labels[0]] == 0 and bias[labels[-1]] > 2
    shifted = (scores + np.array(list(bias.values()))).argmax(1)
    assert (shifted == len(labels) - 1).sum() > 0


# ------------------------------------------------------------------------------ every bad spec, one line


def _bad_spec_cases(folder: Path, yesno: dict) -> dict[str, tuple[list[str], str]]:
    """{case: (command, what stderr must say)}: each recipe is wrong in one way."""
    model = folder / "no-model-here"  # an empty folder: loading a model from it would fail otherwise
    model.mkdir(exist_ok=True)
    base = {"model_name_or_path": str(model), **SPEC, "dataset_path": str(yesno["train"]),
            "test_data": str(yesno["test"]), "validation_size": 6}  # fmt: skip
    rows = read_csv(yesno["train"])
    bad_label = write_csv(folder / "bad-label.csv", rows[:2] + [{**rows[2], "answer": "maybe"}] + rows[3:])
    test_row = read_csv(yesno["test"])[0]
    leaking = write_csv(folder / "leaking.csv", rows + [{**test_row, "pmid": "x1"}])
    predictions = folder / "predictions.json"
    predictions.write_text(json.dumps({r["pmid"]: "yes" for r in read_csv(yesno["test"])}))

    def recipe(name: str, **keys) -> str:
        keys = {**base, "output_dir": str(folder / name), **keys}
        if name == "augment":  # augment's recipe has augment's keys only
            del keys["model_name_or_path"]
        return str(write_recipe(folder / f"{name}.yaml", **keys))

    return {
        "missing column": (
            ["train.py", recipe("missing-column", question_column="question_text")],
            "train.csv: no column 'question_text' (question_column); its columns are pmid, query, passage, "
            "conclusion, answer",
        ),
        "label outside the set": (
            ["infer.py", recipe("bad-label", dataset_path=str(bad_label))],
            f"{bad_label}, row 3: answer 'maybe' is not one of yes, no",
        ),
        "empty split": (
            ["evaluate.py", recipe("empty-split", validation_size=0.01), "--predictions", str(predictions)],
            f"{yesno['train']}: the validation part is empty (validation_size 0.01 of {TRAIN_ROWS} items)",
        ),
        "test item in the training data": (
            ["train.py", recipe("leak", dataset_path=str(leaking))],
            f"{leaking}: 1 training row(s) are, or come from, test items: {test_row['pmid']}",
        ),
        "spec without split custom": (
            ["calibrate.py", recipe("no-custom", split="paper"), "--predictions", str(predictions)],
            "question_column describes your own data set: add split: custom (now split paper)",
        ),
        "augment, missing column": (
            ["-m", "augment", recipe("augment", label_column="verdict")],
            "no column 'verdict' (label_column)",
        ),
    }


CASES = ["missing column", "label outside the set", "empty split", "test item in the training data",
         "spec without split custom", "augment, missing column"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_every_bad_spec_is_one_line_and_exit_status_2_before_a_model_loads(case, tmp_path, yesno):
    command, message = _bad_spec_cases(tmp_path, yesno)[case]
    env = {**os.environ, "OPENAI_API_KEY": "unused"}
    done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    err = done.stderr.strip()
    assert done.returncode == 2, err[-3000:]
    assert "\n" not in err and "Traceback" not in err and "error: " in err, err[-3000:]
    assert message in err, err
    written = [p.name for p in tmp_path.iterdir() if p.is_dir()]  # no output folder was made
    assert written == ["no-model-here"], written
