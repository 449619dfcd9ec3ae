"""Scaffold pipeline recipes recipes/<model>/<peft>/<data>.yaml from the tables below.

The YAML files are the source of truth and are edited by hand; this script only writes first versions, and
never overwrites a recipe that exists (unless --overwrite). Run from the repository root:

    python recipes/generate.py --from llama-7b --model mistral-7b --model_name_or_path mistralai/Mistral-7B-v0.1
    python recipes/generate.py          # write the shipped models' recipes that are missing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from domainqa.run_folder import predictions_name

RECIPES = Path(__file__).resolve().parent

# Paper defaults (Guo et al. 2023): lr 5e-5, AdamW, linear warm-up, accumulation 32, ~1,024 tokens a batch.
# PQA-L question + context is 212 words on average (411 at most), about 300-600 tokens with these tokenizers,
# so 2 sequences make a micro-batch of about 1,024 tokens.
TRAINING = {
    "learning_rate": 5.0e-5,
    "optim": "adamw_torch",
    "lr_scheduler_type": "linear",
    "warmup_steps": 0.1,  # a float below 1 is a ratio of the total steps in this transformers version
    "gradient_accumulation_steps": 32,
    "per_device_train_batch_size": 2,
    "max_length": 1024,
    "num_train_epochs": 10,  # not reported by the paper; our choice
    "seed": 42,
    "logging_steps": 1,
    "save_strategy": "epoch",
    "eval_strategy": "epoch",  # validation accuracy and macro-F1 of label scoring at every epoch, in TensorBoard
    "save_total_limit": 2,
    "report_to": "tensorboard",  # curves under <output_dir>/runs (tensorboard --logdir outputs)
}

# The paper also reports temperature 0.8, which beam search without sampling never reads: not a setting here.
INFERENCE = {"num_beams": 5, "repetition_penalty": 2.0, "eval_split": "test"}

# The blocks of a recipe, as alignment-handbook's recipes group their keys; output_dir is training's (infer.py
# reads the model from it and writes its predictions beside it).
GROUPS = {
    "Model": ("model_name_or_path", "dtype", "peft_method", "lora_r", "lora_alpha", "lora_dropout",
              "lora_target_modules", "num_virtual_tokens"),
    "Data": ("split", "train_data", "prompt_format"),
    "Inference": ("mode", "eval_split", "batch_size", "num_beams", "repetition_penalty"),
}  # fmt: skip

LORA_R = 4
LORA_ALPHA = 256  # BioGPT-Large's best alpha in the paper's sweep 16..512 (accuracy 0.638)
PREFIX_TOKENS = 128  # BioGPT-Large's best prefix length in the paper's sweep 16..512 (accuracy 0.430)

# Precision: TRL turns bf16 on unless told otherwise, which fails on CPUs and on V100s (no bf16). The paper's
# models ran on 8x V100, so their recipes use fp16 mixed precision; SmolLM2 trains in float32 on a CPU.
MODELS = {
    "biogpt-large": {
        "title": "BioGPT-Large (1.6B)",
        "keys": {
            "model_name_or_path": "microsoft/BioGPT-Large",
            "dtype": "float32",
            "prompt_format": "biogpt",
            "lora_target_modules": ["q_proj", "v_proj"],
            "activation_checkpointing": True,
            "bf16": False,
            "fp16": True,
        },
        "mode": "generate",
        "infer_batch_size": 8,
        "paper": True,
    },
    "llama-7b": {
        "title": "LLaMA-7b",
        "keys": {
            "model_name_or_path": "huggyllama/llama-7b",
            "dtype": "float16",
            "prompt_format": "biogpt",
            "lora_target_modules": ["q_proj", "v_proj"],
            "activation_checkpointing": True,
            "bf16": False,
            "fp16": True,
        },
        "mode": "generate",
        "infer_batch_size": 4,
        "paper": True,
    },
    "smollm2-135m": {
        "title": "SmolLM2-135M-Instruct (embedded, runs on a CPU)",
        "keys": {
            "model_name_or_path": "embedded:SmolLM2-135M-Instruct",
            "dtype": "float32",
            "prompt_format": "chat",
            "lora_target_modules": ["q_proj", "v_proj"],
            "activation_checkpointing": False,
            "bf16": False,
        },
        "mode": "score",  # fast on a CPU and never unparseable; --mode generate runs the paper's beam search
        "infer_batch_size": 16,
        "paper": False,
        "note": "Not in the paper: the small model that runs on a CPU, same method.",
    },
}

# Alpaca-7b is LLaMA-7b instruction-tuned: the same settings, other weights.
MODELS["alpaca-7b"] = {
    **MODELS["llama-7b"],
    "title": "Alpaca-7b",
    "keys": {**MODELS["llama-7b"]["keys"], "model_name_or_path": "chavinlo/alpaca-native"},
}

LLMS = ("gpt-3.5-turbo", "gpt-4")
STRATEGIES = ("rewriteqa", "newqa", "combinedqa")
COMBINED = "gpt-3.5-turbo+gpt-4-combinedqa"  # merged in recipes/augment/merges.yaml
PAPER_DATA = ("original", *(f"{llm}-{s}" for llm in LLMS for s in STRATEGIES), COMBINED)
LOCAL_DATA = tuple(f"smollm2-local-{s}" for s in STRATEGIES)

# Paper table rows (paper split, 500 test items) a recipe reproduces: (model, peft, data) -> text.
PAPER_ROWS = {
    ("biogpt-large", "lora", "original"): "BioGPT-Large, LoRA, original data: acc 0.638, macro-F1 0.393 (alpha 256)",
    ("biogpt-large", "prefix", "original"): "BioGPT-Large, prefix tuning, original data: acc 0.430, F1 0.388 (128)",
    ("llama-7b", "lora", "original"): "LLaMA-7b, LoRA, original data: acc 0.600, macro-F1 0.495 (best alpha)",
    ("alpaca-7b", "lora", "original"): "Alpaca-7b, LoRA, original data: acc 0.380, macro-F1 0.335 (best alpha)",
    ("llama-7b", "lora", "gpt-3.5-turbo-rewriteqa"): "LLaMA-7b, LoRA, GPT-3.5 rewriteQA: acc 0.642, macro-F1 0.498",
    ("biogpt-large", "lora", "gpt-3.5-turbo-rewriteqa"): "BioGPT-Large, LoRA, GPT-3.5 rewriteQA: acc 0.720, F1 0.498",
    ("biogpt-large", "lora", "gpt-4-newqa"): "BioGPT-Large, LoRA, GPT-4 newQA (headline): acc 0.754, F1 0.520",
    ("biogpt-large", "lora", "gpt-4-combinedqa"): "BioGPT-Large, LoRA, GPT-4 combinedQA: acc 0.724, macro-F1 0.518",
}


def new_model(source: str, model_name_or_path: str, title: str) -> dict:
    """A model entry with the settings of `source` (precision, prompt format, LoRA modules, batch sizes), other
    weights, and no claim to a paper row."""
    spec = MODELS[source]
    keys = {**spec["keys"], "model_name_or_path": model_name_or_path}
    note = f"Not in the paper: {title} with the paper's method and the settings of {source}."
    # A GPU model's copy keeps its `accelerate launch` command.
    return {**spec, "title": title, "keys": keys, "paper": False, "note": note, "accelerate": spec["paper"]}


def data_names(model: str) -> tuple[str, ...]:
    return PAPER_DATA + (LOCAL_DATA if model == "smollm2-135m" else ())


def accelerate_config(model: str) -> str:
    # One GPU keeps the paper's effective batch (2 x 32 sequences); on N GPUs divide
    # gradient_accumulation_steps by N (recipes/README.md).
    return "cpu.yaml" if model == "smollm2-135m" else "single_gpu.yaml"


def recipe(model: str, peft: str, data: str, spec: dict | None = None) -> tuple[dict, str]:
    """The recipe's keys and its comment header (`spec`: the model's entry, default MODELS[model])."""
    spec = spec or MODELS[model]
    keys = dict(spec["keys"])
    keys["peft_method"] = peft
    if peft == "lora":
        keys["lora_r"] = LORA_R
        keys["lora_alpha"] = LORA_ALPHA
        keys["lora_dropout"] = 0.05
    else:
        del keys["lora_target_modules"]
        keys["num_virtual_tokens"] = PREFIX_TOKENS
    keys["split"] = "paper"
    if data != "original":
        keys["train_data"] = f"outputs/augment/{data}"
    keys.update(TRAINING)
    keys["output_dir"] = f"outputs/{model}/{peft}/{data}"
    keys.update(INFERENCE)
    keys["mode"] = spec["mode"]
    keys["batch_size"] = spec["infer_batch_size"]

    path = f"recipes/{model}/{peft}/{data}.yaml"
    data_text = "the original PQA-L training items (paper split)" if data == "original" else f"augmented data {data}"
    row = PAPER_ROWS.get((model, peft, data))
    if row:
        reproduces = f"Reproduces the paper's row: {row}."
    elif spec["paper"]:
        reproduces = "A cell of the paper's grid with no reported number."
    else:
        reproduces = spec["note"]
    launch = (
        f"accelerate launch --config_file accelerate_configs/{accelerate_config(model)} train.py {path}"
        if spec.get("accelerate", spec["paper"])
        else f"python train.py {path}"
    )
    predictions = f"{keys['output_dir']}/{predictions_name('paper', 'test', keys['mode'])}.json"
    header = "\n".join(
        [
            f"# {spec['title']}, {'LoRA' if peft == 'lora' else 'prefix tuning'}, {data_text}.",
            f"# {reproduces}",
            f"# Train: {launch}",
            f"# Predict: python infer.py {path}",
            f"# Score: python evaluate.py --predictions {predictions}",
            "# Edit this file by hand: it is the source of truth (recipes/generate.py wrote its first version).",
        ]
    )
    return keys, header


def all_recipes():
    for model in MODELS:
        for peft in ("lora", "prefix"):
            for data in data_names(model):
                yield model, peft, data


def blocks(keys: dict) -> dict[str, list[str]]:
    """The keys of each block, in GROUPS' order; every key GROUPS does not name is a training setting."""
    named = {name: [key for key in names if key in keys] for name, names in GROUPS.items()}
    grouped = {key for names in GROUPS.values() for key in names}
    training = [key for key in keys if key not in grouped]
    return {"Model": named["Model"], "Data": named["Data"], "Training": training, "Inference": named["Inference"]}


def render(keys: dict, header: str) -> str:
    """The keys in blocks under a comment each (Model, Data, Training, Inference), one key a line; lists in flow
    style ([q_proj, v_proj])."""
    lines = [header]
    for name, block in blocks(keys).items():
        lines += ["", f"# {name}"]
        for key in block:
            value = keys[key]
            if isinstance(value, list):
                lines.append(f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=1000).strip())
            else:
                lines.append(yaml.safe_dump({key: value}, default_flow_style=False, width=1000).strip())
    return "\n".join(lines) + "\n"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", choices=sorted(MODELS), help="copy this model's settings")
    parser.add_argument("--model", help="with --from: the new model's folder name under recipes/ (e.g. mistral-7b)")
    parser.add_argument("--model_name_or_path", help="with --from: the new model's Hub id or local folder")
    parser.add_argument("--title", help="with --from: the model's name in the recipe headers (default --model)")
    parser.add_argument("--recipes_dir", type=Path, default=RECIPES, help="where to write (default: this folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace recipes that exist (hand edits are lost)")
    args = parser.parse_args(argv)
    if args.source and not (args.model and args.model_name_or_path):
        parser.error("--from needs --model and --model_name_or_path")
    if args.source and args.model in MODELS:
        parser.error(f"--model {args.model} is a shipped model; choose a new folder name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.source:
        spec = new_model(args.source, args.model_name_or_path, args.title or args.model)
        jobs = [(args.model, peft, data, spec) for peft in ("lora", "prefix") for data in data_names(args.source)]
    else:
        jobs = [(model, peft, data, None) for model, peft, data in all_recipes()]
    kept = []
    for model, peft, data, spec in jobs:
        path = args.recipes_dir / model / peft / f"{data}.yaml"
        if path.exists() and not args.overwrite:
            kept.append(path)  # a recipe may carry hand edits: never replace it silently
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(*recipe(model, peft, data, spec)), encoding="utf-8")
        print(f"wrote {path}")
    if kept:
        print(f"kept {len(kept)} existing recipe(s); --overwrite replaces them", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
