"""What every model family's training shares: the balanced label weights, early stopping, the Hub release
kept out of the Trainer's hands, and what a finished run leaves in its folder (metrics, the final model,
run_config.yaml, the curves, the optional Hub release)."""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import EarlyStoppingCallback, TrainerCallback

from .cards import CARD, model_card
from .config import UsageError
from .data import Example
from .hub_access import check_can_push
from .hub_upload import push_run
from .io import atomic_write_text, output_mode
from .modeling import non_finite_parameter
from .run_folder import STAGING, TRAINING_CURVES, last_complete_checkpoint, release_run_folder, save_run_config

if TYPE_CHECKING:
    from transformers import Trainer

    from .arguments import TrainingArguments

logger = logging.getLogger(__name__)


class TrainingDiverged(UsageError):
    """The loss, a gradient or a trained weight stopped being a finite number."""


class StopOnNonFinite(TrainerCallback):
    """Stops training at the first step whose loss or gradient norm is not finite, or that leaves a trained
    weight NaN or infinite, before that step is saved: the checkpoints on disk stay the good ones. The
    Trainer alone would go on, log a loss of 0.0 (its NaN filter) and save a model that predicts nothing."""

    def __init__(self) -> None:
        self.bad: tuple[int, str] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._stop(state.global_step, f"{key} {value}", control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        name = non_finite_parameter(model, trainable_only=True) if model is not None else None
        if name is not None:
            self._stop(state.global_step, f"weight {name} is not finite", control)

    def _stop(self, step: int, what: str, control) -> None:
        self.bad = self.bad or (step, what)
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False

    def check(self, output_dir: str) -> None:
        """One line if training diverged: the step, what went bad, and the checkpoint that is still good."""
        if self.bad is None:
            return
        step, what = self.bad
        release_run_folder(output_dir)
        good = last_complete_checkpoint(output_dir)
        kept = f"the last good checkpoint is {good}" if good else "no checkpoint was saved before it"
        raise TrainingDiverged(
            f"training diverged at step {step} ({what}); nothing of that step was saved and {kept}; lower the "
            "learning rate and rerun with --overwrite_output_dir true"
        )


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
    if push_to_hub:
        check_can_push(training_args.hub_model_id, hub_token)
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


def check_launch(training_args: TrainingArguments) -> None:
    """The processes a launcher started form one run: otherwise each would train alone into the same folder
    (accelerate does so with `use_cpu: true` in an FSDP or DeepSpeed config, which it runs on GPUs only)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != training_args.world_size:
        raise UsageError(
            f"the launcher started {launched} processes but they do not form one run (each sees a world of "
            f"{training_args.world_size}): FSDP and DeepSpeed configs need GPUs; on a CPU use "
            "accelerate_configs/cpu.yaml or a MULTI_CPU config"
        )


def save_final_model(trainer: Trainer, output_dir: str) -> None:
    """Save the final model into a staging folder beside the run, then move it in file by file (each move is
    atomic): a kill or a full disk during the save leaves the earlier files whole, never a cut-off tokenizer or
    weight file. Moved files get the mode the umask gives, like every other output (safetensors writes 0600)."""
    staging = Path(output_dir) / STAGING
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    if trainer.is_fsdp_enabled:  # checkpoints stay sharded (fast to resume); the model users load must be whole
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(staging))  # every process: DeepSpeed and FSDP gather the weights here
    except BaseException:
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if not staging.is_dir():
            raise RuntimeError(f"the Trainer saved no final model into {staging}")
        for path in sorted(staging.iterdir()):
            if path.is_file():
                os.chmod(path, output_mode())
                os.replace(path, Path(output_dir) / path.name)
        shutil.rmtree(staging)


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
    save_final_model(trainer, training_args.output_dir)  # the adapter (or full model) and tokenizer
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_run_config(training_args.output_dir, *argument_objects)
        plot_training_curves(trainer.state.log_history, f"{training_args.output_dir}/{TRAINING_CURVES}")
        atomic_write_text(Path(training_args.output_dir) / CARD, model_card(training_args.output_dir))
        if push_to_hub:
            push_run(training_args.output_dir, training_args.hub_model_id, hub_token, training_args.hub_private_repo)
    release_run_folder(training_args.output_dir)
