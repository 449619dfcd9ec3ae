"""What a training run leaves in its output folder, and how the other scripts find it again."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import yaml
from datasets import Dataset
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .data import Example
from .io import atomic_write_text
from .prompts import PromptFormat

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"
SECRET_KEYS = {"hub_token", "push_to_hub_token"}
# Fields of a run that inference must share with training, or its prompts differ from the trained ones.
PROMPT_FIELDS = ("model_name_or_path", "prompt_format", "answer_style", "system_prompt")


def training_dataset(examples: list[Example], prompt_format: PromptFormat, limit: int | None = None) -> Dataset:
    """Prompt/completion pairs, the layout in which TRL puts the loss on the completion only."""
    rows = [prompt_format.training_pair(e) for e in examples[:limit]]
    return Dataset.from_list(rows)


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint that finished saving. The Trainer writes trainer_state.json last, so a
    checkpoint without it was cut off mid-save (a kill) and is passed over."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    checkpoints = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-\d+", p.name)]
    for checkpoint in sorted(checkpoints, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True):
        if (checkpoint / "trainer_state.json").is_file():
            return str(checkpoint)
        logger.warning("Passing over %s: it was not completely saved", checkpoint)
    return None


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
