"""Uploads to the Hugging Face Hub, each in one commit: a trained run's release (the final adapter or model, its
tokenizer, results, predictions and model card) and augmented training data (data, summary and dataset card).

    python -m domainqa.hub_upload OUTPUT_DIR --hub_model_id user/name [--private] [--dry_run]

The token comes from --hub_token or $HF_TOKEN (or the login huggingface_hub keeps); it is sent in the
Authorization header and written nowhere, and an upload stops if a file to upload contains it. train.py
--push_to_hub calls `push_run` after saving; `python -m augment ... --push_to_hub` calls `push_dataset`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import yaml

from . import checks
from .cards import CARD, model_card
from .config import ArgumentParser, UsageError, run_cli, setup_logging
from .embedded import portable_name
from .run_folder import (
    MODEL_FILES,
    PREDICTION_SUFFIXES,
    RESULT_FILES,
    RUN_CONFIG,
    TOKENIZER_FILES,
    holds_trained_model,
    load_run_config,
    metrics_files,
    prediction_stems,
)

logger = logging.getLogger(__name__)

PROG = "domainqa.hub_upload"
DATASET_FILES = ("data.jsonl", "summary.json", CARD)  # never the cache, rejected outputs or batch state


def upload(
    repo_id: str,
    repo_type: str,
    files: dict[str, Path | bytes],
    message: str,
    token: str | None = None,
    private: bool | None = None,
    api=None,
) -> list[str]:
    """Create `repo_id` if needed and commit `files` (path in the repo -> local file or contents) in one commit;
    returns their paths. The token comes from $HF_TOKEN when not given."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = token or os.environ.get("HF_TOKEN") or None
    if token:
        for name, content in files.items():
            data = content if isinstance(content, bytes) else content.read_bytes()
            if token.encode() in data:
                raise ValueError(f"{name} contains the Hub token; refusing to upload it")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes) else str(content))
        for name, content in files.items()
    ]
    api.create_commit(repo_id, operations, repo_type=repo_type, commit_message=message)
    logger.info("pushed %s to the Hub %s %s", ", ".join(files), repo_type, repo_id)
    return list(files)


# ---------------------------------------------------------------------------------------------- a run


def release_files(
    output_dir: str | os.PathLike, repo_id: str | None = None, include_predictions: bool = False
) -> dict[str, Path | bytes]:
    """What a release of `output_dir` holds, path in repo -> local file or contents; the card included.

    Prediction files carry the true label of every item they predict (a private test set's labels) and the
    local paths of the run: they are released only when asked for. run_config.yaml is released with its local
    paths reduced to file names."""
    folder = Path(output_dir)
    if not holds_trained_model(folder):
        raise UsageError(f"{folder} holds no trained adapter or model (adapter_config.json / config.json)")
    names = [*MODEL_FILES, *TOKENIZER_FILES, *RESULT_FILES, *metrics_files(folder)]
    if include_predictions:
        for stem in prediction_stems(folder):
            names += [f"{stem}{suffix}" for suffix in PREDICTION_SUFFIXES.values()]
    files: dict[str, Path | bytes] = {n: folder / n for n in dict.fromkeys(names) if (folder / n).is_file()}
    if "adapter_config.json" in files:
        files["adapter_config.json"] = _portable_adapter_config(folder)
    if RUN_CONFIG in files:
        files[RUN_CONFIG] = _portable_run_config(folder)
    files[CARD] = model_card(folder, repo_id, included=set(files)).encode("utf-8")
    return dict(sorted(files.items()))


def _portable_run_config(folder: Path) -> bytes:
    """run_config.yaml with every absolute path of data and outputs reduced to its last part: this machine's
    layout stays here. The base model keeps its name: infer.py loads the adapter onto it."""
    config = load_run_config(folder)
    portable = {
        k: Path(v).name if k != "model_name_or_path" and isinstance(v, str) and os.path.isabs(v) else v
        for k, v in config.items()
    }
    return yaml.safe_dump(portable, sort_keys=True).encode("utf-8")


def _portable_adapter_config(folder: Path) -> bytes:
    """adapter_config.json naming the base by its run_config name (Hub id) rather than a local cache path."""
    adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = load_run_config(str(folder)).get("model_name_or_path")
    if base:
        adapter["base_model_name_or_path"] = portable_name(base)
    return (json.dumps(adapter, indent=2, sort_keys=True) + "\n").encode("utf-8")


def push_run(
    output_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    api=None,
    include_predictions: bool = False,
) -> list[str]:
    """Release the run in `output_dir` as the model `repo_id`; returns the paths uploaded."""
    files = release_files(output_dir, repo_id, include_predictions)
    return upload(repo_id, "model", files, f"Release {Path(output_dir).name}", token, private, api)


# ------------------------------------------------------------------------------------------ a data set


def push_dataset(
    output_dir: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = True, api=None
) -> list[str]:
    """Upload the data, summary and card of an augment output as the dataset `repo_id`; returns the files."""
    folder = Path(output_dir)
    files: dict[str, Path | bytes] = {name: folder / name for name in DATASET_FILES if (folder / name).is_file()}
    return upload(repo_id, "dataset", files, "Add augmented PubMedQA data", token, private, api)


def main(args: list[str] | None = None) -> list[str]:
    parser = ArgumentParser(
        prog=f"python -m {PROG}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", help="A train.py output folder (after infer.py / evaluate.py if wanted).")
    parser.add_argument("--hub_model_id", required=True, help="user/name of the Hub model repository.")
    parser.add_argument("--hub_token", default=None, help="Default: $HF_TOKEN or the stored login.")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument("--dry_run", action="store_true", help="List the files and print the card; upload nothing.")
    parser.add_argument(
        "--include_test_predictions",
        action="store_true",
        help="Also upload the prediction files (they hold every predicted item's true label and local paths).",
    )
    options = parser.parse_args(args)
    try:
        checks.hub_repo_id("--hub_model_id", options.hub_model_id)
    except ValueError as e:
        raise UsageError(str(e)) from None
    setup_logging()
    if options.dry_run:
        files = release_files(options.output_dir, options.hub_model_id, options.include_test_predictions)
        print(files[CARD].decode("utf-8"))
        print("\n".join(f"would upload: {name}" for name in files))
        return list(files)
    return push_run(options.output_dir, options.hub_model_id, options.hub_token, options.private or None,
                    include_predictions=options.include_test_predictions)  # fmt: skip


if __name__ == "__main__":
    run_cli(main, PROG)
