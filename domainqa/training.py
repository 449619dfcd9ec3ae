"""What every model family's training shares: the balanced label weights, early stopping, the Hub release
kept out of the Trainer's hands, and what a finished run leaves in its folder (metrics, the final model,
run_config.yaml, the curves, the optional Hub release)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import EarlyStoppingCallback

from .config import UsageError
from .data import Example
from .hub_upload import push_run
from .run_folder import TRAINING_CURVES, release_run_folder, save_run_config

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback

    from .arguments import TrainingArguments


def balanced_weights(examples: list[Example], labels: Sequence[str]) -> dict[str, float]:
    """n / (k * n_label) per label, as scikit-learn's "balanced", so that a rare label ("maybe") counts as much
    in the loss as a frequent one; k counts the labels present, and an absent label weighs 0."""
    counts = Counter(e["final_decision"] for e in examples)
    present = sum(1 for label in labels if counts[label])
    return {label: len(examples) / (present * counts[label]) if counts[label] else 0.0 for label in labels}


def early_stopping(training_args: TrainingArguments) -> list[TrainerCallback]:
    if training_args.early_stopping_patience is None:
        return []
    if not training_args.load_best_model_at_end or not training_args.metric_for_best_model:
        raise UsageError("early_stopping_patience needs load_best_model_at_end and metric_for_best_model")
    return [EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience)]


def take_hub_release(training_args: TrainingArguments) -> tuple[bool, str | None]:
    """push_to_hub and the token, taken from the Trainer's arguments: the Trainer would create the repo at
    start and push checkpoints and its own card, while `finish_training` releases the final model with our
    card. The Trainer pickles its arguments into training_args.bin, so it never holds the token."""
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    hub_token, training_args.hub_token = training_args.hub_token, None
    if push_to_hub and not training_args.hub_model_id:
        raise UsageError("--push_to_hub needs --hub_model_id user/name")
    return push_to_hub, hub_token


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


def finish_training(trainer: Trainer, training_args: TrainingArguments, metrics: dict, argument_objects: tuple,
                    push_to_hub: bool, hub_token: str | None) -> None:  # fmt: skip
    """What every training run leaves: metrics (and a last evaluation of the kept model), the final model and
    tokenizer, the Trainer's state, run_config.yaml, the curves, the optional Hub release; then the folder is
    free for the next run."""
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
