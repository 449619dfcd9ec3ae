"""What a training run leaves in its output folder, and how the other scripts find it again."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml
from datasets import Dataset

from .data import Example
from .io import atomic_write_text
from .prompts import PromptFormat
from .run_folder import (  # noqa: F401 - RUN_CONFIG and last_complete_checkpoint live there
    RUN_CONFIG,
    TRAINING_CURVES,
    last_complete_checkpoint,
    release_run_folder,
)

logger = logging.getLogger(__name__)

SECRET_KEYS = {"hub_token", "push_to_hub_token"}
# Fields of a run that inference must share with training, or its prompts (and the labels it scores), or the
# layers its head reads, differ from the trained ones.
TRAINED_WITH_FIELDS = (
    "model_name_or_path",
    "prompt_format",
    "answer_style",
    "system_prompt",
    "labels",
    "num_hidden_layers",
)


def training_dataset(
    examples: list[Example], prompt_format: PromptFormat, limit: int | None = None, loss_on: str = "answer"
) -> Dataset:
    """Prompt/completion pairs, the layout in which TRL puts the loss on the completion only."""
    rows = [prompt_format.training_pair(e, loss_on) for e in examples[:limit]]
    return Dataset.from_list(rows)


def save_run_config(output_dir: str, *argument_objects) -> None:
    """Every resolved argument of the run, secrets masked, as YAML (a valid recipe)."""
    config = {}
    for arguments in argument_objects:
        values = arguments.to_dict() if hasattr(arguments, "to_dict") else dataclasses.asdict(arguments)
        for key, value in values.items():
            if key in SECRET_KEYS or "api_key" in key:
                continue
            # TrainingArguments.to_dict masks every *_token field, including plain ones like eos_token.
            config[key] = getattr(arguments, key) if key.endswith("_token") else value
    atomic_write_text(Path(output_dir) / RUN_CONFIG, yaml.safe_dump(config, sort_keys=True))


def load_run_config(folder: str) -> dict:
    path = Path(folder) / RUN_CONFIG
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


def plot_training_curves(log_history: list[dict], path: str) -> None:
    """Training and validation loss, and validation accuracy / macro-F1 of label scoring, by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list, list]:
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        return [s for s, _ in points], [v for _, v in points]

    fig, (losses, scores) = plt.subplots(1, 2, figsize=(10, 3.8))
    curves = (("loss", "training loss (per completion token)"), ("eval_loss", "validation loss (true label's NLL)"))
    for key, label in curves:
        losses.plot(*series(key), marker="." if key == "eval_loss" else None, label=label)
    for key, label in (("eval_accuracy", "validation accuracy"), ("eval_macro_f1", "validation macro-F1")):
        scores.plot(*series(key), marker="o", label=label)
    losses.set(xlabel="optimizer step", ylabel="loss")
    scores.set(xlabel="optimizer step", ylabel="label scoring", ylim=(0, 1))
    for axes in (losses, scores):
        axes.legend()
        axes.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def finish_training(trainer, training_args, metrics: dict, argument_objects: tuple, push_to_hub: bool,
                    hub_token: str | None) -> None:  # fmt: skip
    """What every training run leaves: metrics (and a last evaluation of the kept model), the final model and
    tokenizer, the Trainer's state, run_config.yaml, the curves, the optional Hub release; then the folder is
    free for the next run."""
    from .hub_upload import push_run  # it reads run folders through this module

    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if training_args.eval_strategy != "no":
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    trainer.save_model(training_args.output_dir)  # the adapter (or full model) and tokenizer
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_run_config(training_args.output_dir, *argument_objects)
        plot_training_curves(trainer.state.log_history, f"{training_args.output_dir}/{TRAINING_CURVES}")
        if push_to_hub:
            push_run(training_args.output_dir, training_args.hub_model_id, hub_token, training_args.hub_private_repo)
    release_run_folder(training_args.output_dir)
