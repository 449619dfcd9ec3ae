"""Predict yes/no/maybe for the test (or validation) items with a fine-tuned model.

    python infer.py recipes/smollm2-135m/lora/original.yaml [--mode generate] [--adapter_path HUB_ID]
    accelerate launch --num_processes 8 infer.py RECIPE   # shards the items, merges one file

Writes <output_dir>/<name>.json (official PubMedQA format), <name>.jsonl (raw generations or label
scores) and <name>.meta.json (settings, counts, speed).
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

from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, pipeline_keys
from domainqa.config import UsageError, parse_args, run_cli
from domainqa.data import load_task_data
from domainqa.hub import load_hub_run_config
from domainqa.inference import generate_answers, score_labels
from domainqa.io import atomic_write_json
from domainqa.modeling import load_for_inference
from domainqa.predictions import write_predictions
from domainqa.prompts import PromptFormat
from domainqa.runs import PROMPT_FIELDS, load_run_config

logger = logging.getLogger(__name__)


def find_trained_model(args: InferenceArguments) -> str | None:
    if args.adapter_path:
        return args.adapter_path
    folder = Path(args.output_dir)
    if (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
        return str(folder)
    return None


def align_with_training(model_args: ModelArguments, data_args: DataArguments, trained: str | None) -> None:
    """Use the prompt settings the model was trained with; a different explicit choice is an error."""
    if not trained:
        saved = {}
    else:
        saved = load_run_config(trained) if Path(trained).is_dir() else load_hub_run_config(trained)
    defaults = {f.name: f.default for cls in (ModelArguments, DataArguments) for f in fields(cls)}
    for name in PROMPT_FIELDS:
        if name not in saved:
            continue
        target = model_args if hasattr(model_args, name) else data_args
        current = getattr(target, name)
        if current != saved[name] and current != defaults[name]:
            raise UsageError(f"{name}={current!r} but {trained} was trained with {name}={saved[name]!r}")
        setattr(target, name, saved[name])


def main(args: list[str] | None = None) -> dict:
    model_args, data_args, infer_args = parse_args(
        ModelArguments, DataArguments, InferenceArguments, args=args, shared_keys=pipeline_keys()
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # Launched on several processes without GPUs (accelerate_configs/cpu_2proc.yaml), PartialState() would
    # treat each process as a lone main process, all writing the same files; join a gloo group instead.
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    set_seed(0)

    trained = find_trained_model(infer_args)
    align_with_training(model_args, data_args, trained)
    items = load_task_data(data_args.dataset_path, data_args.split, data_args.fold)[infer_args.eval_split]
    items = items[: data_args.max_eval_samples]
    if trained is None:
        logger.warning("No trained model in %s: predicting zero-shot with the base model", infer_args.output_dir)

    model, tokenizer = load_for_inference(model_args.model_name_or_path, trained, model_args.dtype)
    model.to(state.device)
    prompt_format = PromptFormat(data_args.prompt_format, tokenizer, data_args.answer_style, data_args.system_prompt)
    if infer_args.mode == "score":
        prompt_format.scoring_context(items[0])  # fails early for formats that cannot be scored

    stem = Path(infer_args.output_dir) / (
        infer_args.predictions_name or f"predictions_{data_args.split}_{infer_args.eval_split}_{infer_args.mode}"
    )
    settings = {
        "model": model_args.model_name_or_path,
        "trained_model": trained,
        **asdict(data_args),
        **asdict(infer_args),
    }
    start = time.perf_counter()
    with state.split_between_processes(items) as shard:
        partial = stem.with_name(f"{stem.name}.partial{state.process_index}.jsonl")
        predict_resumable(model, tokenizer, prompt_format, shard, infer_args, partial, resume_key(settings))
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    seconds = time.perf_counter() - start
    partials = [stem.with_name(f"{stem.name}.partial{i}.jsonl") for i in range(state.num_processes)]
    done = {row["id"]: row for path in partials for row in _read_partial(path, resume_key(settings))}
    rows = [{**done[e["id"]], "label": e["final_decision"]} for e in items]
    write_predictions(stem, rows, infer_args.unparsed_fallback)
    meta = {
        "num_examples": len(rows),
        "num_unparsed": sum(not r["parsed"] for r in rows),
        "seconds": round(seconds, 3),
        "processes": state.num_processes,
        **settings,
    }
    atomic_write_json(stem.with_suffix(".meta.json"), meta)
    for path in partials:
        path.unlink(missing_ok=True)
    logger.info("Wrote %s.json (%d items, %d unparsed)", stem, len(rows), meta["num_unparsed"])
    return meta


# The settings that change what a row says; a partial file made under others is not resumed.
PREDICTION_SETTINGS = (
    "model", "trained_model", "dataset_path", "split", "fold", "prompt_format", "answer_style", "system_prompt",
    "eval_split", "mode", "num_beams", "repetition_penalty", "max_new_tokens",
)  # fmt: skip


def resume_key(settings: dict) -> dict:
    return {name: settings[name] for name in PREDICTION_SETTINGS}


def _read_partial(path: Path, settings: dict) -> list[dict]:
    """Rows already predicted under the same settings; a line cut off by a kill is ignored."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if not rows or rows[0].get("settings") != json.loads(json.dumps(settings)):
        return []
    return rows[1:]


def predict_resumable(model, tokenizer, prompt_format, items, args, partial: Path, settings: dict) -> None:
    """Predict the items not yet in `partial`, appending each row as soon as it exists."""
    done = {row["id"] for row in _read_partial(partial, settings)}
    if not done:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")
    else:
        logger.info("Resuming: %d of %d items already predicted in %s", len(done), len(items), partial)
    todo = [e for e in items if e["id"] not in done]
    if args.mode == "score":
        rows = score_labels(model, tokenizer, prompt_format, todo, args.batch_size)
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
    with partial.open("a", encoding="utf-8") as f, tqdm(total=len(items), initial=len(done), unit="ex") as progress:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            f.flush()
            progress.update(1)


if __name__ == "__main__":
    run_cli(main)
