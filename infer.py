"""Predict yes/no/maybe (or the labels of your own data set) for the test (or validation) items with a
fine-tuned model.

    python infer.py recipes/smollm2-135m/lora/original.yaml [--mode generate] [--adapter_path HUB_ID]
    accelerate launch --num_processes 8 infer.py RECIPE   # shards the items, merges one file

Writes <output_dir>/<name>.json (official PubMedQA format), <name>.jsonl (raw generations or label
scores) and <name>.meta.json (settings, counts, speed). The label set is the one the model was trained with
(run_config.yaml), and a split that training made by a seed must be the one made now (data_split.json).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import set_seed

from domainqa import config
from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, align_with_training, pipeline_keys
from domainqa.calibration import calibrate_rows, load_calibration
from domainqa.config import UsageError, run_cli, setup_logging
from domainqa.data import FIELDS
from domainqa.data_spec import fallback_label, known_labels, load_parts
from domainqa.families import family_for
from domainqa.hub_access import ModelSource, model_folder
from domainqa.io import atomic_write_json
from domainqa.modeling import dtype_name
from domainqa.predictions import (
    append_rows,
    prediction_meta,
    read_complete_rows,
    read_partial,
    resume_key,
    start_partial,
    write_predictions,
)
from domainqa.run_folder import (
    HUB_MODEL_PATTERNS,
    as_json,
    calibrated_stem,
    check_recorded_split,
    checkpoint_folders,
    content_hash,
    data_hash,
    differences,
    holds_trained_model,
    holds_training_run,
    load_run_config,
    lock_holder,
    lock_run_folder,
    model_hash,
    partial_file,
    predictions_files,
    predictions_name,
    release_run_folder,
    saved_model_problem,
)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = next(f.default for f in fields(InferenceArguments) if f.name == "output_dir")


def find_trained_model(args: InferenceArguments) -> str | None:
    """The trained model to predict with: --adapter_path, else output_dir's final model, else None (zero-shot,
    only where output_dir holds no training run or --zero_shot asks for it)."""
    if args.zero_shot:
        if args.adapter_path:
            raise UsageError("--zero_shot true predicts with the base model; it takes no --adapter_path")
        return None
    if args.adapter_path:
        if Path(args.adapter_path).is_dir() and args.output_dir == DEFAULT_OUTPUT_DIR:
            args.output_dir = args.adapter_path  # a run folder's predictions go beside its model
        return args.adapter_path
    if holds_trained_model(args.output_dir):
        return args.output_dir
    if holds_training_run(args.output_dir):
        newest = checkpoint_folders(args.output_dir)
        where = f"{newest[0].name}, " if newest else ""
        raise UsageError(
            f"{args.output_dir} holds an interrupted training run ({where}no final model): rerun train.py to finish "
            "it, predict with a checkpoint (--adapter_path CHECKPOINT), or with the base model (--zero_shot true)"
        )
    return None


def check_trained_folder(trained: str | None, local: str | None) -> None:
    """A local trained model must be whole and not in training now: one line, not a loader's traceback."""
    if not local or not Path(local).is_dir():
        return
    holder = lock_holder(local)
    if holder:
        raise UsageError(f"{trained} is being trained by {holder}; predict once it has finished")
    problem = saved_model_problem(local)
    if problem:
        raise UsageError(f"{trained}: the trained model cannot be loaded ({problem}); retrain it or restore the file")


def trained_model_source(trained: str | None) -> ModelSource | None:
    """The trained model as a local folder; one named by its Hub id (user/name[@revision]) is fetched at the
    commit its revision names now, and that commit is part of the fingerprint."""
    return model_folder(trained, HUB_MODEL_PATTERNS) if trained else None


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
    setup_logging()
    # Launched on several processes without GPUs (accelerate_configs/cpu_2proc.yaml), PartialState() would
    # treat each process as a lone main process, all writing the same files; join a gloo group instead.
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    set_seed(0)
    # Everything that can be wrong with the input is checked before the model loads or anything is written.
    trained = find_trained_model(infer_args)  # as given: a folder, or a Hub id
    source = trained_model_source(trained)
    local = source.folder if source else None  # what every loader reads
    check_trained_folder(trained, local)
    align_with_training(model_args, data_args, load_run_config(local) if local else {}, trained, infer_args)
    if known_labels(data_args):  # a bad fallback stops the run now where the label set needs no data
        infer_args.unparsed_fallback = fallback_label(infer_args.unparsed_fallback, known_labels(data_args))
    family = family_for(model_args, data_args, local)
    family.check_inference(infer_args, trained)
    data = load_parts(data_args)
    infer_args.unparsed_fallback = fallback_label(infer_args.unparsed_fallback, data.labels)
    check_recorded_split(local, data)
    items = data[infer_args.eval_split][: data_args.max_eval_samples]
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
        "dtype": dtype_name(model_args.dtype),  # the precision computed in: a resume never mixes two
        **asdict(data_args),
        **asdict(infer_args),
    }
    complete = complete_predictions(stem, settings, infer_args.overwrite_output_dir)
    if complete is not None:  # a calibration fitted since is still applied to it
        rows, _ = read_complete_rows(predictions_files(stem)["rows"])
        complete["files"].update(calibrated_files(stem, rows, infer_args, data.labels))
        release_run_folder(infer_args.output_dir)
        return complete
    partial = partial_file(stem, state.process_index)
    read_partial(partial, resume_key(settings), infer_args.overwrite_output_dir)  # refuses a changed run now

    predict = family.predictor(local, data.labels, infer_args, state.device, items[0])
    start = time.perf_counter()
    with state.split_between_processes(items) as shard:
        done = start_partial(partial, resume_key(settings), infer_args.overwrite_output_dir)
        if done:
            logger.info("Resuming: %d of %d items already predicted in %s", len(done), len(shard), partial)
        append_rows(partial, predict([e for e in shard if e["id"] not in done]), len(shard), len(done))
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    seconds = time.perf_counter() - start
    partials = [partial_file(stem, i) for i in range(state.num_processes)]
    done = {row["id"]: row for path in partials for row in read_partial(path, resume_key(settings))[0]}
    missing = [e["id"] for e in items if e["id"] not in done]
    if missing:  # a shard that did not finish; its rows are kept for the next run
        raise RuntimeError(f"{len(missing)} item(s) missing from {partials[0].name}..: {', '.join(missing[:5])}")
    rows = [{**done[e["id"]], "label": e["final_decision"]} for e in items]
    write_predictions(stem, rows, infer_args.unparsed_fallback)
    files = {kind: str(path) for kind, path in predictions_files(stem).items()}
    files.update(calibrated_files(stem, rows, infer_args, data.labels))
    meta = {
        "zero_shot": trained is None,
        "num_examples": len(rows),
        "num_unparsed": sum(not r["parsed"] for r in rows),
        "num_truncated": sum(r.get("truncated", False) for r in rows),
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


def complete_predictions(stem: Path, settings: dict, overwrite: bool) -> dict | None:
    """The metadata of the prediction set at `stem` if it is complete and was made under these settings (a
    rerun then has nothing to do), else None: it is predicted (again)."""
    files = predictions_files(stem)
    meta = prediction_meta(files["official"])
    if overwrite or not meta or not all(path.is_file() for path in files.values()):
        return None
    if differences(resume_key(meta), as_json(resume_key(settings))):
        logger.info("%s.json was made under other settings: predicting it again", stem)
        return None
    logger.info("%s.json is complete (%d items) under these settings: nothing to do", stem, meta["num_examples"])
    return {**meta, "files": {kind: str(path) for kind, path in files.items()}}


def calibrated_files(stem: Path, rows: list[dict], infer_args: InferenceArguments, labels) -> dict[str, str]:
    """The calibrated prediction set beside the raw one, where the run has a calibration (score mode only)."""
    calibration = load_calibration(infer_args.output_dir, labels) if infer_args.mode == "score" else None
    if not calibration or not write_calibrated_predictions(stem, rows, calibration, infer_args.unparsed_fallback):
        return {}
    return {f"calibrated_{kind}": str(path) for kind, path in predictions_files(calibrated_stem(stem)).items()}


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


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
