"""Calibrated label scoring: one additive bias per label on the label log-likelihoods, fitted on training or
validation items only, saved in the run folder and applied by infer.py beside the raw scores.

Small models put most of their mass on one or two labels ("maybe" is almost never the most likely), so the
arg-max of the raw scores under-predicts the rare labels; a per-label offset chosen to maximise macro-F1 on
held-out items moves the decision boundaries without touching the model (as in contextual calibration,
Zhao et al. 2021, but fitted on labelled items)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import UsageError
from .data import LABELS, Example
from .io import atomic_write_json
from .metrics import official_scores
from .run_folder import CALIBRATION

CALIBRATION_FILE = CALIBRATION
# Biases of "no" and "maybe" relative to "yes" (fixed at 0), in nats; a finer grid only fits noise.
BIAS_GRID = np.round(np.arange(-8.0, 8.0001, 0.1), 1)


def _macro_f1(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro-F1 over the labels that occur in truth or prediction, for a batch of prediction rows
    (as scikit-learn's f1_score(average="macro"), vectorised over the rows)."""
    f1s, present = [], []
    for k in range(len(LABELS)):
        is_true, is_pred = truth == k, predicted == k
        tp = (is_pred & is_true).sum(-1)
        denominator = is_pred.sum(-1) + is_true.sum()
        f1s.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
        present.append(denominator > 0)
    return np.sum(f1s, axis=0) / np.maximum(np.sum(present, axis=0), 1)


def fit_label_bias(scores: np.ndarray, truth: list[str]) -> dict[str, float]:
    """The per-label biases that maximise macro-F1 (then accuracy, then the smallest shift) on these items.

    `scores` is (items, labels) in the order of LABELS."""
    truth_ids = np.array([LABELS.index(t) for t in truth])
    no_bias, maybe_bias = np.meshgrid(BIAS_GRID, BIAS_GRID, indexing="ij")
    biases = np.stack([np.zeros(no_bias.size), no_bias.ravel(), maybe_bias.ravel()], axis=1)  # (grid, labels)
    predicted = (scores[None, :, :] + biases[:, None, :]).argmax(-1)  # (grid, items)
    macro_f1 = _macro_f1(truth_ids, predicted)
    accuracy = (predicted == truth_ids).mean(-1)
    shift = np.abs(biases).sum(-1)
    best = np.lexsort((shift, -accuracy, -macro_f1))[0]
    return {label: float(b) for label, b in zip(LABELS, biases[best], strict=True)}


def score_matrix(rows: list[dict]) -> np.ndarray:
    return np.array([[row["label_logprobs"][label] for label in LABELS] for row in rows])


def calibrate_rows(rows: list[dict], bias: dict[str, float]) -> list[dict]:
    """The rows with `prediction` re-decided on biased scores (the raw scores stay in `label_logprobs`)."""
    out = []
    for row in rows:
        shifted = {label: row["label_logprobs"][label] + bias[label] for label in LABELS}
        out.append({**row, "prediction": max(LABELS, key=shifted.__getitem__), "calibration_bias": bias})
    return out


def fit_calibration(rows: list[dict], items: list[Example], fitted_on: str, test_ids: set[str]) -> dict:
    """Fit on scored `rows` of `items`, refusing any test item: a calibration fitted on the items it is
    scored on would report a number no user could reproduce on new data."""
    leaked = sorted({str(e["id"]) for e in items} & test_ids)
    if leaked:
        raise UsageError(f"calibration must not be fitted on test items; {len(leaked)} given: {', '.join(leaked[:5])}")
    by_id = {row["id"]: row for row in rows}
    ordered = [by_id[e["id"]] for e in items]
    truth = [e["final_decision"] for e in items]
    scores = score_matrix(ordered)
    bias = fit_label_bias(scores, truth)
    calibrated = [r["prediction"] for r in calibrate_rows(ordered, bias)]
    return {
        "bias": bias,
        "fitted_on": fitted_on,
        "num_examples": len(items),
        "ids": [e["id"] for e in items],
        "raw": official_scores(truth, [r["prediction"] for r in ordered]),
        "calibrated": official_scores(truth, calibrated),  # in-sample: optimistic
        "cross_validated": official_scores(truth, cross_validated_predictions(scores, truth)),
    }


def cross_validated_predictions(scores: np.ndarray, truth: list[str], folds: int = 5) -> list[str]:
    """Each item decided with biases fitted on the other folds: an honest estimate, on the fitting items
    themselves, of what the calibration does to items it has not seen (so raw and calibrated scoring can be
    compared on validation data without touching the test items)."""
    fold_of = np.arange(len(truth)) % folds
    predicted = [""] * len(truth)
    for fold in range(folds):
        held_out = np.flatnonzero(fold_of == fold)
        rest = np.flatnonzero(fold_of != fold)
        bias = fit_label_bias(scores[rest], [truth[i] for i in rest])
        shifted = scores[held_out] + np.array([bias[label] for label in LABELS])
        for i, best in zip(held_out, shifted.argmax(1), strict=True):
            predicted[i] = LABELS[best]
    return predicted


def save_calibration(folder: str | Path, calibration: dict) -> None:
    atomic_write_json(Path(folder) / CALIBRATION_FILE, calibration)


def load_calibration(folder: str | Path) -> dict | None:
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
        bias = {label: float(calibration["bias"][label]) for label in LABELS}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: not a calibration file ({e})") from None
    return {**calibration, "bias": bias}
