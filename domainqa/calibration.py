"""Calibrated label scoring: one additive bias per label on the label log-likelihoods, fitted on training or
validation items only, saved in the run folder and applied by infer.py beside the raw scores. The labels are
the task's label set (PubMedQA's yes/no/maybe by default).

Small models put most of their mass on one or two labels ("maybe" is almost never the most likely), so the
arg-max of the raw scores under-predicts the rare labels; a per-label offset chosen to maximise macro-F1 on
held-out items moves the decision boundaries without touching the model (as in contextual calibration,
Zhao et al. 2021, but fitted on labelled items)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import UsageError
from .data import LABELS, Example
from .io import atomic_write_json
from .metrics import official_scores
from .run_folder import CALIBRATION

CALIBRATION_FILE = CALIBRATION
# Biases of the other labels relative to the first ("no" and "maybe" relative to "yes", fixed at 0), in nats;
# a finer grid only fits noise.
BIAS_GRID = np.round(np.arange(-8.0, 8.0001, 0.1), 1)
# Up to this many labels every combination of biases is tried (161^2 for three); above, one label at a time.
EXHAUSTIVE_LABELS = 3
COORDINATE_ROUNDS = 10


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, num_labels: int = len(LABELS)) -> np.ndarray:
    """Macro-F1 over the labels that occur in truth or prediction, for a batch of prediction rows
    (as scikit-learn's f1_score(average="macro"), vectorised over the rows)."""
    f1s, present = [], []
    for k in range(num_labels):
        is_true, is_pred = truth == k, predicted == k
        tp = (is_pred & is_true).sum(-1)
        denominator = is_pred.sum(-1) + is_true.sum()
        f1s.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
        present.append(denominator > 0)
    return np.sum(f1s, axis=0) / np.maximum(np.sum(present, axis=0), 1)


def _best_biases(scores: np.ndarray, truth_ids: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """The row of `biases` (candidates, labels) with the best macro-F1, then accuracy, then smallest shift."""
    predicted = (scores[None, :, :] + biases[:, None, :]).argmax(-1)  # (candidates, items)
    macro_f1 = _macro_f1(truth_ids, predicted, scores.shape[1])
    accuracy = (predicted == truth_ids).mean(-1)
    shift = np.abs(biases).sum(-1)
    return biases[np.lexsort((shift, -accuracy, -macro_f1))[0]]


def fit_label_bias(scores: np.ndarray, truth: list[str], labels: Sequence[str] = LABELS) -> dict[str, float]:
    """The per-label biases that maximise macro-F1 (then accuracy, then the smallest shift) on these items.

    `scores` is (items, labels) in the order of `labels`. Up to three labels every combination on the grid is
    tried; with more, each label's bias in turn (coordinate ascent from no bias)."""
    labels = list(labels)
    truth_ids = np.array([labels.index(t) for t in truth])
    others = len(labels) - 1
    if len(labels) <= EXHAUSTIVE_LABELS:
        grids = np.meshgrid(*[BIAS_GRID] * others, indexing="ij")
        biases = np.stack([np.zeros(grids[0].size)] + [g.ravel() for g in grids], axis=1)  # (grid, labels)
        best = _best_biases(scores, truth_ids, biases)
    else:
        best = np.zeros(len(labels))
        for _ in range(COORDINATE_ROUNDS):
            before = best.copy()
            for k in range(1, len(labels)):
                candidates = np.repeat(best[None, :], len(BIAS_GRID), axis=0)
                candidates[:, k] = BIAS_GRID
                best = _best_biases(scores, truth_ids, np.vstack([best[None, :], candidates]))
            if np.array_equal(best, before):
                break
    return {label: float(b) for label, b in zip(labels, best, strict=True)}


def score_matrix(rows: list[dict], labels: Sequence[str] = LABELS) -> np.ndarray:
    return np.array([[row["label_logprobs"][label] for label in labels] for row in rows])


def calibrate_rows(rows: list[dict], bias: dict[str, float]) -> list[dict]:
    """The rows with `prediction` re-decided on biased scores (the raw scores stay in `label_logprobs`); the
    labels are those of `bias`."""
    out = []
    for row in rows:
        shifted = {label: row["label_logprobs"][label] + b for label, b in bias.items()}
        out.append({**row, "prediction": max(bias, key=shifted.__getitem__), "calibration_bias": bias})
    return out


def fit_calibration(
    rows: list[dict], items: list[Example], fitted_on: str, test_ids: set[str], labels: Sequence[str] = LABELS
) -> dict:
    """Fit on scored `rows` of `items`, refusing any test item: a calibration fitted on the items it is
    scored on would report a number no user could reproduce on new data."""
    leaked = sorted({str(e["id"]) for e in items} & test_ids)
    if leaked:
        raise UsageError(f"calibration must not be fitted on test items; {len(leaked)} given: {', '.join(leaked[:5])}")
    by_id = {row["id"]: row for row in rows}
    ordered = [by_id[e["id"]] for e in items]
    truth = [e["final_decision"] for e in items]
    scored = set(ordered[0]["label_logprobs"])
    if scored != set(labels):
        raise UsageError(f"the rows are scored over {', '.join(sorted(scored))}, the task's labels are "
                         f"{', '.join(labels)}")  # fmt: skip
    scores = score_matrix(ordered, labels)
    bias = fit_label_bias(scores, truth, labels)
    calibrated = [r["prediction"] for r in calibrate_rows(ordered, bias)]
    return {
        "bias": bias,
        "fitted_on": fitted_on,
        "num_examples": len(items),
        "ids": [e["id"] for e in items],
        "raw": official_scores(truth, [r["prediction"] for r in ordered]),
        "calibrated": official_scores(truth, calibrated),  # in-sample: optimistic
        "cross_validated": official_scores(truth, cross_validated_predictions(scores, truth, labels=labels)),
    }


def cross_validated_predictions(
    scores: np.ndarray, truth: list[str], folds: int = 5, labels: Sequence[str] = LABELS
) -> list[str]:
    """Each item decided with biases fitted on the other folds: an honest estimate, on the fitting items
    themselves, of what the calibration does to items it has not seen (so raw and calibrated scoring can be
    compared on validation data without touching the test items)."""
    fold_of = np.arange(len(truth)) % folds
    predicted = [""] * len(truth)
    for fold in range(folds):
        held_out = np.flatnonzero(fold_of == fold)
        rest = np.flatnonzero(fold_of != fold)
        bias = fit_label_bias(scores[rest], [truth[i] for i in rest], labels)
        shifted = scores[held_out] + np.array([bias[label] for label in labels])
        for i, best in zip(held_out, shifted.argmax(1), strict=True):
            predicted[i] = labels[best]
    return predicted


def save_calibration(folder: str | Path, calibration: dict) -> None:
    atomic_write_json(Path(folder) / CALIBRATION_FILE, calibration)


def load_calibration(folder: str | Path, labels: Sequence[str] = LABELS) -> dict | None:
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
        bias = {label: float(calibration["bias"][label]) for label in labels}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: not a calibration file ({e})") from None
    return {**calibration, "bias": bias}
