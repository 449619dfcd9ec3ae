"""A run folder, the one owner of what a run leaves: the name of every file in it, whether it holds a trained
model, its run_config.yaml (the settings it was trained with), the split a seed made, the fingerprint of what
decides its outputs, whether a checkpoint was completely saved, and the lock that keeps one run per folder.

Every script and module that reads or writes a run folder takes the names from here, so that a file
is never known under two spellings. A run folder is the output_dir of train.py; infer.py writes its
predictions into the same folder (or into a folder of its own for a zero-shot or Hub model); the prediction
sets' own protocol (partial files and their resume) is in domainqa/predictions.py.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import UsageError, load_yaml, yaml_problem
from .data import FIELDS
from .data_spec import PARTS, DataParts
from .embedded import resolve_model_path
from .hub_access import hub_model_commit
from .io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- file names

RUN_CONFIG = "run_config.yaml"
FINGERPRINT = "run_fingerprint.json"
LOCK = ".run.lock"
TRAINER_STATE = "trainer_state.json"
TRAIN_RESULTS = "train_results.json"
EVAL_RESULTS = "eval_results.json"
ALL_RESULTS = "all_results.json"
RESULT_FILES = (RUN_CONFIG, TRAIN_RESULTS, EVAL_RESULTS, ALL_RESULTS)
METRICS = "metrics.json"  # evaluate.py --output_file inside a sweep point
TRAINING_CURVES = "training_curves.png"  # training loss and validation metrics by step
CALIBRATION = "calibration.json"  # per-label biases fitted by calibrate.py
DATA_SPLIT = "data_split.json"  # a custom data set's parts made by a seed: ids, seed and label set
PROBE_HEAD = "probe_head.json"  # head_init linear_probe: the probe's C, cross-validation scores and timing
CHECKPOINT_PREFIX = "checkpoint"  # the Trainer's PREFIX_CHECKPOINT_DIR
STAGING = ".final-model.tmp"  # the final model while it is saved, before it is moved into the run folder
# The final model and what it needs to run; never checkpoints, optimizer state or training_args.bin.
MODEL_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",  # full fine-tuning
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
PREDICTION_SUFFIXES = {"official": ".json", "rows": ".jsonl", "meta": ".meta.json"}


def calibrated_stem(stem: Path) -> Path:
    """The prediction set decided with the run's calibration, beside the raw one."""
    return stem.with_name(f"{stem.name}_calibrated")


# Weights in the other layouts a model folder may use (sharded safetensors, PyTorch pickles).
_WEIGHT_PATTERNS = ("model-*.safetensors", "pytorch_model*.bin", "adapter_model.bin")
# What infer.py fetches of a model or adapter named by its Hub id: the files model_files() finds, and the
# run's settings; never the predictions, metrics or checkpoints a repo may hold beside them.
HUB_MODEL_PATTERNS = (*MODEL_FILES, *TOKENIZER_FILES, *_WEIGHT_PATTERNS, RUN_CONFIG)


def predictions_name(split: str, eval_split: str, mode: str, name: str | None = None) -> str:
    """File stem of a prediction set: `name` if given, else predictions_<split>_<eval_split>_<mode>."""
    return name or f"predictions_{split}_{eval_split}_{mode}"


def predictions_files(stem: Path) -> dict[str, Path]:
    """The files of one prediction set: official JSON, rows with scores or generations, metadata."""
    return {kind: stem.with_name(stem.name + suffix) for kind, suffix in PREDICTION_SUFFIXES.items()}


def partial_file(stem: Path, process_index: int) -> Path:
    """Rows one process has predicted so far (merged into the prediction set at the end)."""
    return stem.with_name(f"{stem.name}.partial{process_index}.jsonl")


def prediction_stems(folder: Path) -> list[str]:
    """Prediction sets infer.py completed (it writes <stem>.meta.json last)."""
    suffix = PREDICTION_SUFFIXES["meta"]
    return sorted(p.name[: -len(suffix)] for p in Path(folder).glob(f"*{suffix}"))


def metrics_files(folder: Path) -> dict[str, dict]:
    """Top-level JSON files written by evaluate.py --output_file (one result, or a table of them), by name."""
    found = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ({"accuracy", "macro_f1"} <= data.keys()):
            found[path.name] = data
        elif isinstance(data, dict) and data and all(isinstance(v, dict) and "macro_f1" in v for v in data.values()):
            found[path.name] = data
    return found


def model_files(folder: Path) -> list[Path]:
    """The files of a saved model or adapter that decide what it predicts (weights, configs, tokenizer)."""
    folder = Path(folder)
    names = {*MODEL_FILES, *TOKENIZER_FILES}
    found = {p for p in folder.iterdir() if p.is_file() and p.name in names}
    for pattern in _WEIGHT_PATTERNS:
        found.update(folder.glob(pattern))
    return sorted(found)


def holds_trained_model(folder: str | Path) -> bool:
    """Whether `folder` holds a final adapter (adapter_config.json) or fine-tuned model (config.json)."""
    return any((Path(folder) / name).is_file() for name in ("adapter_config.json", "config.json"))


# ------------------------------------------------------------------------------------------- run config

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


def save_run_config(output_dir: str | Path, *argument_objects) -> None:
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


def load_run_config(folder: str | Path) -> dict:
    """The settings a run was trained with ({} where the folder has no run_config.yaml)."""
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        return {}
    try:
        config = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: unreadable ({yaml_problem(e) if isinstance(e, yaml.YAMLError) else e})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: not a mapping of settings")
    return config


# ------------------------------------------------------------------------------ the record of a split


def split_record(data: DataParts) -> dict | None:
    """What a seeded split made: its seed, label set and the ids of every part (None for given parts)."""
    if data.seeded is None:
        return None
    ids = {part: [e["id"] for e in data.parts[part]] for part in PARTS}
    return {**data.seeded, "labels": list(data.labels), **ids}


def record_split(folder: str | Path, data: DataParts) -> None:
    """Write the split a seed made into the run folder (main process)."""
    record = split_record(data)
    if record is not None and is_lock_owner():
        atomic_write_json(Path(folder) / DATA_SPLIT, record)


def check_recorded_split(folder: str | Path | None, data: DataParts) -> None:
    """A run folder's recorded split must be the one made now: the same test items, else the scores would
    count items the model trained on (an edited data file, another seed)."""
    path = Path(folder) / DATA_SPLIT if folder else None
    if path is None or not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    current = split_record(data) or {}
    for part in ("test", "validation"):  # train_data may stand in for the train part
        if recorded.get(part) != current.get(part):
            raise UsageError(
                f"{path}: the {part} part differs from the one this run was trained with (edited data, another "
                "split_seed, test_size or test_data); use the training run's data set spec"
            )


# ------------------------------------------------------------------------------------------ fingerprint

# Files above this size are hashed by samples: a 7B model would otherwise take a minute at every start,
# and a retrained model differs in every sampled block, while its size and header stay the same.
_FULL_HASH_LIMIT = 256 * 2**20
_SAMPLES = 16
_SAMPLE_BYTES = 2**20


def _hash_file(path: Path, digest) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
            return
        for i in range(_SAMPLES):
            f.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            digest.update(f.read(_SAMPLE_BYTES))


def content_hash(name_or_path: str | None) -> str | None:
    """sha256 of a local model or adapter (its model files) or of a file; None for a Hub id or nothing."""
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if not path.exists():
        return None
    files = model_files(path) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        _hash_file(file, digest)
    return digest.hexdigest()[:16]


def model_hash(name_or_path: str | None) -> str | None:
    """What a base model is, for a fingerprint: its content where it is local (the embedded models
    included), the commit its Hub id names now."""
    if not name_or_path:
        return None
    path = resolve_model_path(name_or_path)
    return content_hash(path) or hub_model_commit(path)


def data_hash(examples: Iterable[Mapping[str, Any]], fields: Iterable[str]) -> str:
    """sha256 of the fields of the examples that a run reads, in order: equal data, equal hash,
    wherever the file lives."""
    fields = tuple(fields)
    rows = [{k: e.get(k) for k in fields} for e in examples]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON, so a saved fingerprint compares equal to a fresh one."""
    return json.loads(json.dumps(value, default=str))


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'name: old -> new' for every entry that differs (nested settings by their own name)."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += differences(old, new)
        elif old != new:
            changed.append(f"{key}: {_short(old)} -> {_short(new)}")
    return changed


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


class RunMismatchError(UsageError):
    """A run folder made under other settings than the ones given now."""


def refuse_mismatch(where: str, changed: list[str], fresh: str) -> None:
    """One line: what changed since `where` was started, and how to start afresh."""
    shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    raise RunMismatchError(
        f"{where} was started with other settings ({shown}); to start afresh use {fresh} or a new --output_dir"
    )


def read_fingerprint(folder: str | Path) -> dict | None:
    path = Path(folder) / FINGERPRINT
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # written atomically, so only a hand edit gets here
        raise UsageError(f"{path}: unreadable fingerprint ({e}); remove it or use --overwrite_output_dir") from e


def write_fingerprint(folder: str | Path, fingerprint: Mapping[str, Any]) -> None:
    atomic_write_json(Path(folder) / FINGERPRINT, as_json(dict(fingerprint)))


# ---------------------------------------------------------------------------------------- checkpoints


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """checkpoint-N folders of a run, newest (highest N) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True)


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be loaded: its header must parse and its data must all be there."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is cut off ({size} bytes)"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"{path.name} has a header longer than the file"
        try:
            header = json.loads(f.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            return f"{path.name} has no valid safetensors header"
    if size < 8 + length + end:
        return f"{path.name} is cut off ({size} of {8 + length + end} bytes)"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """torch.save writes a zip archive whose directory comes last: a cut-off file has none."""
    if path.stat().st_size == 0:
        return f"{path.name} is empty"
    if not zipfile.is_zipfile(path):
        return f"{path.name} is not a complete torch file"
    return None


def _weights_present(folder: Path) -> bool:
    if any((folder / n).is_file() for n in ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin")):
        return True
    if (folder / "model.safetensors.index.json").is_file() or any(folder.glob("pytorch_model*.bin")):
        return True
    return any(p.is_dir() for p in folder.glob("global_step*"))  # DeepSpeed keeps the weights there


def _optimizer_present(folder: Path) -> bool:
    # DeepSpeed and FSDP keep the optimizer state in folders of their own.
    return (folder / "optimizer.pt").is_file() or any(folder.glob("global_step*")) or any(folder.glob("optimizer_*"))


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be resumed from (a save cut off by a kill or a full disk), or None.

    Every file resuming reads must parse: the Trainer state as JSON, each safetensors file to its last
    byte, each torch file as a whole archive; the weights and optimizer state must be there."""
    folder = Path(folder)
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "global_step" not in state:
            return f"{TRAINER_STATE} is not a trainer state"
    except FileNotFoundError:
        return f"{TRAINER_STATE} is missing"
    except (OSError, ValueError) as e:
        return f"{TRAINER_STATE} does not parse ({type(e).__name__})"
    if not _weights_present(folder):
        return "no model or adapter weights"
    if not _optimizer_present(folder):
        return "no optimizer state"
    return next(filter(None, map(_file_problem, sorted(folder.iterdir()))), None)


def _file_problem(path: Path) -> str | None:
    """Why a weight, torch or JSON file does not load whole (cut off, empty, not what it claims), or None."""
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _torch_file_problem(path)
    if path.suffix == ".json":
        return _json_problem(path)
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{path.name} does not parse ({type(e).__name__})"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint that was completely saved; each newer one is passed over with the reason."""
    for checkpoint in checkpoint_folders(output_dir):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning("Passing over %s: it was not completely saved (%s)", checkpoint, problem)
    return None


def remove_checkpoints(output_dir: str | Path) -> None:
    """Drop the checkpoints of an earlier run that is being started afresh, so that no later resume
    can pick one of them up."""
    for checkpoint in checkpoint_folders(output_dir):
        logger.warning("Starting afresh: removing %s of the earlier run", checkpoint)
        shutil.rmtree(checkpoint)


# --------------------------------------------------------------------------------------------- locking


class RunInUseError(UsageError):
    """Another process holds the run folder."""


# Folders this process holds, by resolved path: taking a lock again in the same process (a script's
# main() called twice, as tests and in-process sweeps do) keeps the one it has.
_HELD: dict[str, int] = {}


def is_lock_owner() -> bool:
    """Only the process of global rank 0 locks: the processes of one `accelerate launch` (or torchrun,
    or DeepSpeed launcher) are one run, and the launcher ends all of them when that one exits."""
    return int(os.environ.get("RANK", "0")) == 0


def lock_run_folder(folder: str | Path, script: str) -> None:
    """Hold an exclusive lock on `folder` until this process ends (even by kill -9: the kernel drops
    flock locks with the process) or `release_run_folder` is called."""
    if not is_lock_owner():
        return
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise RunInUseError(f"{folder} is in use by {holder}; wait for it to end or use another --output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{script} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
    _HELD[key] = fd


def lock_holder(folder: str | Path) -> str | None:
    """Who holds `folder`'s lock now (another process), or None: a model being trained is not one to load."""
    path = Path(folder) / LOCK
    if str(Path(folder).resolve()) in _HELD or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(fd)  # and with it the shared lock, if it was taken
    return None


def release_run_folder(folder: str | Path) -> None:
    fd = _HELD.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


# ------------------------------------------------------------------------------------- training runs

# Training arguments that change where or how a run is logged, saved, reported or sped up, but not the
# model it trains: a resume may change them. Every other argument is part of the fingerprint.
NOT_IN_FINGERPRINT = {
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "dataset_path", "train_data", "test_data",
    "validation_data",
    "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "disable_tqdm", "report_to", "run_name", "project",
    "trackio_space_id", "trackio_static_space_id", "trackio_bucket_id", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "save_steps",
    "save_strategy", "save_total_limit", "save_on_each_node", "save_only_model", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "skip_memory_metrics", "include_num_input_tokens_seen", "ddp_timeout",
    "local_rank", "debug", "dataset_num_proc", "torch_empty_cache_steps", "eval_accumulation_steps",
}  # fmt: skip


def _settings(arguments: Any) -> dict[str, Any]:
    values = arguments.to_dict() if hasattr(arguments, "to_dict") else dataclasses.asdict(arguments)
    return {k: v for k, v in values.items() if k not in NOT_IN_FINGERPRINT}


def training_fingerprint(
    model_args: Any, data_args: Any, training_args: Any, train_items: list, validation_items: list
) -> dict[str, Any]:
    """What decides the model a training run makes: the base model (by content where it is a local
    folder, by commit where it is a Hub id), the data by content, the number of processes and every setting
    that changes the result."""
    settings = {**_settings(model_args), **_settings(data_args), **_settings(training_args)}
    return as_json(
        {
            "model_hash": model_hash(model_args.model_name_or_path),
            "train_data_hash": data_hash(train_items, FIELDS),
            "validation_data_hash": data_hash(validation_items, FIELDS),
            "world_size": getattr(training_args, "world_size", 1),
            "settings": settings,
        }
    )


def holds_training_run(folder: str | Path) -> bool:
    """Whether `folder` holds a training run, finished or not (checkpoints, a Trainer state, results, a model)."""
    folder = Path(folder)
    names = (TRAINER_STATE, TRAIN_RESULTS, FINGERPRINT)
    return bool(checkpoint_folders(folder)) or holds_trained_model(folder) or any((folder / n).is_file() for n in names)


def finished_run(folder: str | Path) -> dict | None:
    """The training metrics of a run that finished (final model, run_config.yaml and train_results.json all
    saved, in that order), or None."""
    folder = Path(folder)
    if not (holds_trained_model(folder) and (folder / RUN_CONFIG).is_file()):
        return None
    try:
        return json.loads((folder / TRAIN_RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def saved_model_problem(folder: str | Path) -> str | None:
    """Why the final model in `folder` cannot be loaded (a file cut off or damaged), or None."""
    # Not .bin files: old checkpoints pickled them in torch's pre-zip format, which loads but is no archive.
    files = [path for path in model_files(Path(folder)) if path.suffix in (".safetensors", ".json")]
    return next(filter(None, map(_file_problem, files)), None)


def resume_point(model_args, data_args, training_args, train_items: list, validation_items: list) -> str | None:
    """start_training_run for train.py's arguments, on the main process first; the others then agree."""
    fingerprint = training_fingerprint(model_args, data_args, training_args, train_items, validation_items)
    with training_args.main_process_first(local=False, desc="checking the run folder"):
        checkpoint = start_training_run(
            training_args.output_dir,
            fingerprint,
            training_args.overwrite_output_dir,
            training_args.resume_from_checkpoint,
        )
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    return checkpoint


def start_training_run(
    output_dir: str, fingerprint: dict, overwrite: bool = False, resume_from: str | None = None
) -> str | None:
    """Lock the run folder and decide where training starts: the checkpoint to resume from, or None.

    A folder that holds a run with another fingerprint is refused in one line, unless `overwrite` (the
    earlier checkpoints are then removed, so that no later resume mixes the two runs). Call it on the
    main process first (TrainingArguments.main_process_first): the others then see what it decided."""
    if resume_from and overwrite:
        raise UsageError("--resume_from_checkpoint and --overwrite_output_dir true contradict each other; give one")
    lock_run_folder(output_dir, "train.py")
    folder = Path(output_dir)
    if resume_from:
        problem = checkpoint_problem(resume_from)
        if problem:
            raise UsageError(f"--resume_from_checkpoint {resume_from}: cannot resume from it ({problem})")
    saved = read_fingerprint(folder)
    if saved is not None:
        changed = differences(saved, fingerprint)
    else:
        changed = ["fingerprint: none (an earlier version made this run)"] if holds_training_run(folder) else []
    if changed and not overwrite:
        refuse_mismatch(str(folder), changed, "--overwrite_output_dir true")
    if is_lock_owner():
        if overwrite:
            remove_checkpoints(folder)
        write_fingerprint(folder, fingerprint)
    if resume_from:
        return resume_from
    return None if overwrite else last_complete_checkpoint(folder)
