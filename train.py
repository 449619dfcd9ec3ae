"""Fine-tune a causal LM on PubMedQA or your own QA data set (original or augmented data) with LoRA, prefix
tuning or full fine-tuning.

    python train.py recipes/smollm2-135m/lora/original.yaml [--any_field value ...]
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml train.py RECIPE
"""

from __future__ import annotations

import logging

import datasets
import transformers
from transformers import EarlyStoppingCallback, set_seed

from domainqa import config
from domainqa.arguments import DataArguments, ModelArguments, TrainingArguments, pipeline_keys
from domainqa.classifier import check_causal_lm_settings, uses_classifier
from domainqa.classifier_training import train_classifier
from domainqa.config import UsageError, run_cli
from domainqa.modeling import build_peft_config, load_model, load_tokenizer
from domainqa.prompts import PromptFormat
from domainqa.run_folder import resume_point
from domainqa.runs import finish_training, training_dataset
from domainqa.task import load_task, record_split
from domainqa.trainer import AnswerLossSFTTrainer, balanced_class_weights

logger = logging.getLogger(__name__)


def early_stopping(training_args: TrainingArguments) -> list:
    if training_args.early_stopping_patience is None:
        return []
    if not training_args.load_best_model_at_end or not training_args.metric_for_best_model:
        raise UsageError("early_stopping_patience needs load_best_model_at_end and metric_for_best_model")
    return [EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience)]


def answer_is_scorable(prompt_format: PromptFormat) -> bool:
    return prompt_format.answer_style == "direct"


ARGUMENTS = (ModelArguments, DataArguments, TrainingArguments)


def parse_args(
    args: list[str] | None = None, settings: dict | None = None
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The command line (default: this process's); `settings` are recipe keys set on top of the recipe."""
    return config.parse_args(*ARGUMENTS, args=args, settings=settings, shared_keys=pipeline_keys())


def main(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """Train and save the run into training_args.output_dir; returns the training metrics."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    for library in (datasets, transformers):
        library.utils.logging.set_verbosity(log_level)
    set_seed(training_args.seed)
    # The Trainer would create the repo at start and push checkpoints and its own card; push_run releases
    # the final adapter with our card once training is done. The Trainer pickles its arguments into
    # training_args.bin, so it never holds the token.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    hub_token, training_args.hub_token = training_args.hub_token, None
    if push_to_hub and not training_args.hub_model_id:
        raise UsageError("--push_to_hub needs --hub_model_id user/name")
    if uses_classifier(model_args.task_type, model_args.model_name_or_path):  # encoders: a label head, no prompts
        return train_classifier(model_args, data_args, training_args, early_stopping(training_args), push_to_hub,
                                hub_token)  # fmt: skip

    # Everything that can be wrong with the input is checked before the model loads or anything is written.
    check_causal_lm_settings(model_args.num_hidden_layers, training_args.head_init)
    task = load_task(data_args, data_args.train_data)  # an inferred label set goes into data_args.labels
    parts = task.parts
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    prompt_format = PromptFormat(
        data_args.prompt_format, tokenizer, data_args.answer_style, data_args.system_prompt, task.labels
    )
    if training_args.loss_on == "label":
        prompt_format.scoring_context(parts["train"][0])  # label-only loss needs answer_style direct
    train_items = parts["train"][: data_args.max_train_samples]
    validation_items = parts["validation"][: data_args.max_eval_samples]
    train_dataset = training_dataset(train_items, prompt_format, loss_on=training_args.loss_on)
    eval_dataset = training_dataset(validation_items, prompt_format, loss_on=training_args.loss_on)
    class_weights = (
        balanced_class_weights(tokenizer, prompt_format, train_items) if training_args.class_weighted_loss else None
    )
    logger.info("Training on %d examples, validating on %d", len(train_dataset), len(eval_dataset))

    # Resume only a run made under the same fingerprint; the main process locks the folder and decides first.
    checkpoint = resume_point(model_args, data_args, training_args, train_items, validation_items)
    record_split(training_args.output_dir, task)

    model = load_model(model_args.model_name_or_path, dtype=model_args.dtype)
    peft_config = build_peft_config(
        model_args.peft_method,
        model.config.model_type,
        lora_r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        lora_target_modules=model_args.lora_target_modules,
        num_virtual_tokens=model_args.num_virtual_tokens,
        lora_top_layers=model_args.lora_top_layers,
        num_layers=getattr(model.config, "num_hidden_layers", None),
    )
    trainer = AnswerLossSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=early_stopping(training_args),
        class_weights=class_weights,
        scoring_examples=validation_items if answer_is_scorable(prompt_format) else None,
        prompt_format=prompt_format,
        scoring_batch_size=training_args.per_device_eval_batch_size,
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)

    metrics = {**result.metrics, "train_examples": len(train_dataset)}
    finish_training(trainer, training_args, metrics, (model_args, data_args, training_args), push_to_hub, hub_token)
    return metrics


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
