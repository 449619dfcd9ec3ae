"""The recipes are the source of truth, edited by hand: every pipeline recipe parses into the dataclasses of
train.py and infer.py, sets the keys a run needs and no unknown one, keeps the paper's settings where it claims
them, and names existing training data; `--config` works as the positional recipe does; the accelerate
configs load."""

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

from augment.arguments import AugmentArguments
from domainqa import arguments
from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, pipeline_keys
from domainqa.config import RecipeError, UsageError, load_recipe, parse_args
from tests.helpers import REPO

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

# The paper's models and its grid: every one of these recipes must exist and keep the paper's set-up.
PAPER_MODELS = ("biogpt-large", "llama-7b", "alpaca-7b")
PAPER_DATA = (
    "original",
    *(f"{m}-{s}" for m in ("gpt-3.5-turbo", "gpt-4") for s in ("rewriteqa", "newqa", "combinedqa")),
)
PAPER_DATA += (COMBINED,)
# Guo et al. 2023: lr 5e-5, AdamW, linear schedule with 10% warm-up, accumulation 32; beam search 5, repetition
# penalty 2.0 (its temperature 0.8 does nothing to beam search without sampling: no recipe key); LoRA rank 4.
PAPER_TRAINING = {
    "learning_rate": 5e-5, "optim": "adamw_torch", "lr_scheduler_type": "linear", "warmup_steps": 0.1,
    "gradient_accumulation_steps": 32, "num_beams": 5, "repetition_penalty": 2.0,
}  # fmt: skip
# What every run needs from its recipe. bf16 must be explicit: TRL turns it on by default, which fails on CPUs
# and V100s, so a recipe that leaves it out works on one machine and not on the next.
REQUIRED_KEYS = ("model_name_or_path", "peft_method", "prompt_format", "output_dir", "bf16")


def data_recipe_names() -> set[str]:
    return {p.stem for p in AUGMENT_RECIPES.glob("*.yaml") if p != MERGES}


def merges() -> dict[str, list[str]]:
    return yaml.safe_load(MERGES.read_text(encoding="utf-8")) or {}


def claims_the_paper(model: str, text: str) -> bool:
    """A recipe of one of the paper's models, or one whose header says it reproduces a row of the paper."""
    return model in PAPER_MODELS or "Reproduces the paper" in text


def recipe_problems(path: Path, recipes_dir: Path = RECIPES) -> list[str]:
    """What is wrong with the pipeline recipe `path` (recipes_dir/<model>/<peft>/<data>.yaml); empty if nothing.
    The same checks run on the shipped recipes and on a user's new one in a temporary folder."""
    recipe = load_recipe(path)
    text = path.read_text(encoding="utf-8")
    model, peft, data = path.relative_to(recipes_dir).with_suffix("").parts
    problems = [f"unknown key {k}" for k in sorted(set(recipe) - KEYS)]
    problems += [f"missing key {k}" for k in REQUIRED_KEYS if k not in recipe]
    if problems:
        return problems
    if recipe["peft_method"] != peft:
        problems.append(f"peft_method {recipe['peft_method']} in the {peft}/ folder")
    # Two recipes writing into one folder would resume or overwrite each other's runs.
    if recipe["output_dir"] != f"outputs/{model}/{peft}/{data}":
        problems.append(f"output_dir {recipe['output_dir']} is not outputs/{model}/{peft}/{data}")
    data = data.removesuffix("-distill")  # <data>-distill.yaml: the same data, with the writer's label distribution
    if ("train_data" in recipe) != (data != "original"):
        problems.append("train_data must be set exactly when the data is not the original")
    elif data != "original" and recipe["train_data"] != f"outputs/augment/{data}":
        problems.append(f"train_data {recipe['train_data']} is not outputs/augment/{data}")
    # A copied header that still names the recipe it was copied from gives the wrong command.
    named = re.findall(r"train\.py (recipes/\S+\.yaml)", text)
    own = f"recipes/{path.relative_to(recipes_dir).as_posix()}"
    problems += [f"the header runs {other}, not {own}" for other in named if other != own]
    if claims_the_paper(model, text):
        problems += [
            f"{key} {recipe.get(key)!r}: the paper's is {value!r}"
            for key, value in PAPER_TRAINING.items()
            if recipe.get(key) != value
        ]
        if peft == "lora" and recipe.get("lora_r") != 4:
            problems.append(f"lora_r {recipe.get('lora_r')}: the paper's is 4")
    return problems + parse_problems(path, recipe)


def parse_problems(path: Path, recipe: dict) -> list[str]:
    """The recipe through the real dataclasses of train.py (TRL's SFTConfig and the project's subclass) and
    infer.py, as the scripts read it; the values must come through unchanged."""
    problems = []
    for train_config in TRAIN_CONFIGS:
        try:
            model_args, data_args, training_args = parse_args(
                ModelArguments, DataArguments, train_config, args=[str(path)], shared_keys=KEYS
            )
            _, _, infer_args = parse_args(
                ModelArguments, DataArguments, InferenceArguments, args=[str(path)], shared_keys=KEYS
            )
        except UsageError as e:
            return [f"{train_config.__name__}: {e}"]
        parsed = {**vars(model_args), **vars(data_args), **vars(infer_args), **training_args.to_dict()}
        parsed["output_dir"] = training_args.output_dir  # infer's output_dir is the same key
        for key in ("model_name_or_path", "prompt_format", "output_dir", "per_device_train_batch_size", "bf16"):
            if key in recipe and parsed[key] != recipe[key]:
                problems.append(f"{train_config.__name__}: {key} parsed as {parsed[key]!r}, recipe {recipe[key]!r}")
        if infer_args.output_dir != recipe["output_dir"]:
            problems.append(f"infer.py reads output_dir {infer_args.output_dir}")
    return problems


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=IDS)
def test_recipe(path):
    assert recipe_problems(path) == []


def test_the_paper_grid_is_shipped():
    """Every experiment of the paper has its recipe: 3 models x 2 PEFT methods x 8 training data."""
    missing = [
        f"{m}/{p}/{d}.yaml"
        for m in PAPER_MODELS
        for p in ("lora", "prefix")
        for d in PAPER_DATA
        if not (RECIPES / m / p / f"{d}.yaml").is_file()
    ]
    assert not missing


def _copy_for_a_new_model(tmp_path: Path) -> Path:
    """What a user does to add a model: copy the closest recipe and edit it by hand."""
    source = RECIPES / "llama-7b" / "lora" / "original.yaml"
    path = tmp_path / "recipes" / "mistral-7b" / "lora" / "original.yaml"
    path.parent.mkdir(parents=True)
    text = source.read_text(encoding="utf-8").replace("llama-7b", "mistral-7b")
    text = text.replace("huggyllama/llama-7b", "mistralai/Mistral-7B-v0.1").replace("LLaMA-7b", "Mistral-7B")
    text = "\n".join(line for line in text.splitlines() if "Reproduces the paper" not in line) + "\n"
    path.write_text(text + "lora_alpha: 16\nper_device_train_batch_size: 4\n", encoding="utf-8")
    return path


def test_a_hand_edited_recipe_for_a_new_model_passes(tmp_path):
    path = _copy_for_a_new_model(tmp_path)
    assert load_recipe(path)["lora_alpha"] == 16  # the later key wins, as in YAML
    assert recipe_problems(path, tmp_path / "recipes") == []


def test_the_checks_find_a_careless_copy(tmp_path):
    path = _copy_for_a_new_model(tmp_path)
    text = path.read_text(encoding="utf-8")
    stale = text.replace("outputs/mistral-7b/", "outputs/llama-7b/").replace("learning_rate:", "learning_rat:")
    path.write_text(stale.replace("train.py recipes/mistral-7b", "train.py recipes/llama-7b"), encoding="utf-8")
    assert recipe_problems(path, tmp_path / "recipes") == ["unknown key learning_rat"]
    path.write_text(stale.replace("learning_rat:", "learning_rate:"), encoding="utf-8")
    problems = recipe_problems(path, tmp_path / "recipes")
    assert "output_dir outputs/llama-7b/lora/original is not outputs/mistral-7b/lora/original" in problems
    path.write_text(text.replace("gradient_accumulation_steps: 32", "gradient_accumulation_steps: 8"))
    path.rename(renamed := tmp_path / "recipes" / "mistral-7b" / "lora" / "elsewhere.yaml")
    problems = recipe_problems(renamed, tmp_path / "recipes")
    assert (
        "the header runs recipes/mistral-7b/lora/original.yaml, not recipes/mistral-7b/lora/elsewhere.yaml" in problems
    )
    assert "output_dir outputs/mistral-7b/lora/original is not outputs/mistral-7b/lora/elsewhere" in problems


def test_a_paper_model_recipe_keeps_the_paper_settings(tmp_path):
    folder = tmp_path / "recipes" / "biogpt-large" / "prefix"
    folder.mkdir(parents=True)
    source = RECIPES / "biogpt-large" / "prefix" / "gpt-4-newqa.yaml"
    text = source.read_text(encoding="utf-8").replace("num_beams: 5", "num_beams: 1").replace("5.0e-05", "1.0e-04")
    (folder / "gpt-4-newqa.yaml").write_text(text, encoding="utf-8")
    problems = recipe_problems(folder / "gpt-4-newqa.yaml", tmp_path / "recipes")
    assert problems == ["learning_rate 0.0001: the paper's is 5e-05", "num_beams 1: the paper's is 5"]


def _generator():
    spec = importlib.util.spec_from_file_location("recipes_generate", RECIPES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_scaffolds_a_new_model_that_passes(tmp_path, capsys):
    gen = _generator()
    argv = ["--from", "smollm2-135m", "--model", "qwen2-0.5b", "--model_name_or_path", "Qwen/Qwen2-0.5B-Instruct"]
    assert gen.main([*argv, "--recipes_dir", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("qwen2-0.5b/*/*.yaml"))
    assert len(written) == 2 * 11  # SmolLM2's data list: the paper's 8 and the 3 local-backend data sets
    for path in written:
        assert recipe_problems(path, tmp_path) == [], path
    assert load_recipe(written[0])["model_name_or_path"] == "Qwen/Qwen2-0.5B-Instruct"
    edited = written[0].read_text(encoding="utf-8") + "num_train_epochs: 3\n"
    written[0].write_text(edited, encoding="utf-8")
    assert gen.main([*argv, "--recipes_dir", str(tmp_path)]) == 0
    assert written[0].read_text(encoding="utf-8") == edited, "a hand edit was overwritten"
    assert "kept 22 existing recipe(s)" in capsys.readouterr().err


def test_flags_override_a_recipe():
    path = str(RECIPES / "smollm2-135m" / "lora" / "original.yaml")
    _, _, training_args = parse_args(
        ModelArguments, DataArguments, SFTConfig, args=[path, "--num_train_epochs", "1"], shared_keys=KEYS
    )
    assert training_args.num_train_epochs == 1


# --- the recipe as --config -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["--config", "--config="])
def test_config_flag_reads_the_recipe_as_the_positional_does(form):
    path = str(RECIPES / "llama-7b" / "lora" / "original.yaml")
    classes = (ModelArguments, DataArguments, InferenceArguments)
    positional = parse_args(*classes, args=[path, "--batch_size", "3"], shared_keys=KEYS)
    flag = [form + path] if form.endswith("=") else [form, path]
    assert parse_args(*classes, args=["--batch_size", "3", *flag], shared_keys=KEYS) == positional
    assert positional[2].batch_size == 3 and positional[0].model_name_or_path == "huggyllama/llama-7b"


def test_config_flag_for_augment_and_sweep():
    augment = AUGMENT_RECIPES / "gpt-4-newqa.yaml"
    assert parse_args(AugmentArguments, args=["--config", str(augment)]) == parse_args(
        AugmentArguments, args=[str(augment)]
    )
    result = subprocess.run(
        [sys.executable, "sweep.py", "--config", "recipes/sweeps/smollm2-135m-peft.yaml", "--dry_run"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "python train.py recipes/smollm2-135m/lora/original.yaml" in result.stdout


@pytest.mark.parametrize("form", ["first", "--config"])
@pytest.mark.parametrize("script", ["train", "infer", "evaluate", "calibrate"])
def test_scripts_name_an_unknown_recipe_key(script, form, tmp_path):
    """Each script reads the recipe given first or by --config: the keys of the pipeline's scripts pass (here a
    shipped recipe's), and a key none of them knows is named with the recipe, while parsing, before anything loads."""
    recipe = tmp_path / "mine.yaml"
    shipped = (RECIPES / "encoders" / "all-minilm-l6-v2.yaml").read_text(encoding="utf-8")
    recipe.write_text(shipped + "learning_rat: 1\ntask_typ: sequence_classification\n", encoding="utf-8")
    given = [str(recipe)] if form == "first" else ["--config", str(recipe)]
    module = importlib.import_module(script)
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(recipe))}: unknown key\(s\) learning_rat, task_typ$"):
        module.parse_args([*given, "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["recipes/llama-7b/lora/original.yaml", "--config", "recipes/llama-7b/lora/original.yaml"],
            "one recipe at a time",
        ),
        (["--config"], "--config needs a recipe file"),
        (["--config", "--batch_size", "3"], "--config needs a recipe file"),
        (["--config", "recipes/no-such-recipe.yaml"], "recipes/no-such-recipe.yaml: cannot read recipe"),
    ],
)
def test_config_flag_misuse_is_one_line(args, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_args(ModelArguments, DataArguments, InferenceArguments, args=args, shared_keys=KEYS)


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
    from sweeps.plan import SweepArguments, build_points

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


def test_readme_lists_the_shipped_recipes():
    """The table lists every recipe of the paper's models and SmolLM2 (a user's new model need not be added),
    and every recipe it links exists."""
    readme = (RECIPES / "README.md").read_text(encoding="utf-8")
    shipped = [i for i in IDS if i.split("/")[0] in (*PAPER_MODELS, "smollm2-135m")]
    missing = [i for i in shipped if f"({i})" not in readme]
    assert not missing, f"recipes/README.md does not list {missing}"
    linked = re.findall(r"\]\(([\w.+-]+/(?:lora|prefix)/[\w.+-]+\.yaml)\)", readme)
    assert linked and [i for i in linked if not (RECIPES / i).is_file()] == []
