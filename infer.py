"""Predict yes/no/maybe (or the labels of your own data set) for the test (or validation) items with a
fine-tuned model.

    python infer.py recipes/smollm2-135m/lora/original.yaml [--mode generate] [--adapter_path HUB_ID]
    accelerate launch --num_processes 8 infer.py RECIPE   # shards the items, merges one file

Writes <output_dir>/<name>.json (official PubMedQA format), <name>.jsonl (raw generations or label
scores) and <name>.meta.json (settings, counts, speed). The label set is the one the model was trained with
(run_config.yaml), and a split that training made by a seed must be the one made now (data_split.json).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import set_seed

from domainqa import config
from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, pipeline_keys
from domainqa.calibration import calibrate_rows, load_calibration
from domainqa.classifier import (
    check_causal_lm_settings,
    check_classifier_inference,
    classify,
    is_classifier_model,
    load_classifier_for_inference,
    uses_classifier,
)
from domainqa.config import UsageError, run_cli
from domainqa.data import FIELDS
from domainqa.hub_access import ModelSource, model_folder
from domainqa.inference import generate_answers, longest_first, score_labels
from domainqa.io import atomic_write_json
from domainqa.modeling import load_for_inference
from domainqa.predictions import cut_to_complete_rows, read_complete_rows, write_predictions
from domainqa.prompts import PromptFormat
from domainqa.run_folder import (
    HUB_MODEL_PATTERNS,
    as_json,
    calibrated_stem,
    content_hash,
    data_hash,
    differences,
    lock_run_folder,
    model_hash,
    partial_file,
    predictions_files,
    predictions_name,
    refuse_mismatch,
    release_run_folder,
)
from domainqa.runs import TRAINED_WITH_FIELDS, load_run_config
from domainqa.task import check_recorded_split, fallback_label, known_labels, load_task

logger = logging.getLogger(__name__)


def find_trained_model(args: InferenceArguments) -> str | None:
    if args.adapter_path:
        return args.adapter_path
    folder = Path(args.output_dir)
    if (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
        return str(folder)
    return None


def trained_model_source(trained: str | None) -> ModelSource | None:
    """The trained model as a local folder; one named by its Hub id (user/name[@revision]) is fetched at the
    commit its revision names now, and that commit is part of the fingerprint."""
    return model_folder(trained, HUB_MODEL_PATTERNS) if trained else None


def align_with_training(
    model_args: ModelArguments, data_args: DataArguments, trained: str | None, folder: str | None = None
) -> None:
    """Use the prompt settings and layer count the model was trained with (read from `folder`, default
    `trained`); a different explicit choice is an error."""
    folder = folder or trained
    saved = load_run_config(folder) if folder else {}
    defaults = {f.name: f.default for cls in (ModelArguments, DataArguments) for f in fields(cls)}
    for name in TRAINED_WITH_FIELDS:
        if name not in saved or name == "labels" and saved[name] is None:  # a PubMedQA run records no label set
            continue
        target = model_args if hasattr(model_args, name) else data_args
        current = getattr(target, name)
        if current != saved[name] and current != defaults[name]:
            raise UsageError(f"{name}={current!r} but {trained} was trained with {name}={saved[name]!r}")
        setattr(target, name, saved[name])


ARGUMENTS = (ModelArguments, DataArguments, InferenceArguments)


def parse_args(
    args: list[str] | None = None, settings: dict | None = None
) -> tuple[ModelArguments, DataArguments, InferenceArguments]:
    """The command line (default: this process's); `settings` are recipe keys set on top of the recipe."""
    return config.parse_args(*ARGUMENTS, args=args, settings=settings, shared_keys=pipeline_keys())


def prediction_files(data_args: DataArguments, infer_args: InferenceArguments) -> dict[str, Path]:
    """The files these settings predict into (official JSON, rows, metadata), before or after the run."""
    return predictions_files(prediction_stem(data_args, infer_args))


def prediction_stem(data_args: DataArguments, infer_args: InferenceArguments) -> Path:
    name = predictions_name(data_args.split, infer_args.eval_split, infer_args.mode, infer_args.predictions_name)
    return Path(infer_args.output_dir) / name


def main(model_args: ModelArguments, data_args: DataArguments, infer_args: InferenceArguments) -> dict:
    """Predict and write the prediction files; returns their metadata, with `files`: the paths written
    (empty on the processes other than the main one)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # Launched on several processes without GPUs (accelerate_configs/cpu_2proc.yaml), PartialState() would
    # treat each process as a lone main process, all writing the same files; join a gloo group instead.
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    set_seed(0)
    if known_labels(data_args):  # a bad fallback stops the run now where the label set needs no data
        infer_args.unparsed_fallback = fallback_label(infer_args.unparsed_fallback, known_labels(data_args))

    trained = find_trained_model(infer_args)  # as given: a folder, or a Hub id
    source = trained_model_source(trained)
    local = source.folder if source else None  # what every loader reads
    align_with_training(model_args, data_args, trained, local)
    classifier = uses_classifier(model_args.task_type, model_args.model_name_or_path, local)
    if classifier:
        check_classifier_inference(local, infer_args.mode)
    else:
        check_causal_lm_settings(model_args.num_hidden_layers)
    task = load_task(data_args)
    infer_args.unparsed_fallback = fallback_label(infer_args.unparsed_fallback, task.labels)
    check_recorded_split(local, task)
    items = task[infer_args.eval_split][: data_args.max_eval_samples]
    lock_run_folder(infer_args.output_dir, "infer.py")  # the main process, before any process writes
    state.wait_for_everyone()
    if trained is None:
        logger.warning("No trained model in %s: predicting zero-shot with the base model", infer_args.output_dir)

    stem = prediction_stem(data_args, infer_args)
    settings = {
        "model": model_args.model_name_or_path,
        "trained_model": trained,
        # Contents, not names: a retrained adapter or an edited data file under the same path is another run.
        "model_hash": model_hash(model_args.model_name_or_path),
        "adapter_hash": content_hash(local),
        # A Hub id names a commit, which a push under the same id moves: the commit is the model, not the name.
        "adapter_commit": source.commit if source else None,
        "data_hash": data_hash(items, FIELDS),
        **asdict(data_args),
        **asdict(infer_args),
    }
    partial = partial_file(stem, state.process_index)
    _read_partial(partial, resume_key(settings), infer_args.overwrite_output_dir)  # refuses a changed run now

    if classifier:
        model, tokenizer = load_classifier_for_inference(
            model_args.model_name_or_path, local, model_args.dtype, task.labels, model_args.num_hidden_layers
        )
    else:
        model, tokenizer = load_for_inference(model_args.model_name_or_path, local, model_args.dtype)
    model.to(state.device)
    prompt_format = None  # a classifier reads question and context as a text pair, no prompt
    if not classifier:
        prompt_format = PromptFormat(
            data_args.prompt_format, tokenizer, data_args.answer_style, data_args.system_prompt, task.labels
        )
    if infer_args.mode == "score" and prompt_format is not None:
        prompt_format.scoring_context(items[0])  # fails early for formats that cannot be scored

    start = time.perf_counter()
    with state.split_between_processes(items) as shard:
        predict_resumable(model, tokenizer, prompt_format, shard, infer_args, partial, resume_key(settings))
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    seconds = time.perf_counter() - start
    partials = [partial_file(stem, i) for i in range(state.num_processes)]
    done = {row["id"]: row for path in partials for row in _read_partial(path, resume_key(settings))[0]}
    missing = [e["id"] for e in items if e["id"] not in done]
    if missing:  # a shard that did not finish; its rows are kept for the next run
        raise RuntimeError(f"{len(missing)} item(s) missing from {partials[0].name}..: {', '.join(missing[:5])}")
    rows = [{**done[e["id"]], "label": e["final_decision"]} for e in items]
    write_predictions(stem, rows, infer_args.unparsed_fallback)
    files = {kind: str(path) for kind, path in predictions_files(stem).items()}
    calibration = load_calibration(infer_args.output_dir, task.labels) if infer_args.mode == "score" else None
    if calibration and write_calibrated_predictions(stem, rows, calibration, infer_args.unparsed_fallback):
        calibrated = predictions_files(calibrated_stem(stem)).items()
        files.update({f"calibrated_{kind}": str(path) for kind, path in calibrated})
    meta = {
        "num_examples": len(rows),
        "num_unparsed": sum(not r["parsed"] for r in rows),
        "seconds": round(seconds, 3),
        "processes": state.num_processes,
        **settings,
    }
    atomic_write_json(predictions_files(stem)["meta"], meta)
    for path in partials:
        path.unlink(missing_ok=True)
    release_run_folder(infer_args.output_dir)
    logger.info("Wrote %s.json (%d items, %d unparsed)", stem, len(rows), meta["num_unparsed"])
    return {**meta, "files": files}


def write_calibrated_predictions(stem: Path, rows: list[dict], calibration: dict, unparsed_fallback: str) -> bool:
    """<stem>_calibrated.*: the same label scores decided with the run's calibration, unless it was fitted on
    these very items (then it would score itself); returns whether they were written."""
    if set(calibration["ids"]) & {row["id"] for row in rows}:
        logger.warning("Not writing calibrated predictions: the calibration was fitted on some of these items")
        return False
    calibrated = calibrated_stem(stem)
    write_predictions(calibrated, calibrate_rows(rows, calibration["bias"]), unparsed_fallback)
    meta = {key: calibration[key] for key in ("bias", "fitted_on", "num_examples", "raw", "calibrated")}
    atomic_write_json(predictions_files(calibrated)["meta"], {"raw_predictions": str(stem), "calibration": meta})
    logger.info("Wrote %s.json (calibration fitted on %s items)", calibrated, calibration["fitted_on"])
    return True


# The settings that change what a row says; a partial file made under others is not resumed. The data
# file counts by its content (data_hash), so a moved copy of it resumes.
PREDICTION_SETTINGS = (
    "model", "trained_model", "model_hash", "adapter_hash", "adapter_commit", "data_hash", "split", "fold",
    "prompt_format", "answer_style", "system_prompt", "eval_split", "mode", "num_beams", "repetition_penalty",
    "max_new_tokens", "labels",
)  # fmt: skip


def resume_key(settings: dict) -> dict:
    return {name: settings[name] for name in PREDICTION_SETTINGS}


def _read_partial(path: Path, settings: dict, overwrite: bool = False) -> tuple[list[dict], int]:
    """Rows already predicted under the same settings, and the bytes they fill: a line cut off by a
    kill or a full disk ends them. Rows made under other settings are refused, or with `overwrite`
    dropped, so that one file never holds rows of two runs."""
    rows, length = read_complete_rows(path)
    if not rows or not isinstance(rows[0].get("settings"), dict):
        return [], 0  # nothing yet, or only a cut-off header
    changed = differences(rows[0]["settings"], as_json(settings))
    if changed and not overwrite:
        refuse_mismatch(str(path), changed, "--overwrite_output_dir true")
    if changed or any("id" not in row for row in rows[1:]):
        return [], 0
    return rows[1:], length


def predict_resumable(model, tokenizer, prompt_format, items, args, partial: Path, settings: dict) -> None:
    """Predict the items not yet in `partial`, appending each row as soon as it exists."""
    done_rows, length = _read_partial(partial, settings, args.overwrite_output_dir)
    done = {row["id"] for row in done_rows}
    if not done:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")
    else:
        cut_to_complete_rows(partial, length)  # appended rows must not continue a cut-off line
        logger.info("Resuming: %d of %d items already predicted in %s", len(done), len(items), partial)
    todo = [e for e in items if e["id"] not in done]
    if args.mode == "score":
        score = classify if is_classifier_model(model) else score_labels
        # Rows are keyed by id, so the prediction files keep the items' order whatever order they are scored in.
        rows = score(model, tokenizer, prompt_format, longest_first(todo), args.batch_size)
    else:
        rows = generate_answers(
            model,
            tokenizer,
            prompt_format,
            todo,
            batch_size=args.batch_size,
            num_beams=args.num_beams,
            repetition_penalty=args.repetition_penalty,
            max_new_tokens=args.max_new_tokens,
        )
    try:
        with partial.open("a", encoding="utf-8") as f, tqdm(total=len(items), initial=len(done), unit="ex") as bar:
            for row in rows:
                f.write(json.dumps(row) + "\n")
                f.flush()
                bar.update(1)
    except OSError as e:  # a full disk: name the file (a rerun keeps its complete rows)
        raise OSError(e.errno, e.strerror, str(partial)) from e


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
