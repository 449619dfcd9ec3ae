"""PubMedQA metrics. Accuracy and macro-F1 are computed exactly as the official evaluation script
does (scikit-learn's accuracy_score and f1_score(average="macro") over the test PMIDs)."""

from __future__ import annotations

from collections import Counter

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


def evaluate_predictions(
    truth: dict[str, str], predictions: dict[str, str], bootstrap_samples: int = 1000, seed: int = 0
) -> dict:
    """All metrics for predictions keyed by PMID. Missing or unknown PMIDs are an error, as in the
    official script."""
    missing = sorted(set(truth) - set(predictions))
    extra = sorted(set(predictions) - set(truth))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} test PMID(s) missing: {', '.join(missing)}")
        if extra:
            parts.append(f"{len(extra)} PMID(s) not in the test set: {', '.join(extra)}")
        raise ValueError("predictions must cover all and only the test PMIDs; " + "; ".join(parts))
    bad = {pmid: label for pmid, label in predictions.items() if label not in LABELS}
    if bad:
        shown = ", ".join(f"{k}: {v!r}" for k, v in list(bad.items())[:10])
        raise ValueError(f"{len(bad)} prediction(s) are not yes/no/maybe ({shown})")
    pmids = list(truth)
    y_true = [truth[p] for p in pmids]
    y_pred = [predictions[p] for p in pmids]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(LABELS), zero_division=0
    )
    majority = Counter(y_true).most_common(1)[0][0]
    results = {
        **official_scores(y_true, y_pred),
        "num_examples": len(pmids),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(LABELS, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": list(LABELS),
            "rows_true_cols_predicted": confusion_matrix(y_true, y_pred, labels=list(LABELS)).tolist(),
        },
        "majority_baseline": {"label": majority, **official_scores(y_true, [majority] * len(y_true))},
        "predicted_distribution": {label: y_pred.count(label) for label in LABELS},
    }
    if bootstrap_samples:
        results["bootstrap_95"] = bootstrap_intervals(y_true, y_pred, bootstrap_samples, seed)
    return results
