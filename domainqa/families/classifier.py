"""The sequence-classifier family: a label head on the question and context read as a text pair, the standard
PubMedQA baseline (BERT-class encoders, BLURB), trained and used through the same scripts and recipes as the
causal LMs; any model with a sequence-classification head (a decoder too) works.

`task_type: sequence_classification` (or an encoder checkpoint, detected from its config) chooses it. The
context is truncated to the model's length; the head has one output per label of the task's label set
(PubMedQA's yes/no/maybe by default, in that order), so predictions and label scores line up with the causal
LM's score mode. Training is transformers' own Trainer with validation accuracy and macro-F1 at every
evaluation; the head may start as a linear probe fitted on the frozen features (LP-FT).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer

from ..config import UsageError
from ..data import LABELS, TEACHER_PROBS, Example
from ..distill import TeacherColumn, check_teachers, mix_losses, soft_targets, teacher_rows
from ..embedded import resolve_model_path
from ..inference import batches, longest_first
from ..io import atomic_write_json
from ..metrics import official_scores
from ..modeling import (
    adapter_config,
    default_lora_targets,
    has_tokenizer,
    load_tokenizer,
    refuse_non_finite,
    top_layers,
    torch_dtype,
)
from ..probe_head import check_probe_data, fit_head_as_probe, source_groups
from ..run_folder import PROBE_HEAD
from ..training import balanced_weights
from .base import ModelFamily, Predict

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from ..arguments import InferenceArguments, ModelArguments, TrainingArguments

logger = logging.getLogger(__name__)


class SequenceClassifier(ModelFamily):
    task_type = "sequence_classification"

    def __init__(self, model_args: ModelArguments, data_args) -> None:
        super().__init__(model_args, data_args)
        model_args.task_type = self.task_type  # resolved, so run_config.yaml says what was trained

    def check_training(self, training_args: TrainingArguments) -> None:
        if self.model_args.peft_method == "prefix":
            raise UsageError("peft_method prefix is for causal LMs; a sequence classifier trains with lora or full")
        if training_args.loss_on != "answer":
            raise UsageError(f"loss_on {training_args.loss_on} is for causal LMs; a sequence classifier's loss is on "
                             "its label")  # fmt: skip

    def training_data(
        self, training_args: TrainingArguments, labels: Sequence[str], train: list[Example], validation: list[Example]
    ) -> tuple[Dataset, Dataset]:
        args = self.model_args
        model_path = resolve_model_path(args.model_name_or_path)
        self.tokenizer = load_tokenizer(model_path)
        config = AutoConfig.from_pretrained(model_path)
        if args.num_hidden_layers is not None:  # counts the model cannot give stop here, before any work
            keep_first_layers(config, args.num_hidden_layers)
            top_layers(args.lora_top_layers, config.num_hidden_layers)
        # The saved tokenizer carries the length, so infer.py truncates exactly as training did.
        self.tokenizer.model_max_length = model_max_length(self.tokenizer, config, training_args.max_length)
        self.labels, self.train_items = tuple(labels), train
        datasets = tuple(encoded_dataset(self.tokenizer, items, self.tokenizer.model_max_length, labels)
                         for items in (train, validation))  # fmt: skip
        check_teachers(training_args.distill_weight, train)
        if training_args.distill_weight:
            datasets = (datasets[0].add_column(TEACHER_PROBS, teacher_rows(train, labels)), datasets[1])
        self.truncated = sum(_cut(self.tokenizer, e) for e in train)
        logger.info("Classifier inputs up to %d tokens (%d training contexts cut to fit)",
                    self.tokenizer.model_max_length, self.truncated)  # fmt: skip
        if training_args.head_init == "linear_probe":
            check_probe_data(datasets[0]["labels"], labels)
        return datasets

    def trainer(
        self, training_args: TrainingArguments, datasets: tuple[Dataset, Dataset], callbacks: list[TrainerCallback],
        resuming: bool,
    ) -> Trainer:  # fmt: skip
        weights = None
        if training_args.class_weighted_loss:
            by_label = balanced_weights(self.train_items, self.labels)
            weights = torch.tensor([by_label[label] for label in self.labels])
        # A checkpoint holds its head; the probe's cross-validation keeps each source's items in one fold.
        probe = training_args.head_init == "linear_probe" and not resuming
        targets = None
        if probe and training_args.distill_weight:  # the probe is fitted to the teacher-mixed distributions too
            targets = soft_targets(self.train_items, self.labels, training_args.distill_weight)
        return build_trainer(self.model_args, training_args, self.tokenizer, *datasets, callbacks, weights,
                             self.labels, probe_groups=source_groups(self.train_items) if probe else None,
                             probe_targets=targets)  # fmt: skip

    def check_inference(self, infer_args: InferenceArguments, trained: str | None) -> None:
        if infer_args.mode != "score":
            raise UsageError(f"mode {infer_args.mode} needs a causal LM; a sequence classifier predicts in score mode")
        if trained is None:
            raise UsageError(
                "a sequence classifier needs a trained model (--output_dir of a training run or --adapter_path): "
                "the label head of a base encoder is untrained"
            )

    def predictor(
        self, trained: str | None, labels: Sequence[str], infer_args: InferenceArguments, device, first: Example
    ) -> Predict:
        args = self.model_args
        model, tokenizer = load_classifier_for_inference(
            args.model_name_or_path, trained, args.dtype, labels, args.num_hidden_layers
        )
        refuse_non_finite(model, trained)
        model.to(device)
        return lambda items: classify(model, tokenizer, longest_first(items), infer_args.batch_size)


# ------------------------------------------------------------------------------------------- encoding


def model_max_length(tokenizer: PreTrainedTokenizerBase, config, wanted: int | None) -> int:
    """The longest input the model takes: its position table and tokenizer, and `wanted` if smaller.
    Tokenizers without a limit report a huge sentinel, so the position table decides then."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length, wanted]
    # RoBERTa-style models offset positions by the padding index: their table holds two fewer inputs.
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits[0] = limits[0] - 2 if limits[0] else None
    usable = [int(n) for n in limits if n and n < 1_000_000]
    if not usable:
        raise UsageError("the model states no maximum length; set max_length")
    return min(usable)


def encode(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    max_length: int,
    with_labels: bool = True,
    labels: Sequence[str] = LABELS,
) -> list[dict]:
    """Question and context as a text pair; only the context is cut, so the question is always read whole.
    A row's `labels` is its label's index in `labels`."""
    encoded = tokenizer(
        [e["question"] for e in examples],
        [e["context"] for e in examples],
        truncation="only_second",
        max_length=max_length,
    )
    rows = [{key: encoded[key][i] for key in encoded} for i in range(len(examples))]
    if with_labels:
        for row, example in zip(rows, examples, strict=True):
            row["labels"] = list(labels).index(example["final_decision"])
    return rows


def encoded_dataset(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int, labels: Sequence[str] = LABELS
) -> Dataset:
    return Dataset.from_list(encode(tokenizer, examples, max_length, labels=labels))


# ------------------------------------------------------------------------------------------- models


def load_classifier(
    name_or_path: str, dtype: str = "auto", labels: Sequence[str] = LABELS, num_hidden_layers: int | None = None
) -> PreTrainedModel:
    """A sequence classifier with a head over `labels`; the head of another task's checkpoint is replaced. With
    `num_hidden_layers`, only the model's first N layers are built and loaded."""
    path = resolve_model_path(name_or_path)
    config = AutoConfig.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if num_hidden_layers is not None:
        keep_first_layers(config, num_hidden_layers)
    return AutoModelForSequenceClassification.from_pretrained(
        path, config=config, ignore_mismatched_sizes=True, dtype=torch_dtype(dtype)
    )


def keep_first_layers(config, count: int) -> None:
    """Cut a model's config to its first `count` transformer layers, so that loading skips the others' weights
    and the final norm and head read layer `count`. A middle layer can hold as much of a task as the last
    (results/smollm2-135m-search/probe_layers.json)."""
    total = getattr(config, "num_hidden_layers", None)
    if total is None:
        raise UsageError(f"num_hidden_layers: a {config.model_type} model states no layer count to cut")
    if not 1 <= count <= total:
        raise UsageError(f"num_hidden_layers {count}: the model has {total} layers")
    config.num_hidden_layers = count
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (sliding windows)
        config.layer_types = config.layer_types[:count]


def classifier_peft_config(
    peft_method: str,
    model: PreTrainedModel,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: list[str] | None,
    lora_top_layers: int | None,
) -> LoraConfig | None:
    """LoRA on the encoder with the classification head trained in full (it starts random), or None (full)."""
    from peft import LoraConfig, TaskType

    if peft_method == "full":
        return None
    targets = lora_target_modules or default_lora_targets(model.config.model_type)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=[head_name(model)],
        layers_to_transform=top_layers(lora_top_layers, getattr(model.config, "num_hidden_layers", None)),
    )


def head_name(model: PreTrainedModel) -> str:
    """The module that holds the label head (BERT: classifier; some decoders: score)."""
    names = {name for name, _ in model.named_children()}
    for name in ("classifier", "score"):
        if name in names:
            return name
    raise UsageError(f"cannot find the classification head of {type(model).__name__}; it has {sorted(names)}")


def load_classifier_for_inference(
    model_name_or_path: str,
    trained: str,
    dtype: str = "auto",
    labels: Sequence[str] = LABELS,
    num_hidden_layers: int | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A trained classifier (local folder or Hub id) over `labels`: a full fine-tune, or the base (cut to the
    layers it was trained with) plus a LoRA adapter, merged so that inference runs at the base model's speed."""
    from peft import PeftModel

    is_adapter = adapter_config(trained) is not None
    model = load_classifier(model_name_or_path if is_adapter else trained, dtype, labels, num_hidden_layers)
    if is_adapter:
        model = PeftModel.from_pretrained(model, trained).merge_and_unload()
    # The run's tokenizer carries the training length (model_max_length).
    tokenizer = load_tokenizer(trained if has_tokenizer(trained) else model_name_or_path)
    match_padding(model, tokenizer)
    model.eval()
    return model, tokenizer


def match_padding(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoder models classify from their last real token, which they find by the pad id: give them the
    tokenizer's (load_tokenizer pads with the end-of-text token where a model has no pad token)."""
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def is_classifier_model(model: PreTrainedModel) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


# ------------------------------------------------------------------------------------------ training


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


class ClassificationLoss:
    """The Trainer's compute_loss_func: cross-entropy over the whole accumulated batch. Summing and dividing
    by the batch's item count keeps gradient accumulation equal to one large batch; the model's own loss is a
    per-micro-batch mean that the Trainer would not rescale for models that take loss kwargs. With a
    distillation weight, items with a teacher distribution (`teacher`, set for each batch by ClassifierTrainer)
    mix in KL(teacher || student) (domainqa/distill.py)."""

    def __init__(self, weights: torch.Tensor | None, distill_weight: float = 0.0):
        self.weights, self.distill_weight = weights, distill_weight
        self.teacher: torch.Tensor | None = None

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None):
        logits = outputs["logits"].float()
        weight = self.weights.to(logits.device) if self.weights is not None else None
        losses = F.cross_entropy(logits, labels, weight=weight, reduction="none")
        if self.distill_weight and self.teacher is not None:
            losses = mix_losses(losses, logits, self.teacher.to(logits.device), self.distill_weight)
        if num_items_in_batch is None:  # evaluation: a plain (weighted) mean
            denominator = weight[labels].sum() if weight is not None else labels.numel()
        else:
            denominator = num_items_in_batch
        return losses.sum() / torch.as_tensor(denominator, device=losses.device).clamp(min=1e-8)


def classification_loss(weights: torch.Tensor | None, distill_weight: float = 0.0) -> ClassificationLoss:
    return ClassificationLoss(weights, distill_weight)


class ClassifierTrainer(TeacherColumn, Trainer):
    """The Trainer, with the teacher's label distribution taken out of each batch before the forward and
    handed to the loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        self.compute_loss_func.teacher = inputs.pop(TEACHER_PROBS, None)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


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
    probe_targets: np.ndarray | None = None,
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
            probe_targets,
        )
        atomic_write_json(Path(training_args.output_dir) / PROBE_HEAD, probe)
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
        model = get_peft_model(model, peft_config)
        model.print_trainable_parameters()
    return ClassifierTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=partial(classification_metrics, labels=labels),
        compute_loss_func=classification_loss(weights, training_args.distill_weight),
        callbacks=callbacks,
    )


# ------------------------------------------------------------------------------------------ predicting


@torch.inference_mode()
def classify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    batch_size: int = 8,
) -> Iterator[dict]:
    """The label of highest logit for each example, with the log-softmax of the logits as `label_logprobs`
    (the field score mode writes, so calibration works unchanged). There is no prompt; the saved
    tokenizer's model_max_length is the training run's length, to which each context is cut as in training
    (such rows say `truncated: true`). The labels are those of the model's head."""
    for batch in batches(examples, batch_size):
        rows = encode(tokenizer, batch, tokenizer.model_max_length, with_labels=False)
        inputs = tokenizer.pad(rows, return_tensors="pt").to(model.device)
        logprobs = model(**inputs).logits.float().log_softmax(-1).tolist()
        for example, row, scores in zip(batch, rows, logprobs, strict=True):
            by_label = {model.config.id2label[i]: score for i, score in enumerate(scores)}
            best = max(by_label, key=by_label.__getitem__)
            result = {"id": example["id"], "prediction": best, "label_logprobs": by_label}
            if len(row["input_ids"]) >= tokenizer.model_max_length and _cut(tokenizer, example):
                result["truncated"] = True
            yield result


def _cut(tokenizer: PreTrainedTokenizerBase, example: Example) -> bool:
    """Whether the text pair is longer than the model reads (checked only for inputs at the limit)."""
    full = tokenizer(example["question"], example["context"], verbose=False)["input_ids"]
    return len(full) > tokenizer.model_max_length
