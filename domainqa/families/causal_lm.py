"""The causal-LM family: the model answers a prompt (domainqa/prompts.py); training puts the loss on the answer
(TRL's SFTTrainer on prompt/completion pairs, with a leaner loss and optional class weights), and it predicts
by label scoring (the most likely label's answer) or by the paper's beam search."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTTrainer

from ..config import UsageError
from ..data import LABELS, TEACHER_PROBS, Example
from ..distill import TeacherColumn, check_teachers, mix_losses, teacher_rows
from ..inference import accepts_logits_to_keep, generate_answers, label_token_ids, longest_first, score_labels
from ..metrics import official_scores
from ..modeling import (
    adapter_config,
    default_lora_targets,
    has_tokenizer,
    load_model,
    load_tokenizer,
    refuse_non_finite,
    top_layers,
)
from ..prompts import PromptFormat
from ..training import balanced_weights
from .base import ModelFamily, Predict

if TYPE_CHECKING:
    from peft import PeftConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from ..arguments import InferenceArguments, TrainingArguments

logger = logging.getLogger(__name__)


class CausalLM(ModelFamily):
    task_type = "causal_lm"

    def check_training(self, training_args: TrainingArguments) -> None:
        if training_args.head_init != "random":
            raise UsageError(f"head_init {training_args.head_init} is for sequence classifiers: set task_type "
                             "sequence_classification")  # fmt: skip
        if training_args.distill_weight and (training_args.packing or training_args.padding_free):
            raise UsageError("distill_weight needs one item per row: set packing and padding_free false")
        self._check_layers()

    def _check_layers(self) -> None:
        if self.model_args.num_hidden_layers is not None:
            raise UsageError("num_hidden_layers is for sequence classifiers: set task_type sequence_classification")

    def _prompt_format(self, tokenizer: PreTrainedTokenizerBase, labels: Sequence[str]) -> PromptFormat:
        data = self.data_args
        return PromptFormat(data.prompt_format, tokenizer, data.answer_style, data.system_prompt, tuple(labels))

    def training_data(
        self, training_args: TrainingArguments, labels: Sequence[str], train: list[Example], validation: list[Example]
    ) -> tuple[Dataset, Dataset]:
        self.tokenizer = load_tokenizer(self.model_args.model_name_or_path)
        self.prompt_format = self._prompt_format(self.tokenizer, labels)
        if training_args.loss_on == "label":
            self.prompt_format.scoring_context(train[0])  # label-only loss needs answer_style direct
        if training_args.max_length is not None:
            room = _pair_length(self.tokenizer, self.prompt_format, training_args.loss_on)
            train, validation = (fit_to_length(items, self.tokenizer, training_args.max_length, room)
                                 for items in (train, validation))  # fmt: skip
        self.truncated = sum(e.get("truncated", False) for e in train)
        self.validation = validation
        self.class_weights = None
        self.label_tokens = []
        if training_args.class_weighted_loss or training_args.distill_weight:  # both act on the decision token
            first_tokens = label_token_ids(self.tokenizer, self.prompt_format, train[0])
            self.label_tokens = [first_tokens[label] for label in self.prompt_format.labels]
        if training_args.class_weighted_loss:
            weights = balanced_weights(train, self.prompt_format.labels)
            self.class_weights = {first_tokens[label]: w for label, w in weights.items() if w}
        check_teachers(training_args.distill_weight, train)
        loss_on = training_args.loss_on
        datasets = (
            training_dataset(train, self.prompt_format, loss_on=loss_on),
            training_dataset(validation, self.prompt_format, loss_on=loss_on),
        )
        if training_args.distill_weight:
            return datasets[0].add_column(TEACHER_PROBS, teacher_rows(train, labels)), datasets[1]
        return datasets

    def trainer(
        self, training_args: TrainingArguments, datasets: tuple[Dataset, Dataset], callbacks: list[TrainerCallback],
        resuming: bool,
    ) -> AnswerLossSFTTrainer:  # fmt: skip
        args = self.model_args
        model = load_model(args.model_name_or_path, dtype=args.dtype)
        peft_config = build_peft_config(
            args.peft_method,
            model.config.model_type,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            lora_target_modules=args.lora_target_modules,
            num_virtual_tokens=args.num_virtual_tokens,
            lora_top_layers=args.lora_top_layers,
            num_layers=getattr(model.config, "num_hidden_layers", None),
        )
        return AnswerLossSFTTrainer(
            model=model,
            args=training_args,
            train_dataset=datasets[0],
            eval_dataset=datasets[1],
            processing_class=self.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
            class_weights=self.class_weights,
            label_tokens=self.label_tokens,
            # Only a direct answer can be scored: a reasoning answer is validated by its loss.
            scoring_examples=self.validation if self.prompt_format.answer_style == "direct" else None,
            prompt_format=self.prompt_format,
            scoring_batch_size=training_args.per_device_eval_batch_size,
        )

    def check_inference(self, infer_args: InferenceArguments, trained: str | None) -> None:
        self._check_layers()

    def predictor(
        self, trained: str | None, labels: Sequence[str], infer_args: InferenceArguments, device, first: Example
    ) -> Predict:
        model, tokenizer = load_for_inference(self.model_args.model_name_or_path, trained, self.model_args.dtype)
        refuse_non_finite(model, trained or self.model_args.model_name_or_path)
        model.to(device)
        fmt = self._prompt_format(tokenizer, labels)
        limit = infer_args.max_length or model_limit(model, tokenizer)
        if infer_args.mode == "score":
            fmt.scoring_context(first)  # fails early for formats that cannot be scored
            answer = max(len(tokenizer(fmt.label_text(label), add_special_tokens=False).input_ids) for label in labels)
            room = lambda e: _tokens(tokenizer, fmt.scoring_context(e)) + answer  # noqa: E731

            def predict(items: list[Example]) -> Iterator[dict]:
                # Rows are keyed by id: the prediction files keep the items' order whatever order they are scored in.
                fitted = longest_first(fit_to_length(items, tokenizer, limit, room))
                return _marked(score_labels(model, tokenizer, fmt, fitted, infer_args.batch_size), fitted)

            return predict

        def generate(items: list[Example]) -> Iterator[dict]:
            room = lambda e: _tokens(tokenizer, fmt.prompt(e)) + infer_args.max_new_tokens  # noqa: E731
            fitted = fit_to_length(items, tokenizer, limit, room)
            rows = generate_answers(model, tokenizer, fmt, fitted, batch_size=infer_args.batch_size,
                                    num_beams=infer_args.num_beams, repetition_penalty=infer_args.repetition_penalty,
                                    max_new_tokens=infer_args.max_new_tokens)  # fmt: skip
            return _marked(rows, fitted)

        return generate


# ------------------------------------------------------------------------------------------- length


def _tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _pair_length(tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, loss_on: str) -> Callable[[Example], int]:
    """The tokens a training item takes: its prompt, its completion and the end of text the trainer appends."""

    def length(example: Example) -> int:
        pair = fmt.training_pair(example, loss_on)
        return _tokens(tokenizer, pair["prompt"]) + _tokens(tokenizer, pair["completion"]) + 1

    return length


def model_limit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The longest input the model takes (its position table, or its tokenizer's limit), None if neither says."""
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    usable = [int(n) for n in limits if n and n < 1_000_000]
    return min(usable) if usable else None


# Tokens left free besides the computed lengths: a context cut at a token boundary may re-tokenize a little longer.
_SLACK = 4


def fit_to_length(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, max_length: int | None,
    length: Callable[[Example], int],
) -> list[Example]:  # fmt: skip
    """The examples with every context cut from its end, by tokens, until `length(example)` (the whole input:
    prompt and answer) fits `max_length`; the question and the answer are never cut. The same rule in training
    and inference, so a model reads what it was trained on; cut items are marked `truncated` and counted in the
    log. An item whose prompt cannot fit even without its context is refused in one line."""
    if max_length is None:
        return examples
    fitted = []
    for example in examples:
        excess = length(example) - max_length
        if excess > 0:
            example = _cut_context(example, tokenizer, excess, max_length, length)
        fitted.append(example)
    cut = sum(e.get("truncated", False) for e in fitted)
    if cut:
        logger.warning("%d of %d item(s) longer than max_length %d: their contexts were cut to fit",
                       cut, len(fitted), max_length)  # fmt: skip
    return fitted


def _cut_context(
    example: Example, tokenizer: PreTrainedTokenizerBase, excess: int, max_length: int,
    length: Callable[[Example], int],
) -> Example:  # fmt: skip
    ids = tokenizer(example["context"], add_special_tokens=False).input_ids
    for _ in range(3):  # decoding and re-encoding may merge tokens differently: check, and cut again if needed
        keep = len(ids) - excess - _SLACK
        if keep < 1:
            raise UsageError(
                f"item {example['id']}: its prompt needs more than max_length {max_length} tokens even without its "
                "context (a very long question or answer); raise max_length or shorten the item"
            )
        ids = ids[:keep]
        example = {**example, "context": tokenizer.decode(ids).strip(), "truncated": True}
        excess = length(example) - max_length
        if excess <= 0:
            return example
    raise UsageError(f"item {example['id']}: its context could not be cut to fit max_length {max_length}")


def _marked(rows: Iterator[dict], examples: list[Example]) -> Iterator[dict]:
    """Rows of items whose context was cut say so (`truncated: true`), so the metadata can count them."""
    cut = {e["id"] for e in examples if e.get("truncated")}
    for row in rows:
        yield {**row, "truncated": True} if row["id"] in cut else row


# ------------------------------------------------------------------------------------------- training


def training_dataset(
    examples: list[Example], prompt_format: PromptFormat, limit: int | None = None, loss_on: str = "answer"
) -> Dataset:
    """Prompt/completion pairs, the layout in which TRL puts the loss on the completion only."""
    rows = [prompt_format.training_pair(e, loss_on) for e in examples[:limit]]
    return Dataset.from_list(rows)


def build_peft_config(
    method: str,
    model_type: str,
    lora_r: int = 4,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: list[str] | None = None,
    num_virtual_tokens: int = 16,
    lora_top_layers: int | None = None,
    num_layers: int | None = None,
) -> PeftConfig | None:
    """A PEFT config for `method` (lora, prefix), or None for full fine-tuning."""
    from peft import LoraConfig, PrefixTuningConfig, TaskType

    if method == "full":
        return None
    if method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens)
    targets = lora_target_modules or default_lora_targets(model_type)
    if targets == ["all-linear"]:  # PEFT's shorthand for every linear layer but the output head
        if lora_top_layers is not None:
            raise UsageError("lora_top_layers needs lora_target_modules named one by one, not all-linear")
        targets = "all-linear"
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=targets,
        layers_to_transform=top_layers(lora_top_layers, num_layers),
    )


class AnswerLossSFTTrainer(TeacherColumn, SFTTrainer):
    """Computes the LM head and the cross-entropy only where a position predicts an answer token.

    The loss covers a handful of answer tokens per example, while the prompt has hundreds, so the vocabulary
    projection of the other positions is wasted work: for SmolLM2 (49k vocabulary) it is a large part of a
    step. TRL's own fused head does the same selection, but its tiled implementation, which also computes
    entropy and accuracy metrics, is slower than the plain loss on a CPU. Models whose forward has no
    `logits_to_keep` fall back to TRL's loss.

    `class_weights` ({token id: weight}) scales the loss where that token is the target: the decision's
    token. With `distill_weight`, the decision token's loss (at the last answer position whose target is one
    of `label_tokens`, the labels' first tokens) mixes in KL(teacher || student) over those tokens, for the rows
    that carry a teacher distribution (domainqa/distill.py). `scoring_examples` with `prompt_format` add
    label-scoring accuracy and macro-F1 to every evaluation, so `metric_for_best_model: macro_f1` picks
    checkpoints by what infer.py will measure."""

    def __init__(
        self,
        *args,
        class_weights: dict[int, float] | None = None,
        label_tokens: Sequence[int] = (),
        scoring_examples: list[Example] | None = None,
        prompt_format: PromptFormat | None = None,
        scoring_batch_size: int = 8,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.label_tokens = list(label_tokens)
        self.scoring_examples = longest_first(scoring_examples or [])  # the metrics do not depend on order
        self.prompt_format = prompt_format
        self.scoring_batch_size = scoring_batch_size

    def _target_weights(self, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
        table = torch.ones(vocab_size, device=targets.device)
        for token, weight in self.class_weights.items():
            table[token] = weight
        return table[targets]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher = inputs.pop(TEACHER_PROBS, None)
        # Under DDP (or DeepSpeed) the model is wrapped; its forward's signature is the inner model's.
        if "labels" not in inputs or not accepts_logits_to_keep(self.accelerator.unwrap_model(model)):
            if self.class_weights or teacher is not None:
                raise ValueError("class-weighted loss and distillation need a model whose forward takes logits_to_keep")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        next_labels = inputs.pop("labels")[:, 1:]
        keep = F.pad(next_labels != -100, (0, 1), value=False)  # positions whose next token is scored
        outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
        logits = outputs.logits.float()
        targets = next_labels[keep[:, :-1]]
        losses = F.cross_entropy(logits, targets, reduction="none")
        if self.class_weights:
            losses = losses * self._target_weights(targets, logits.shape[-1])
        if teacher is not None:
            losses = self._distilled(losses, logits, targets, keep.nonzero()[:, 0], teacher.to(logits.device))
        # Like the Trainer's own loss: normalised by the label tokens of the whole accumulated batch.
        count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
        loss = losses.sum() / torch.as_tensor(count, device=losses.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _distilled(self, losses: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor,
                   teacher: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """`losses` with each row's decision position mixed with KL to that row's teacher distribution."""
        label_tokens = torch.tensor(self.label_tokens, device=targets.device)
        is_label = torch.isin(targets, label_tokens)
        positions = torch.arange(len(targets), device=targets.device)
        last = torch.full((len(teacher),), -1, device=targets.device, dtype=torch.long)
        last = last.scatter_reduce(0, rows[is_label], positions[is_label], reduce="amax")  # -1: no decision token
        decided = last >= 0
        at = last[decided]
        mixed = mix_losses(losses[at], logits[at][:, label_tokens], teacher[decided], self.args.distill_weight)
        return losses.index_put((at,), mixed)

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


# ------------------------------------------------------------------------------------------ inference


def load_for_inference(
    model_name_or_path: str, adapter_path: str | None = None, dtype: str = "auto", merge_lora: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A base model plus optional adapter (local folder or Hub id), ready for eval.

    A full fine-tune is loaded from its own folder; a LoRA adapter is merged so inference runs at the
    base model's speed; prefix tuning stays a PeftModel (its prefix is not a weight that can merge)."""
    from peft import PeftModel

    peft_config = adapter_config(adapter_path) if adapter_path else None
    if adapter_path and peft_config is None:
        model_name_or_path = adapter_path  # full fine-tune: the folder is the model
    tokenizer_source = adapter_path if adapter_path and has_tokenizer(adapter_path) else model_name_or_path
    tokenizer = load_tokenizer(tokenizer_source)
    model = load_model(model_name_or_path, dtype=dtype)
    if peft_config is not None:
        model = PeftModel.from_pretrained(model, adapter_path)
        if merge_lora and peft_config.peft_type == "LORA":
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer
