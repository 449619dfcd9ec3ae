"""Calibrated label scoring: the fit maximises macro-F1 exactly as scikit-learn computes it, is never fitted
on test items, and infer.py writes calibrated predictions beside the raw ones."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score

import calibrate
import infer
import train
from domainqa.calibration import _macro_f1, calibrate_rows, fit_label_bias
from domainqa.config import UsageError
from domainqa.data import LABELS, load_task_data
from tests.helpers import REPO, train_args


def test_vectorised_macro_f1_equals_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 40)
    predicted = rng.integers(0, 3, (25, 40))
    predicted[0] = 0  # a row that predicts one label only
    expected = [f1_score(truth, row, average="macro") for row in predicted]
    np.testing.assert_allclose(_macro_f1(truth, predicted), expected)


def test_bias_recovers_an_under_scored_label():
    rng = np.random.default_rng(1)
    truth = rng.choice(LABELS, 300, p=[0.5, 0.3, 0.2]).tolist()
    scores = rng.normal(0, 0.3, (300, 3))
    for i, label in enumerate(truth):
        scores[i, LABELS.index(label)] += 1.0
    scores[:, 2] -= 3.0  # "maybe" never wins uncalibrated
    raw = scores.argmax(1)
    bias = fit_label_bias(scores, truth)
    assert bias["yes"] == 0 and 2.0 < bias["maybe"] < 4.0
    calibrated = (scores + np.array([bias[label] for label in LABELS])).argmax(1)
    truth_ids = [LABELS.index(t) for t in truth]
    assert f1_score(truth_ids, calibrated, average="macro") > f1_score(truth_ids, raw, average="macro") + 0.2


def test_cross_validated_predictions_use_biases_fitted_without_their_fold():
    from domainqa.calibration import cross_validated_predictions

    rng = np.random.default_rng(2)
    truth = rng.choice(LABELS, 50, p=[0.6, 0.3, 0.1]).tolist()
    scores = rng.normal(0, 1, (50, 3))
    scores[:, 2] -= 2.0
    predicted = cross_validated_predictions(scores, truth, folds=5)
    for fold in range(5):
        held_out = [i for i in range(50) if i % 5 == fold]
        rest = [i for i in range(50) if i % 5 != fold]
        bias = fit_label_bias(scores[rest], [truth[i] for i in rest])
        expected = (scores[held_out] + np.array([bias[label] for label in LABELS])).argmax(1)
        assert [predicted[i] for i in held_out] == [LABELS[k] for k in expected]


def _scored_rows(path, items):
    rows = [{"id": e["id"], "prediction": "yes", "label_logprobs": {"yes": -0.5, "no": -1.0, "maybe": -3.0}}
            for e in items]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_calibration_on_test_items_is_refused(tmp_path, pqal_path):
    test_items = load_task_data(str(pqal_path))["test"][:20]
    predictions = _scored_rows(tmp_path / "predictions_paper_test_score.jsonl", test_items)
    with pytest.raises(UsageError, match="must not be fitted on test items; 20 given"):
        calibrate.main(*calibrate.parse_args(["--predictions", str(predictions), "--dataset_path", str(pqal_path)]))
    assert not (tmp_path / "calibration.json").exists()
    # The command line says so in one line and exits 2.
    done = subprocess.run([sys.executable, "calibrate.py", "--predictions", str(predictions), "--dataset_path",
                           str(pqal_path)], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "must not be fitted on test items" in done.stderr


def test_infer_writes_calibrated_predictions_beside_raw(tmp_path, tiny_llama, pqal_path):
    out = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path)))
    common = ["--output_dir", str(out), "--dataset_path", str(pqal_path), "--batch_size", "4"]
    infer.main(*infer.parse_args([*common, "--eval_split", "validation", "--max_eval_samples", "12"]))
    calibration = calibrate.main(
        *calibrate.parse_args(
            ["--predictions", str(out / "predictions_paper_validation_score.jsonl"), "--dataset_path", str(pqal_path)]
        )
    )
    saved = json.loads((out / "calibration.json").read_text())
    validation_ids = [e["id"] for e in load_task_data(str(pqal_path))["validation"][:12]]
    assert saved["fitted_on"] == "validation" and saved["ids"] == validation_ids
    assert saved["calibrated"]["macro_f1"] >= saved["raw"]["macro_f1"]
    assert 0 <= saved["cross_validated"]["macro_f1"] <= saved["calibrated"]["macro_f1"] + 1e-9

    infer.main(*infer.parse_args([*common, "--max_eval_samples", "8"]))
    raw_rows = [json.loads(line) for line in (out / "predictions_paper_test_score.jsonl").read_text().splitlines()]
    calibrated = json.loads((out / "predictions_paper_test_score_calibrated.json").read_text())
    expected = {r["id"]: r["prediction"] for r in calibrate_rows(raw_rows, calibration["bias"])}
    assert calibrated == expected and set(calibrated) == {r["id"] for r in raw_rows}
    assert not set(calibrated) & set(validation_ids)
    meta = json.loads((out / "predictions_paper_test_score_calibrated.meta.json").read_text())
    assert meta["calibration"]["bias"] == calibration["bias"]

    # Predicting the very items the calibration was fitted on gives raw predictions only.
    (out / "predictions_paper_validation_score_calibrated.json").unlink(missing_ok=True)
    infer.main(*infer.parse_args([*common, "--eval_split", "validation", "--max_eval_samples", "12"]))
    assert not (out / "predictions_paper_validation_score_calibrated.json").exists()
