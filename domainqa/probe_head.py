"""A classifier head that starts as a linear probe (LP-FT, Kumar et al., ICLR 2022): before fine-tuning, the
head is fitted as a logistic regression on what the frozen model feeds it for each training item, so that
fine-tuning starts from the best linear reading of the pretrained features. A random head sends large,
arbitrary gradients into the backbone in the first steps, which on a few hundred items is most of training.

The regularisation is chosen by stratified k-fold cross-validation on the training items (macro-F1), never on
validation or test items: the 50 validation items of the paper split are too few to choose by. Items written
from the same source (an original and its LLM rewrites and new pairs) stay in one fold: split apart, a rewrite in
the held-out fold would be scored by a probe that saw its original, which rewards under-regularisation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import UsageError

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
CV_FOLDS = 5


def check_probe_data(label_ids: Sequence[int], labels: Sequence[str]) -> None:
    """The cross-validation needs two training items of every label, and the head must be whole on every
    process (ZeRO-3 partitions it at load): one line before anything loads."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise UsageError("head_init linear_probe cannot run under DeepSpeed ZeRO-3; use ZeRO-2, FSDP or plain DDP")
    counts = np.bincount(np.asarray(label_ids, dtype=int), minlength=len(labels))
    scarce = [f"{label} ({int(n)})" for label, n in zip(labels, counts, strict=True) if n < 2]
    if scarce:
        raise UsageError(f"head_init linear_probe needs at least 2 training items of every label; too few: {scarce}")


@torch.inference_mode()
def head_inputs(model: PreTrainedModel, head: torch.nn.Module, dataset: Dataset) -> np.ndarray:
    """The vector the head reads for each item. Items go one at a time, unpadded, so that a decoder's pooled
    position (its last non-padding token) is the last position of the head's input."""
    captured: list[torch.Tensor] = []

    def capture(module, args, output) -> None:
        features = args[0]
        captured.append((features[:, -1] if features.dim() == 3 else features).float().cpu())

    was_training = model.training
    model.eval()
    hook = head.register_forward_hook(capture)
    start = time.perf_counter()
    try:
        for i, row in enumerate(dataset):
            inputs = {k: torch.tensor([v], device=model.device) for k, v in row.items() if k != "labels"}
            model(**inputs)
            if (i + 1) % 50 == 0 or i + 1 == len(dataset):
                logger.info("Probe features: %d/%d items (%.0f s)", i + 1, len(dataset), time.perf_counter() - start)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).numpy()


def source_groups(items: Sequence[dict]) -> list[str]:
    """The cross-validation group of each training item: the item it was written from (`source_id`, on every row
    of an `augment/` output), else the item itself."""
    return [item.get("source_id") or item["id"] for item in items]


def cv_folds(targets: np.ndarray, groups: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs of the stratified cross-validation; items of one group (one source) share
    a fold. Without repeated groups these are plain stratified folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    counts = np.bincount(targets)
    # As many folds as the rarest label allows, and at least 2: a label with a single item (a small written data
    # set) then sits in one fold only, which scikit-learn allows with a warning.
    folds = max(2, min(CV_FOLDS, int(counts[counts > 0].min())))
    if groups is None or len(set(groups)) == len(groups):
        return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(targets, targets))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    return list(splitter.split(targets, targets, groups=list(groups)))


def choose_c(
    features: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    class_weight: str | None,
    groups: Sequence[str] | None = None,
    soft_targets: np.ndarray | None = None,
) -> dict:
    """The C of C_GRID with the best mean macro-F1 over stratified folds of the training items (by group); with
    `soft_targets`, each fold's probe is fitted on them (`fit_soft`) and still scored on the hard labels."""
    from sklearn.metrics import f1_score, make_scorer
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    folds = cv_folds(targets, groups)
    scorer = make_scorer(f1_score, average="macro", labels=list(range(len(labels))), zero_division=0)
    scores = {}
    for c in C_GRID:
        if soft_targets is None:
            fold_scores = cross_val_score(
                make_pipeline(*_probe(c, class_weight)), features, targets, scoring=scorer, cv=folds
            )
        else:
            fold_scores = [
                f1_score(targets[held], fit_soft(c, class_weight, True, features[kept], targets[kept],
                                                 soft_targets[kept]).predict(features[held]),
                         average="macro", labels=list(range(len(labels))), zero_division=0)
                for kept, held in folds
            ]  # fmt: skip
        scores[c] = float(np.mean(fold_scores))
    best = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    sources = len(set(groups)) if groups is not None else len(targets)
    return {"C": best, "cv_macro_f1": scores[best], "cv_macro_f1_by_C": scores, "folds": len(folds), "sources": sources}


def _probe(c: float, class_weight: str | None, fit_intercept: bool = True) -> tuple:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    # Without an intercept the features are only scaled, not centred: their mean then carries the label prior.
    return (
        StandardScaler(with_mean=fit_intercept),
        LogisticRegression(C=c, class_weight=class_weight, fit_intercept=fit_intercept, max_iter=5000),
    )


def fit_soft(
    c: float, class_weight: str | None, with_bias: bool, features: np.ndarray, targets: np.ndarray,
    soft_targets: np.ndarray,
) -> object:  # fmt: skip
    """A scaler and logistic regression (one pipeline) fitted to target distributions: each item appears once per
    label, weighted by that label's target probability, which makes the regression's loss the cross-entropy to
    the distribution. Class weights ("balanced", from the hard labels) scale an item's rows by its label's."""
    from sklearn.pipeline import make_pipeline

    count = soft_targets.shape[1]
    weights = soft_targets.reshape(-1)
    if class_weight == "balanced":
        by_class = len(targets) / (count * np.maximum(np.bincount(targets, minlength=count), 1))
        weights = weights * np.repeat(by_class[targets], count)
    pipeline = make_pipeline(*_probe(c, None, fit_intercept=with_bias))
    # Every item repeated the same number of times: the scaler's mean and scale are those of the items.
    pipeline.fit(np.repeat(features, count, axis=0), np.tile(np.arange(count), len(features)),
                 logisticregression__sample_weight=weights)  # fmt: skip
    return pipeline


def fit_probe(
    features: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    class_weight: str | None,
    with_bias: bool,
    groups: Sequence[str] | None = None,
    soft_targets: np.ndarray | None = None,
) -> tuple[dict, object, object]:
    """The probe a head is set to: C chosen by cross-validation on these items (grouped by source), then the
    scaler and the logistic regression fitted on all of them (on `soft_targets` when given: distillation).
    Returns the choice, the fitted scaler and the fitted regression."""
    choice = choose_c(features, targets, labels, class_weight, groups, soft_targets)
    if soft_targets is not None:
        scaler, probe = fit_soft(choice["C"], class_weight, with_bias, features, targets, soft_targets).steps
        return choice, scaler[1], probe[1]
    scaler, probe = _probe(choice["C"], class_weight, fit_intercept=with_bias)
    probe.fit(scaler.fit_transform(features), targets)
    return choice, scaler, probe


def fit_head_as_probe(
    model: PreTrainedModel,
    head: torch.nn.Module,
    dataset: Dataset,
    labels: Sequence[str],
    class_weight: str | None = None,
    groups: Sequence[str] | None = None,
    soft_targets: np.ndarray | None = None,
) -> dict:
    """Set `head` (one linear layer) to a logistic regression fitted on the frozen model's features of
    `dataset` (rows with input_ids and labels; `groups` their sources; `soft_targets` each row's target
    distribution, for distillation). Returns the choice and its cross-validated macro-F1."""
    if not isinstance(head, torch.nn.Linear):
        raise UsageError(f"head_init linear_probe needs a head that is one linear layer, not {type(head).__name__}")
    targets = np.asarray(dataset["labels"])
    check_probe_data(targets, labels)
    features = head_inputs(model, head, dataset)
    with_bias = head.bias is not None
    choice, scaler, probe = fit_probe(features, targets, labels, class_weight, with_bias, groups, soft_targets)
    # Fold the scaling into the weights: w . (x - mean) / scale + b == (w / scale) . x + (b - w . mean / scale).
    weight = probe.coef_ / scaler.scale_
    bias = probe.intercept_ - weight @ scaler.mean_ if with_bias else None
    if len(labels) == 2:  # scikit-learn's binary probe is one row of log-odds: split it over the two outputs
        weight = np.vstack([-weight / 2, weight / 2])
        bias = np.concatenate([-bias / 2, bias / 2]) if with_bias else None
    head.weight.data.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
    if with_bias:
        head.bias.data.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    train_accuracy = float((probe.predict(scaler.transform(features)) == targets).mean())
    logger.info(
        "Head set to a linear probe: C=%s, cross-validated macro-F1 %.3f, training accuracy %.3f",
        choice["C"],
        choice["cv_macro_f1"],
        train_accuracy,
    )
    return {**choice, "train_accuracy": train_accuracy}
