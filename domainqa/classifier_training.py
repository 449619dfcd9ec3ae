"""train.py's path for sequence classifiers: the same data, run folder, fingerprint, resume and outputs as
the causal-LM path, with transformers' own Trainer loop, validation accuracy and macro-F1 of the classifier's
predictions at every evaluation, and the best checkpoint kept by `metric_for_best_model`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoConfig, DataCollatorWithPadding, Trainer

from .classifier import (
    SEQUENCE_CLASSIFICATION,
    check_classifier_settings,
    classifier_peft_config,
    encode,
    head_name,
    keep_first_layers,
    load_classifier,
    match_padding,
    model_max_length,
)
from .data import LABELS, Example
from .io import atomic_write_json
from .metrics import official_scores
from .modeling import load_tokenizer, resolve_model_path, top_layers
from .probe_head import check_probe_data, fit_head_as_probe, source_groups
from .run_folder import resume_point
from .runs import finish_training
from .task import load_task, record_split

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase, TrainerCallback

    from .arguments import DataArguments, ModelArguments, TrainingArguments

logger = logging.getLogger(__name__)


def classification_metrics(eval_prediction: EvalPrediction, labels: Sequence[str] = LABELS) -> dict[str, float]:
    """Accuracy and macro-F1 as the official evaluation computes them, and the share of each predicted label
    (`labels`: the head's label of each output, in order)."""
    id2label = dict(enumerate(labels))
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    predicted = [id2label[int(i)] for i in np.asarray(logits).argmax(-1)]
    truth = [id2label[int(i)] for i in eval_prediction.label_ids]
    shares = {f"share_{label}": predicted.count(label) / len(predicted) for label in labels}
    return {**official_scores(truth, predicted), **shares}


def balanced_label_weights(examples: list[Example], labels: Sequence[str] = LABELS) -> torch.Tensor:
    """n / (k * n_label) per label, as scikit-learn's "balanced" (a label absent from training weighs 0)."""
    counts = Counter(e["final_decision"] for e in examples)
    present = sum(1 for label in labels if counts[label])
    return torch.tensor([len(examples) / (present * counts[label]) if counts[label] else 0.0 for label in labels])


def classification_loss(weights: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """The Trainer's compute_loss_func: cross-entropy over the whole accumulated batch. Summing and dividing
    by the batch's item count keeps gradient accumulation equal to one large batch; the model's own loss is a
    per-micro-batch mean that the Trainer would not rescale for models that take loss kwargs."""

    def loss(outputs, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
        logits = outputs["logits"].float()
        weight = weights.to(logits.device) if weights is not None else None
        losses = F.cross_entropy(logits, labels, weight=weight, reduction="none")
        if num_items_in_batch is None:  # evaluation: a plain (weighted) mean
            denominator = weight[labels].sum() if weight is not None else labels.numel()
        else:
            denominator = num_items_in_batch
        return losses.sum() / torch.as_tensor(denominator, device=losses.device).clamp(min=1e-8)

    return loss


def encoded_dataset(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int, labels: Sequence[str] = LABELS
) -> Dataset:
    return Dataset.from_list(encode(tokenizer, examples, max_length, labels=labels))


def train_classifier(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    callbacks: list[TrainerCallback],
    push_to_hub: bool,
    hub_token: str | None,
) -> dict:
    """Train, validate and save a sequence classifier; the counterpart of train.py's main() after parsing."""
    check_classifier_settings(model_args.peft_method, training_args.loss_on)
    task = load_task(data_args, data_args.train_data)
    parts, labels = task.parts, task.labels
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path)
    config = AutoConfig.from_pretrained(model_path)
    if model_args.num_hidden_layers is not None:  # counts the model cannot give stop here, before any work
        keep_first_layers(config, model_args.num_hidden_layers)
        top_layers(model_args.lora_top_layers, config.num_hidden_layers)
    # The saved tokenizer carries the length, so infer.py truncates exactly as training did.
    tokenizer.model_max_length = model_max_length(tokenizer, config, training_args.max_length)
    train_items = parts["train"][: data_args.max_train_samples]
    validation_items = parts["validation"][: data_args.max_eval_samples]
    train_dataset = encoded_dataset(tokenizer, train_items, tokenizer.model_max_length, labels)
    eval_dataset = encoded_dataset(tokenizer, validation_items, tokenizer.model_max_length, labels)
    logger.info(
        "Classifier: training on %d examples, validating on %d, inputs up to %d tokens",
        len(train_items),
        len(validation_items),
        tokenizer.model_max_length,
    )

    if training_args.head_init == "linear_probe":
        check_probe_data(train_dataset["labels"], labels)
    model_args.task_type = SEQUENCE_CLASSIFICATION  # resolved, so run_config.yaml says what was trained
    checkpoint = resume_point(model_args, data_args, training_args, train_items, validation_items)
    record_split(training_args.output_dir, task)
    trainer = build_trainer(
        model_args,
        training_args,
        tokenizer,
        train_dataset,
        eval_dataset,
        callbacks,
        balanced_label_weights(train_items, labels) if training_args.class_weighted_loss else None,
        labels,
        # A checkpoint holds its head; the probe's cross-validation keeps each source's items in one fold.
        probe_groups=source_groups(train_items)
        if training_args.head_init == "linear_probe" and checkpoint is None
        else None,
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {**result.metrics, "train_examples": len(train_items)}
    finish_training(trainer, training_args, metrics, (model_args, data_args, training_args), push_to_hub, hub_token)
    return metrics


def build_trainer(
    model_args: ModelArguments,
    training_args: TrainingArguments,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    callbacks: list[TrainerCallback],
    weights: torch.Tensor | None,
    labels: Sequence[str] = LABELS,
    probe_groups: Sequence[str] | None = None,
) -> Trainer:
    model = load_classifier(model_args.model_name_or_path, model_args.dtype, labels, model_args.num_hidden_layers)
    match_padding(model, tokenizer)
    if probe_groups is not None:  # the head starts as a linear probe
        model.to(training_args.device)  # the features on the training device: the Trainer would move it there anyway
        probe = fit_head_as_probe(
            model,
            getattr(model, head_name(model)),
            train_dataset,
            labels,
            "balanced" if weights is not None else None,
            probe_groups,
        )
        atomic_write_json(f"{training_args.output_dir}/probe_head.json", probe)
    peft_config = classifier_peft_config(
        model_args.peft_method,
        model,
        model_args.lora_r,
        model_args.lora_alpha,
        model_args.lora_dropout,
        model_args.lora_target_modules,
        model_args.lora_top_layers,
    )
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
        model.print_trainable_parameters()
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=partial(classification_metrics, labels=labels),
        compute_loss_func=classification_loss(weights),
        callbacks=callbacks,
    )
