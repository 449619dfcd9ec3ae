"""Fine-tune a model on PubMedQA or your own QA data set (original or augmented data) with LoRA, prefix
tuning or full fine-tuning: a causal LM, or a sequence classifier (domainqa/families/).

    python train.py recipes/smollm2-135m/lora/original.yaml [--any_field value ...]
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml train.py RECIPE
"""

from __future__ import annotations

import logging

import datasets
import transformers
from transformers import set_seed

from domainqa import config
from domainqa.arguments import DataArguments, ModelArguments, TrainingArguments, pipeline_keys
from domainqa.config import run_cli, setup_logging
from domainqa.data_spec import load_parts
from domainqa.families import family_for
from domainqa.run_folder import finished_run, record_split, release_run_folder, resume_point
from domainqa.training import StopOnNonFinite, check_launch, early_stopping, finish_training, take_hub_release

logger = logging.getLogger(__name__)

ARGUMENTS = (ModelArguments, DataArguments, TrainingArguments)


def parse_args(
    args: list[str] | None = None, settings: dict | None = None
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The command line (default: this process's); `settings` are recipe keys set on top of the recipe."""
    return config.parse_args(*ARGUMENTS, args=args, settings=settings, shared_keys=pipeline_keys())


def main(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """Train and save the run into training_args.output_dir; returns the training metrics."""
    setup_logging()
    log_level = training_args.get_process_log_level()
    for library in (datasets, transformers):
        library.utils.logging.set_verbosity(log_level)
    set_seed(training_args.seed)
    push_to_hub, hub_token = take_hub_release(training_args)

    # Everything that can be wrong with the input is checked before the model loads or anything is written.
    family = family_for(model_args, data_args)
    family.check_training(training_args)
    check_launch(training_args)
    diverged = StopOnNonFinite()
    callbacks = [diverged, *early_stopping(training_args)]
    data = load_parts(data_args, data_args.train_data)  # an inferred label set goes into data_args.labels
    train_items = data["train"][: data_args.max_train_samples]
    validation_items = data["validation"][: data_args.max_eval_samples]
    train_and_eval = family.training_data(training_args, data.labels, train_items, validation_items)
    logger.info("Training on %d examples (%d contexts cut to max_length), validating on %d", len(train_items),
                family.truncated, len(validation_items))  # fmt: skip

    # Resume only a run made under the same fingerprint; the main process locks the folder and decides first.
    checkpoint = resume_point(model_args, data_args, training_args, train_items, validation_items)
    finished = finished_run(training_args.output_dir)
    if finished is not None and not training_args.overwrite_output_dir and not training_args.resume_from_checkpoint:
        logger.info("%s holds this run, finished: nothing to do", training_args.output_dir)
        release_run_folder(training_args.output_dir)
        return finished
    record_split(training_args.output_dir, data)

    trainer = family.trainer(training_args, train_and_eval, callbacks, resuming=checkpoint is not None)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    diverged.check(training_args.output_dir)
    metrics = {**result.metrics, "train_examples": len(train_items), "train_truncated": family.truncated}
    finish_training(trainer, training_args, metrics, (model_args, data_args, training_args), push_to_hub, hub_token)
    return metrics


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
