"""Fine-tune a causal LM on PubMedQA (original or augmented data) with LoRA, prefix tuning or full
fine-tuning.

    python train.py recipes/smollm2-135m/lora/original.yaml [--any_field value ...]
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml train.py RECIPE
"""

from __future__ import annotations

import logging

import datasets
import transformers
from transformers import set_seed

from domainqa.arguments import DataArguments, ModelArguments, TrainingArguments, pipeline_keys
from domainqa.config import UsageError, parse_args, run_cli
from domainqa.data import load_task_data
from domainqa.hub import push_run
from domainqa.modeling import build_peft_config, load_model, load_tokenizer
from domainqa.prompts import PromptFormat
from domainqa.runs import last_complete_checkpoint, save_run_config, training_dataset
from domainqa.trainer import AnswerLossSFTTrainer

logger = logging.getLogger(__name__)


def main(args: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(
        ModelArguments, DataArguments, TrainingArguments, args=args, shared_keys=pipeline_keys()
    )
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

    # Everything that can be wrong with the input is checked before the model loads or anything is written.
    parts = load_task_data(data_args.dataset_path, data_args.split, data_args.fold, data_args.train_data)
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    prompt_format = PromptFormat(data_args.prompt_format, tokenizer, data_args.answer_style, data_args.system_prompt)
    train_dataset = training_dataset(parts["train"], prompt_format, data_args.max_train_samples)
    eval_dataset = training_dataset(parts["validation"], prompt_format, data_args.max_eval_samples)
    logger.info("Training on %d examples, validating on %d", len(train_dataset), len(eval_dataset))

    checkpoint = training_args.resume_from_checkpoint or last_complete_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)

    model = load_model(model_args.model_name_or_path, dtype=model_args.dtype)
    peft_config = build_peft_config(
        model_args.peft_method,
        model.config.model_type,
        lora_r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        lora_target_modules=model_args.lora_target_modules,
        num_virtual_tokens=model_args.num_virtual_tokens,
    )
    trainer = AnswerLossSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)

    metrics = {**result.metrics, "train_examples": len(train_dataset)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if training_args.eval_strategy != "no":
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    trainer.save_model(training_args.output_dir)  # the adapter (or full model) and tokenizer
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_run_config(training_args.output_dir, model_args, data_args, training_args)
        if push_to_hub:
            push_run(
                training_args.output_dir,
                training_args.hub_model_id,
                hub_token,
                training_args.hub_private_repo,
            )
    return metrics


if __name__ == "__main__":
    run_cli(main)
