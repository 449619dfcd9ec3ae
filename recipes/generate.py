"""Write the pipeline recipes recipes/<model>/<peft>/<data>.yaml from the tables below.

Run from the repository root after editing this file; the YAML files are committed too:

    python recipes/generate.py          # rewrite every recipe
    python recipes/generate.py --check  # exit 1 if a committed recipe differs from what this writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

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
    "save_total_limit": 2,
    "report_to": "none",
}

INFERENCE = {"num_beams": 5, "repetition_penalty": 2.0, "temperature": 0.8, "eval_split": "test"}

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


def data_names(model: str) -> tuple[str, ...]:
    return PAPER_DATA + (LOCAL_DATA if model == "smollm2-135m" else ())


def accelerate_config(model: str) -> str:
    # One GPU keeps the paper's effective batch (2 x 32 sequences); on N GPUs divide
    # gradient_accumulation_steps by N (recipes/README.md).
    return "cpu.yaml" if model == "smollm2-135m" else "single_gpu.yaml"


def recipe(model: str, peft: str, data: str) -> tuple[dict, str]:
    """The recipe's keys and its comment header."""
    spec = MODELS[model]
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
        reproduces = "Not in the paper: the small model that runs on a CPU, same method."
    launch = (
        f"accelerate launch --config_file accelerate_configs/{accelerate_config(model)} train.py {path}"
        if spec["paper"]
        else f"python train.py {path}"
    )
    predictions = f"{keys['output_dir']}/predictions_paper_test_{keys['mode']}.json"  # as infer.py names it
    header = "\n".join(
        [
            f"# {spec['title']}, {'LoRA' if peft == 'lora' else 'prefix tuning'}, {data_text}.",
            f"# {reproduces}",
            f"# Train: {launch}",
            f"# Predict: python infer.py {path}",
            f"# Score: python evaluate.py --predictions {predictions}",
            "# Written by recipes/generate.py; edit that file and rerun it rather than this one.",
        ]
    )
    return keys, header


def all_recipes():
    for model in MODELS:
        for peft in ("lora", "prefix"):
            for data in data_names(model):
                yield model, peft, data


def render(keys: dict, header: str) -> str:
    """Block style, one key a line; lists in flow style ([q_proj, v_proj])."""
    lines = [header]
    for key, value in keys.items():
        if isinstance(value, list):
            lines.append(f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=1000).strip())
        else:
            lines.append(yaml.safe_dump({key: value}, default_flow_style=False, width=1000).strip())
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for model, peft, data in all_recipes():
        path = RECIPES / model / peft / f"{data}.yaml"
        text = render(*recipe(model, peft, data))
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python recipes/generate.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
