"""A sweep's definition and its points: which runs it holds, and the steps (train, infer, evaluate) of each.

A sweep definition is a YAML file (`recipes/sweeps/<name>.yaml`) holding `SweepArguments` fields:

    name: smollm2-135m-peft
    overrides: {max_train_samples: 64, max_eval_samples: 100}   # every point, every script
    series:                                                     # hyperparameter sweeps (one line each)
      - {label: LoRA, base_recipe: recipes/smollm2-135m/lora/original.yaml, parameter: lora_alpha,
         values: [16, 64, 256, 512]}
    variants:                                                   # data sweeps (one row each)
      - {name: original, base_recipe: recipes/smollm2-135m/lora/original.yaml}
      - recipes/smollm2-135m/lora/smollm2-local-rewriteqa.yaml  # a recipe file: name = its stem
    zero_shot: true                                             # also predict with the untrained model
    test_finalist: true                                         # best on validation, then test, once

A single series may be written flat: `base_recipe`, `parameter`, `values` at the top level.

Each point lives in `<output_root>/<name>/<point>/`: the training output, the predictions, `metrics.json`
(evaluate.py's output; its presence marks the point as finished) and `point.json` (its settings, the equivalent
command lines and the seconds each script took). A step is one script of a point: the point's recipe and the keys
set on top of it, which the script reads as it reads a recipe.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import evaluate
import infer
import train
from domainqa.arguments import pipeline_keys
from domainqa.config import UsageError, field_names, load_recipe, load_yaml
from domainqa.run_folder import METRICS

TEST_METRICS = "test_metrics.json"  # a finalist's scores on the test items (test_finalist)

SCRIPTS = {"train": train, "infer": infer, "evaluate": evaluate}  # in the order a point runs them
LAUNCHERS = ("subprocess", "inprocess")
PEFT_LABELS = {"lora": "LoRA", "prefix": "prefix", "full": "full"}


class SweepError(UsageError):
    """A sweep definition that cannot be run, or a point whose run failed (one line; the log says why)."""


@dataclass
class SweepArguments:
    name: str | None = field(default=None, metadata={"help": "Sweep name: outputs/sweeps/<name>, results/<name>."})
    base_recipe: str | None = field(
        default=None, metadata={"help": "Pipeline recipe of a single series (or the default of variants)."}
    )
    parameter: str | None = field(default=None, metadata={"help": "Single series: key swept, e.g. lora_alpha."})
    values: list[str] | None = field(default=None, metadata={"help": "Single series: values of the parameter."})
    label: str | None = field(default=None, metadata={"help": "Single series: its name in tables and the figure."})
    series: list | str | None = field(
        default=None,
        metadata={"help": "Hyperparameter series: list of {label, base_recipe, parameter, values, overrides}."},
    )
    variants: list | str | None = field(
        default=None,
        metadata={"help": "Data variants: list of recipe files or {name, base_recipe, model, train_data, overrides}."},
    )
    overrides: dict | str | None = field(
        default=None, metadata={"help": "Recipe keys set for every point (YAML or JSON mapping on the command line)."}
    )
    zero_shot: bool = field(default=False, metadata={"help": "Also predict with the base model, untrained."})
    output_root: str = field(default="outputs/sweeps", metadata={"help": "Points go to <output_root>/<name>/<point>."})
    results_root: str = field(default="results", metadata={"help": "Tables and figure go to <results_root>/<name>."})
    collect_only: bool = field(default=False, metadata={"help": "Only rebuild results from finished points."})
    only: list[str] | None = field(default=None, metadata={"help": "Run only these points (names)."})
    keep_going: bool = field(
        default=False, metadata={"help": "After a point fails, go on with the next one (the failure is reported)."}
    )
    dry_run: bool = field(default=False, metadata={"help": "Print the commands of the unfinished points and stop."})
    test_finalist: bool = field(
        default=False,
        metadata={
            "help": "Choose on validation, score the test items once: every point scores the validation items, then "
            "the trained point with the best validation macro-F1, and the untrained model (zero_shot), score the "
            "test items once each, the finalist compared with the untrained model item by item; "
            "<results_root>/<name>/finalist.md."
        },
    )
    launcher: str = field(
        default="subprocess",
        metadata={
            "help": "subprocess (each script in a fresh Python process, its output in the point's log: the memory "
            "a run holds is freed) or inprocess (faster; one process holds every run)."
        },
    )

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise SweepError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        for name in ("series", "variants", "overrides"):
            value = getattr(self, name)
            if isinstance(value, str):  # given on the command line
                setattr(self, name, load_yaml(value))
        if self.values is not None:
            self.values = [load_yaml(v) if isinstance(v, str) else v for v in self.values]
        if not self.name:
            raise SweepError("a sweep needs a name")


@dataclass
class Point:
    name: str
    kind: str  # "series", "variant" or "zero-shot"
    recipe: str
    settings: dict[str, Any]  # recipe keys set on top of the recipe (sweep overrides, point overrides, the value)
    group: str  # series label, or the model column of a variant
    parameter: str | None = None
    value: Any = None
    variant: str | None = None
    train: bool = True


@dataclass
class Step:
    """One script of a point: its recipe and the keys set on top of it, as the script reads them."""

    script: str  # a key of SCRIPTS
    recipe: str
    settings: dict[str, Any]

    def arguments(self) -> tuple:
        """The script's argument objects, parsed as its command line parses the recipe."""
        return SCRIPTS[self.script].parse_args([self.recipe], settings=self.settings)

    def command_line(self) -> str:
        """The equivalent shell command, for the point's record and --dry_run."""
        flags = [token for key, value in self.settings.items() for token in _flag(key, value)]
        return shlex.join(["python", f"{self.script}.py", self.recipe, *flags])


def _flag(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}", str(value).lower()]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *map(str, value)]
    return [f"--{key}", str(value)]


def _own(script: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the script reads (the others belong to the other scripts of the point); None leaves the
    recipe's value."""
    known = field_names(*SCRIPTS[script].ARGUMENTS)
    return {key: value for key, value in settings.items() if key in known and value is not None}


def point_steps(point: Point, point_dir: Path) -> dict[str, Step]:
    """The steps of one point, in order; evaluate scores the file that infer's own settings name."""
    steps = scoring_steps(point, point_dir)
    if point.train:
        training = {**_own("train", point.settings), "output_dir": str(point_dir)}
        steps = {"train": Step("train", point.recipe, training), **steps}
    return steps


def infer_step(point: Point, point_dir: Path, test: bool = False) -> Step:
    split = {"eval_split": "test"} if test else {}
    return Step("infer", point.recipe, {**_own("infer", point.settings), **split, "output_dir": str(point_dir)})


def scoring_steps(point: Point, point_dir: Path, test: bool = False, baseline: Path | None = None) -> dict[str, Step]:
    """Infer and evaluate of a point: on its own eval_split, or with `test` on the test items (test_finalist), the
    files beside the validation ones; evaluate compares with the `baseline` predictions when given."""
    inference = infer_step(point, point_dir, test)
    evaluation = {
        **_own("evaluate", point.settings),
        **({"eval_split": "test"} if test else {}),
        "predictions": [str(predictions_of(inference)["official"])],
        "allow_partial": True,
        "output_file": str(point_dir / (TEST_METRICS if test else METRICS)),
    }
    if baseline is not None:
        evaluation["baseline"] = str(baseline)
    return {"infer": inference, "evaluate": Step("evaluate", point.recipe, evaluation)}


def predictions_of(step: Step) -> dict[str, Path]:
    """The files an infer step writes, as infer.py names them from its parsed arguments."""
    _, data_args, infer_args = step.arguments()
    return infer.prediction_files(data_args, infer_args)


# ---------------------------------------------------------------------------------------------- points


def _peft_label(recipe: dict) -> str:
    return PEFT_LABELS.get(recipe.get("peft_method", "lora"), str(recipe.get("peft_method")))


def _model_label(recipe_path: str, recipe: dict) -> str:
    parts = Path(recipe_path).parts
    if len(parts) >= 3 and parts[-3] != "recipes":
        return f"{parts[-3]} {_peft_label(recipe)}"  # recipes/<model>/<peft>/<data>.yaml
    model = Path(str(recipe.get("model_name_or_path", "model"))).name.removeprefix("embedded:")
    return f"{model} {_peft_label(recipe)}"


def _series_points(args: SweepArguments, common: dict) -> list[Point]:
    series = list(args.series or [])
    if args.base_recipe and args.parameter:
        series.append(
            {"label": args.label, "base_recipe": args.base_recipe, "parameter": args.parameter, "values": args.values}
        )
    points = []
    for entry in series:
        missing = [k for k in ("base_recipe", "parameter", "values") if not entry.get(k)]
        if missing:
            raise SweepError(f"series {entry!r}: missing {', '.join(missing)}")
        label = entry.get("label") or _peft_label(load_recipe(entry["base_recipe"]))
        for value in entry["values"]:
            settings = {**common, **(entry.get("overrides") or {}), entry["parameter"]: value}
            name = f"{entry['parameter']}-{value}"
            points.append(Point(name, "series", entry["base_recipe"], settings, label, entry["parameter"], value))
    return points


def _variant_points(args: SweepArguments, common: dict) -> list[Point]:
    points = []
    for entry in args.variants or []:
        if isinstance(entry, str):
            entry = {"base_recipe": entry}
        path = entry.get("base_recipe") or entry.get("recipe") or args.base_recipe
        if not path:
            raise SweepError(f"variant {entry!r}: no base_recipe (and no sweep base_recipe)")
        variant = entry.get("name") or Path(path).stem
        settings = {**common, **(entry.get("overrides") or {})}
        if entry.get("train_data"):
            settings["train_data"] = entry["train_data"]
        model = entry.get("model") or _model_label(path, load_recipe(path))
        points.append(Point(entry.get("point") or variant, "variant", path, settings, model, variant=variant))
    return points


def _check(args: SweepArguments, points: list[Point]) -> None:
    if not points:
        raise SweepError(f"sweep {args.name!r} has no points: give series, base_recipe/parameter/values or variants")
    names = [p.name for p in points]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(f"sweep {args.name!r}: point names used twice: {', '.join(duplicates)} (set variant names)")
    known = pipeline_keys()
    for point in points:
        unknown = sorted(set(point.settings) - known)
        if unknown:
            raise SweepError(f"point {point.name}: unknown recipe key(s) {', '.join(unknown)}")
        if "output_dir" in point.settings:
            raise SweepError(f"point {point.name}: output_dir is set by the sweep, not by overrides")


def build_points(args: SweepArguments) -> list[Point]:
    """Every point of the sweep, in a fixed order: series values, then variants, then zero-shot."""
    common = dict(args.overrides or {})
    points = _series_points(args, common) + _variant_points(args, common)
    if args.zero_shot:
        if not points and not args.base_recipe:
            raise SweepError("zero_shot needs a base_recipe, a series or a variant")
        recipe_path = points[0].recipe if points else args.base_recipe
        points.append(Point("zero-shot", "zero-shot", recipe_path, dict(common), "zero-shot", train=False))
    _check(args, points)
    return points
