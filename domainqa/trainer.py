"""The SFT trainer of train.py: TRL's SFTTrainer with a leaner loss for answer-only training."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from trl import SFTTrainer


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class AnswerLossSFTTrainer(SFTTrainer):
    """Computes the LM head and the cross-entropy only where a position predicts an answer token.

    The loss covers a handful of answer tokens per example, while the prompt has hundreds, so the vocabulary
    projection of the other positions is wasted work: for SmolLM2 (49k vocabulary) it is a large part of a
    step. TRL's own fused head does the same selection, but its tiled implementation, which also computes
    entropy and accuracy metrics, is slower than the plain loss on a CPU. Models whose forward has no
    `logits_to_keep` fall back to TRL's loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs or not _accepts_logits_to_keep(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        next_labels = inputs.pop("labels")[:, 1:]
        keep = F.pad(next_labels != -100, (0, 1), value=False)  # positions whose next token is scored
        outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
        loss = F.cross_entropy(outputs.logits.float(), next_labels[keep[:, :-1]], reduction="sum")
        # Like the Trainer's own loss: normalised by the label tokens of the whole accumulated batch.
        count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
        loss = loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
