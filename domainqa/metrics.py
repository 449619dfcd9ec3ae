"""PubMedQA metrics, over any closed label set. Accuracy and macro-F1 are computed exactly as the official
evaluation script does (scikit-learn's accuracy_score and f1_score(average="macro") over the test PMIDs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from .data import LABELS


def official_scores(truth: list[str], predicted: list[str]) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
    }


def bootstrap_intervals(
    truth: list[str], predicted: list[str], samples: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """Percentile 95% intervals of accuracy and macro-F1 over resampled test items."""
    rng = np.random.default_rng(seed)
    truth_arr, pred_arr = np.array(truth), np.array(predicted)
    draws: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    for _ in range(samples):
        index = rng.integers(0, len(truth_arr), len(truth_arr))
        for name, value in official_scores(list(truth_arr[index]), list(pred_arr[index])).items():
            draws[name].append(value)
    return {name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for name, v in draws.items()}


def paired_bootstrap(
    truth: list[str], predicted: list[str], baseline: list[str], samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """How much better `predicted` is than `baseline` on the same items: the difference in accuracy and
    macro-F1, its percentile 95% interval over resampled items (both scored on each resample, so what the
    two get right together cancels), and the share of resamples where the difference is not positive."""
    rng = np.random.default_rng(seed)
    truth_arr, pred_arr, base_arr = np.array(truth), np.array(predicted), np.array(baseline)
    draws: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    for _ in range(samples):
        index = rng.integers(0, len(truth_arr), len(truth_arr))
        t = list(truth_arr[index])
        ours, theirs = official_scores(t, list(pred_arr[index])), official_scores(t, list(base_arr[index]))
        for name in draws:
            draws[name].append(ours[name] - theirs[name])
    ours, theirs = official_scores(truth, predicted), official_scores(truth, baseline)
    return {
        name: {
            "difference": ours[name] - theirs[name],
            "interval_95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "share_not_better": float(np.mean(np.array(values) <= 0)),
        }
        for name, values in draws.items()
    }


def format_difference(paired_metric: dict[str, float]) -> str:
    """One metric of paired_bootstrap as '+0.060 (+0.002 to +0.120)'."""
    low, high = paired_metric["interval_95"]
    return f"{paired_metric['difference']:+.3f} ({low:+.3f} to {high:+.3f})"


def _some(ids: list[str], shown: int = 10) -> str:
    """The first few ids of a long list, and how many more: an error stays one readable line."""
    more = len(ids) - shown
    return ", ".join(ids[:shown]) + (f" and {more} more" if more > 0 else "")


def evaluate_predictions(
    truth: dict[str, str],
    predictions: dict[str, str],
    bootstrap_samples: int = 1000,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
) -> dict:
    """All metrics for predictions keyed by PMID, per class over `labels`. Missing or unknown PMIDs are an
    error, as in the official script, and so is a label outside the set."""
    labels = list(labels)
    missing = sorted(set(truth) - set(predictions))
    extra = sorted(set(predictions) - set(truth))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} test PMID(s) missing: {_some(missing)}")
        if extra:
            parts.append(f"{len(extra)} PMID(s) not in the test set: {_some(extra)}")
        raise ValueError("predictions must cover all and only the test PMIDs; " + "; ".join(parts))
    bad = {pmid: label for pmid, label in predictions.items() if label not in labels}
    if bad:
        shown = ", ".join(f"{k}: {v!r}" for k, v in list(bad.items())[:10])
        raise ValueError(f"{len(bad)} prediction(s) are not {'/'.join(labels)} ({shown})")
    pmids = list(truth)
    y_true = [truth[p] for p in pmids]
    y_pred = [predictions[p] for p in pmids]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    majority = Counter(y_true).most_common(1)[0][0]
    results = {
        **official_scores(y_true, y_pred),
        "num_examples": len(pmids),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": labels,
            "rows_true_cols_predicted": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
        "majority_baseline": {"label": majority, **official_scores(y_true, [majority] * len(y_true))},
        "predicted_distribution": {label: y_pred.count(label) for label in labels},
    }
    if bootstrap_samples:
        results["bootstrap_95"] = bootstrap_intervals(y_true, y_pred, bootstrap_samples, seed)
    return results
