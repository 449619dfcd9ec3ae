"""Every pipeline recipe parses into the dataclasses of train.py and infer.py, names existing training data,
and the accelerate configs load."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trl import SFTConfig

from domainqa import arguments
from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, pipeline_keys
from domainqa.config import load_recipe, parse_args

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
AUGMENT_RECIPES = RECIPES / "augment"
MERGES = AUGMENT_RECIPES / "merges.yaml"
CONFIGS = REPO / "accelerate_configs"

PIPELINE_RECIPES = sorted(p for p in RECIPES.glob("*/*/*.yaml") if p.parent.parent.name != "augment")
IDS = [str(p.relative_to(RECIPES)) for p in PIPELINE_RECIPES]
KEYS = pipeline_keys()
COMBINED = "gpt-3.5-turbo+gpt-4-combinedqa"
# train.py parses TRL's SFTConfig, or the project's subclass of it where domainqa.arguments has one.
TRAIN_CONFIGS = [SFTConfig] + ([arguments.TrainingArguments] if hasattr(arguments, "TrainingArguments") else [])


def _generator():
    spec = importlib.util.spec_from_file_location("recipes_generate", RECIPES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_recipe_names() -> set[str]:
    return {p.stem for p in AUGMENT_RECIPES.glob("*.yaml") if p != MERGES}


def merges() -> dict[str, list[str]]:
    return yaml.safe_load(MERGES.read_text(encoding="utf-8")) or {}


def test_recipes_are_generated_and_complete():
    gen = _generator()
    assert gen.main(["--check"]) == 0, "a recipe differs from recipes/generate.py: run python recipes/generate.py"
    expected = {RECIPES / m / p / f"{d}.yaml" for m, p, d in gen.all_recipes()}
    assert set(PIPELINE_RECIPES) == expected, "recipes on disk that generate.py does not write (or the reverse)"
    # 3 paper models x 2 PEFT x 8 data + SmolLM2 x 2 PEFT x 11 data
    assert len(expected) == 3 * 2 * 8 + 2 * 11


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=IDS)
def test_recipe_keys_and_layout(path):
    recipe = load_recipe(path)
    assert set(recipe) <= KEYS, f"unknown keys {sorted(set(recipe) - KEYS)}"
    model, peft, data = path.relative_to(RECIPES).with_suffix("").parts
    assert recipe["peft_method"] == peft
    assert recipe["output_dir"] == f"outputs/{model}/{peft}/{data}"
    assert ("train_data" in recipe) == (data != "original")
    if data != "original":
        assert recipe["train_data"] == f"outputs/augment/{data}"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), "a recipe starts with a comment header"
    assert f"train.py {path.relative_to(REPO)}" in text, "the header gives the command that runs the recipe"
    # the paper's training set-up
    assert recipe["learning_rate"] == 5e-5 and recipe["optim"] == "adamw_torch"
    assert recipe["lr_scheduler_type"] == "linear" and recipe["warmup_steps"] == 0.1
    assert recipe["gradient_accumulation_steps"] == 32
    assert recipe["num_beams"] == 5 and recipe["repetition_penalty"] == 2.0 and recipe["temperature"] == 0.8
    if peft == "lora":
        assert recipe["lora_r"] == 4
    else:
        assert "lora_target_modules" not in recipe and recipe["num_virtual_tokens"] > 0
    assert recipe["activation_checkpointing"] is (model != "smollm2-135m")


@pytest.mark.parametrize("train_config", TRAIN_CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=IDS)
def test_recipe_parses_for_train_and_infer(path, train_config):
    recipe = load_recipe(path)
    model_args, data_args, training_args = parse_args(
        ModelArguments, DataArguments, train_config, args=[str(path)], shared_keys=KEYS
    )
    assert model_args.model_name_or_path == recipe["model_name_or_path"]
    assert data_args.prompt_format == recipe["prompt_format"]
    assert training_args.output_dir == recipe["output_dir"]
    assert training_args.per_device_train_batch_size == recipe["per_device_train_batch_size"]
    assert training_args.warmup_steps == 0.1
    assert not training_args.bf16, "bf16 must be off: TRL turns it on by default, which fails on CPUs and V100s"
    assert training_args.activation_checkpointing is recipe["activation_checkpointing"]
    _, _, infer_args = parse_args(ModelArguments, DataArguments, InferenceArguments, args=[str(path)], shared_keys=KEYS)
    assert infer_args.output_dir == recipe["output_dir"] and infer_args.mode == recipe["mode"]
    assert infer_args.num_beams == 5


def test_flags_override_a_recipe():
    path = str(RECIPES / "smollm2-135m" / "lora" / "original.yaml")
    _, _, training_args = parse_args(
        ModelArguments, DataArguments, SFTConfig, args=[path, "--num_train_epochs", "1"], shared_keys=KEYS
    )
    assert training_args.num_train_epochs == 1


def test_merge_entries_name_data_recipes():
    entries = merges()
    if (REPO / "augment" / "merge.py").is_file():
        from augment.merge import merges_from_file

        jobs = merges_from_file(str(MERGES))
        assert ([f"outputs/augment/{p}" for p in entries[COMBINED]], f"outputs/augment/{COMBINED}") in jobs
    assert entries[COMBINED] == ["gpt-3.5-turbo-combinedqa", "gpt-4-combinedqa"]
    for name, parts in entries.items():
        assert isinstance(parts, list) and len(parts) >= 2, name
        assert name not in parts


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=IDS)
def test_train_data_names_a_data_recipe(path):
    train_data = load_recipe(path).get("train_data")
    if train_data is None:
        return
    assert train_data.startswith("outputs/augment/")
    name = train_data.removeprefix("outputs/augment/")
    known = data_recipe_names()
    if not known:
        pytest.skip("no data recipes in recipes/augment/ yet")
    entries = merges()
    assert name in known or name in entries, f"{name}: no recipes/augment/{name}.yaml and no merge entry"
    for part in entries.get(name, []):
        assert part in known, f"merge {name}: no recipes/augment/{part}.yaml"


def _augment_dataclasses():
    if not (REPO / "augment" / "arguments.py").is_file():
        pytest.skip("augment/arguments.py does not exist yet")
    module = importlib.import_module("augment.arguments")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
    ]
    assert classes, "augment.arguments defines no dataclass"
    return classes


def test_augment_recipes_parse():
    classes = _augment_dataclasses()
    paths = sorted(p for p in AUGMENT_RECIPES.glob("*.yaml") if p != MERGES)
    if not paths:
        pytest.skip("no data recipes in recipes/augment/ yet")
    for path in paths:
        parsed = parse_args(*classes, args=[str(path)])
        output_dir = getattr(parsed[0], "output_dir", None)
        if output_dir is not None:
            assert output_dir.rstrip("/") == f"outputs/augment/{path.stem}", path.name


SWEEPS = sorted((RECIPES / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_sweep_definition_builds_its_points(path):
    """Every shipped sweep parses, names existing pipeline recipes, sets only known keys, and is named after
    its file (outputs/sweeps/<name>, results/<name>)."""
    from domainqa.sweep import SweepArguments, build_points

    (sweep,) = parse_args(SweepArguments, args=[str(path)])
    assert sweep.name == path.stem
    points = build_points(sweep)  # refuses unknown keys and duplicate point names
    for point in points:
        assert (REPO / point.recipe).is_file(), point.recipe
        load_recipe(REPO / point.recipe)


# --- accelerate configs ---------------------------------------------------------------------------------

ACCELERATE_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def test_all_accelerate_configs_are_shipped():
    names = {p.name for p in ACCELERATE_CONFIGS}
    assert names >= {
        "single_gpu.yaml",
        "multi_gpu.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
        "deepspeed_zero3_offload.yaml",
        "fsdp.yaml",
        "cpu.yaml",
        "cpu_2proc.yaml",
    }


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=[p.name for p in ACCELERATE_CONFIGS])
def test_accelerate_config_loads(path):
    """accelerate's own loader rejects unknown keys; DeepSpeed configs must leave precision to the JSON file."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if config.distributed_type == "DEEPSPEED":
        assert "mixed_precision" not in raw, "accelerate refuses mixed_precision next to deepspeed_config_file"
        ds_file = REPO / raw["deepspeed_config"]["deepspeed_config_file"]
        assert ds_file.is_file(), ds_file
        assert config.num_processes == 8


DS_FILES = sorted(CONFIGS.glob("*.json"))


@pytest.mark.parametrize("path", DS_FILES, ids=[p.name for p in DS_FILES])
def test_deepspeed_config_fills_from_a_recipe(path):
    """The Trainer fills every "auto" from the recipe's arguments (the paper's fp16 on V100), and the
    result is a DeepSpeed config DeepSpeed itself accepts."""
    from types import SimpleNamespace

    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    recipe = RECIPES / "llama-7b" / "lora" / "original.yaml"
    (args,) = parse_args(SFTConfig, args=[str(recipe)], shared_keys=KEYS)
    hf = HfTrainerDeepSpeedConfig(json.loads(path.read_text(encoding="utf-8")))
    hf.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=4096))
    hf.trainer_config_finalize(args, model, num_training_steps=100)  # raises on mismatches and leftover "auto"
    config = hf.config
    assert config["fp16"]["enabled"] is True and config["bf16"]["enabled"] is False
    assert config["gradient_accumulation_steps"] == 32
    assert config["train_micro_batch_size_per_gpu"] == 2
    assert "auto" not in json.dumps(config)


def test_cpu_2proc_runs_two_gloo_processes(tmp_path):
    """accelerate_configs/cpu_2proc.yaml starts two processes that join one gloo group when the script asks
    for the CPU (train.py: --use_cpu true)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import torch, torch.distributed as dist\n"
        "from accelerate import PartialState\n"
        "s = PartialState(cpu=True)\n"
        "t = torch.ones(1) * (s.process_index + 1)\n"
        "dist.all_reduce(t)\n"
        "print(f'rank {s.process_index}/{s.num_processes} {dist.get_backend()} {t.item():.0f}', flush=True)\n"
        "dist.destroy_process_group()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_2proc.yaml")]
        + ["--main_process_port", "0", str(probe)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the two processes share stdout, so their lines may interleave
    found = sorted(re.findall(r"rank \d/\d \w+ \d", result.stdout))
    assert found == ["rank 0/2 gloo 3", "rank 1/2 gloo 3"], result.stdout


def test_readme_lists_every_recipe():
    readme = (RECIPES / "README.md").read_text(encoding="utf-8")
    missing = [i for i in IDS if f"({i})" not in readme]
    assert not missing, f"recipes/README.md does not list {missing}"
