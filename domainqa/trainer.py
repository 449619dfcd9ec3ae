"""The SFT trainer of train.py: TRL's SFTTrainer with a leaner loss for answer-only training, optional
class weights on the decision, and validation by the label scoring that infer.py uses."""

from __future__ import annotations

import time
from collections import Counter

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from .data import LABELS, Example
from .inference import accepts_logits_to_keep, label_token_ids, longest_first, score_labels
from .metrics import official_scores
from .prompts import PromptFormat


def balanced_class_weights(tokenizer, fmt: PromptFormat, examples: list[Example]) -> dict[int, float]:
    """Loss weight of each label's first answer token, n / (k * n_label) as scikit-learn's "balanced", so
    that a rare decision ("maybe") counts as much in the loss as a frequent one."""
    counts = Counter(e["final_decision"] for e in examples)
    first_tokens = label_token_ids(tokenizer, fmt, examples[0])
    present = [label for label in fmt.labels if counts[label]]
    return {first_tokens[label]: len(examples) / (len(present) * counts[label]) for label in present}


class AnswerLossSFTTrainer(SFTTrainer):
    """Computes the LM head and the cross-entropy only where a position predicts an answer token.

    The loss covers a handful of answer tokens per example, while the prompt has hundreds, so the vocabulary
    projection of the other positions is wasted work: for SmolLM2 (49k vocabulary) it is a large part of a
    step. TRL's own fused head does the same selection, but its tiled implementation, which also computes
    entropy and accuracy metrics, is slower than the plain loss on a CPU. Models whose forward has no
    `logits_to_keep` fall back to TRL's loss.

    `class_weights` ({token id: weight}) scales the loss where that token is the target: the decision's
    token. `scoring_examples` with `prompt_format` add label-scoring accuracy and macro-F1 to every
    evaluation, so `metric_for_best_model: macro_f1` picks checkpoints by what infer.py will measure."""

    def __init__(
        self,
        *args,
        class_weights: dict[int, float] | None = None,
        scoring_examples: list[Example] | None = None,
        prompt_format: PromptFormat | None = None,
        scoring_batch_size: int = 8,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.scoring_examples = longest_first(scoring_examples or [])  # the metrics do not depend on order
        self.prompt_format = prompt_format
        self.scoring_batch_size = scoring_batch_size

    def _target_weights(self, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
        table = torch.ones(vocab_size, device=targets.device)
        for token, weight in self.class_weights.items():
            table[token] = weight
        return table[targets]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs or not accepts_logits_to_keep(model):
            if self.class_weights:
                raise ValueError("class-weighted loss needs a model whose forward takes logits_to_keep")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        next_labels = inputs.pop("labels")[:, 1:]
        keep = F.pad(next_labels != -100, (0, 1), value=False)  # positions whose next token is scored
        outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
        logits = outputs.logits.float()
        targets = next_labels[keep[:, :-1]]
        losses = F.cross_entropy(logits, targets, reduction="none")
        if self.class_weights:
            losses = losses * self._target_weights(targets, logits.shape[-1])
        # Like the Trainer's own loss: normalised by the label tokens of the whole accumulated batch.
        count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
        loss = losses.sum() / torch.as_tensor(count, device=losses.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """With scoring examples, one label-scoring pass gives every validation metric, the loss included (the
        negative log-likelihood of the true label among the three), so the Trainer's own loss pass, which
        would cost as much again, is skipped."""
        if not self.scoring_examples or self.prompt_format is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        start = time.perf_counter()
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.score_validation().items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def score_validation(self) -> dict[str, float]:
        """Accuracy, macro-F1 and the predicted label shares of label scoring on the scoring examples."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            rows = list(score_labels(model, self.processing_class, self.prompt_format, self.scoring_examples,
                                     self.scoring_batch_size))  # fmt: skip
        finally:
            model.train(was_training)
        predicted = [r["prediction"] for r in rows]
        truth = [e["final_decision"] for e in self.scoring_examples]
        labels = self.prompt_format.labels
        shares = {f"share_{label}": predicted.count(label) / len(predicted) for label in labels}
        return {"loss": label_nll(rows, truth, labels), **official_scores(truth, predicted), **shares}


def label_nll(rows: list[dict], truth: list[str], labels: tuple[str, ...] = LABELS) -> float:
    """Mean negative log-probability of the true label, normalised over the labels' scores."""
    scores = torch.tensor([[row["label_logprobs"][label] for label in labels] for row in rows])
    true = torch.tensor([labels.index(t) for t in truth])
    return float(F.cross_entropy(scores, true))
