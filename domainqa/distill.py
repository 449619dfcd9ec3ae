"""Distillation from the teacher's label distribution: `augment/` records the writer's probability for each label
(`teacher_probs`, docs/augment.md), and with `distill_weight` w > 0 both model families train the decision on

    (1 - w) * cross-entropy(hard label) + w * KL(teacher || student over the label set)

for the items that carry a teacher distribution (the others keep the hard-label loss alone). With w = 0 nothing
here runs, so training is exactly what it was without it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import UsageError
from .data import TEACHER_PROBS, Example

logger = logging.getLogger(__name__)

NO_TEACHER = -1.0  # the row an item without a teacher distribution gets in the training batch


def teacher_rows(examples: Sequence[Example], labels: Sequence[str]) -> list[list[float]]:
    """Each item's teacher distribution in the order of `labels`, or a row of NO_TEACHER; a distribution over
    another label set is refused in one line naming the item."""
    rows = []
    for example in examples:
        probs = example.get(TEACHER_PROBS)
        if probs is None:
            rows.append([NO_TEACHER] * len(labels))
            continue
        if set(probs) != set(labels):
            raise UsageError(
                f"item {example['id']}: {TEACHER_PROBS} has labels {sorted(probs)}, the data set {sorted(labels)}"
            )
        rows.append([float(probs[label]) for label in labels])
    return rows


def soft_targets(examples: Sequence[Example], labels: Sequence[str], weight: float) -> np.ndarray:
    """Each item's target distribution: (1 - w) * its hard label + w * its teacher's, or its hard label alone.
    Cross-entropy to it is the mixed loss above up to the teacher's entropy, a constant: what the linear-probe
    fit of a head minimises."""
    hard = np.eye(len(labels))[[list(labels).index(e["final_decision"]) for e in examples]]
    teacher = np.asarray(teacher_rows(examples, labels), dtype=float)
    has_teacher = teacher[:, :1] >= 0
    return np.where(has_teacher, (1 - weight) * hard + weight * teacher.clip(min=0), hard)


def check_teachers(weight: float, examples: Sequence[Example]) -> None:
    """With a distillation weight, at least one training item must carry a teacher distribution."""
    if weight == 0:
        return
    carrying = sum(example.get(TEACHER_PROBS) is not None for example in examples)
    if carrying == 0:
        raise UsageError(
            f"distill_weight {weight} needs training items with {TEACHER_PROBS} (written by augment when the "
            "writer gives log-probabilities); none of the training items has one"
        )
    logger.info("Distilling on %d of %d training items (distill_weight %s)", carrying, len(examples), weight)


def kl_to_teacher(student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per row, the student's distribution being the softmax of its logits over the label
    set (a teacher probability of 0 adds nothing)."""
    log_student = F.log_softmax(student_logits.float(), dim=-1)
    return F.kl_div(log_student, teacher.to(log_student), reduction="none").sum(-1)


def mix_losses(hard: torch.Tensor, student_logits: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """Per row: (1 - w) * hard + w * KL where the row has a teacher distribution, else the hard loss."""
    has_teacher = teacher[:, 0] >= 0
    if not has_teacher.any():
        return hard
    kl = kl_to_teacher(student_logits, teacher.clamp(min=0))
    return torch.where(has_teacher, (1 - weight) * hard + weight * kl, hard)


def with_teacher_column(collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict[str, Any]]:
    """A data collator that passes the features' teacher rows on as one float tensor (batches without them, such
    as evaluation batches, pass through unchanged)."""

    def collate_with_teacher(features: list[dict]) -> dict[str, Any]:
        rows = [feature.pop(TEACHER_PROBS, None) for feature in features]
        batch = collate(features)
        if any(row is not None for row in rows):
            batch[TEACHER_PROBS] = torch.tensor(rows, dtype=torch.float32)
        return batch

    return collate_with_teacher


class TeacherColumn:
    """Mixed into a Trainer: the training data's teacher column survives the Trainer's removal of the columns its
    model's forward does not take, and is collated into one tensor (the loss takes it out of the batch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = with_teacher_column(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if TEACHER_PROBS not in self._signature_columns:
            self._signature_columns.append(TEACHER_PROBS)
