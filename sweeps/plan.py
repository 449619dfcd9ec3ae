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
    resources: {gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32, timeout_min: 120}  # each point's job (--submit)

A single series may be written flat: `base_recipe`, `parameter`, `values` at the top level. A series entry with a
`name` names its points `<name>-<parameter>-<value>` (two series of one parameter need it); a series or variant
entry may carry its own `resources`, set on top of the sweep's.

Each point lives in `<output_root>/<name>/<point>/`: the training output, the predictions, `metrics.json`
(evaluate.py's output; its presence marks the point as finished) and `point.json` (its settings, the equivalent
command lines and the seconds each script took). A step is one script of a point: the point's recipe and the keys
set on top of it, which the script reads as it reads a recipe.
"""

from __future__ import annotations

import dataclasses
import shlex
import typing
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
CLUSTERS = ("slurm", "local")  # submitit's executors: a SLURM cluster, or jobs as processes of this machine
MODES = ("point", "list_points", "report", "submit", "dry_run", "collect_only")  # at most one at a time
PEFT_LABELS = {"lora": "LoRA", "prefix": "prefix", "full": "full"}


class SweepError(UsageError):
    """A sweep definition that cannot be run, or a point whose run failed (one line; the log says why)."""


@dataclass(frozen=True)
class Resources:
    """What the job of one point asks the scheduler for, in submitit's words (`slurm_*` only reach SLURM).

    A point runs in one process (train, infer and evaluate one after another), so the paper's LoRA and prefix
    points need one GPU each; full fine-tuning of a 7B model under DeepSpeed is no sweep point."""

    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: float = 32
    timeout_min: int = 120  # a job that runs out of time is requeued (max_num_timeout times) and resumes
    array_parallelism: int | None = None  # points of one array running at once (SLURM's --array=...%N)
    max_num_timeout: int = 3
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_constraint: str | None = None


_RESOURCE_TYPES = typing.get_type_hints(Resources)


def resources_of(base: Resources, given: Any, where: str) -> Resources:
    """`base` with the keys of the mapping `given` set on top; an unknown key or a bad value is one line."""
    if given is None:
        return base
    if not isinstance(given, dict):
        raise SweepError(f"{where} must be a mapping of {', '.join(_RESOURCE_TYPES)}")
    for key, value in given.items():
        if key not in _RESOURCE_TYPES:
            raise SweepError(f"{where}: unknown key {key!r} (known: {', '.join(_RESOURCE_TYPES)})")
        _check_resource(key, value, where)
    return dataclasses.replace(base, **given)


def _check_resource(key: str, value: Any, where: str) -> None:
    kind = _RESOURCE_TYPES[key]
    if isinstance(None, kind) and value is None:
        return
    if isinstance("", kind):
        if not isinstance(value, str) or not value.strip():
            raise SweepError(f"{where}: {key} must be a name, got {value!r}")
        return
    number = isinstance(value, float if kind is float else int) or (kind is float and isinstance(value, int))
    smallest = 0 if key == "gpus_per_node" else 1
    if isinstance(value, bool) or not number or value < smallest:  # True is an int to Python, never a count here
        wanted = "a number" if kind is float else "a whole number"
        raise SweepError(f"{where}: {key} must be {wanted} >= {smallest}, got {value!r}")


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
    point: str | None = field(
        default=None,
        metadata={
            "help": "Run this one point only (its index as --list prints it, from 0, or its name), as a job of any "
            "scheduler does: finished, it is skipped; interrupted, it resumes; held by another process, refused."
        },
    )
    list_points: bool = field(
        default=False, metadata={"aliases": ["--list"], "help": "Print each point: index, name, state, and stop."}
    )
    report: bool = field(
        default=False,
        metadata={
            "help": "Rebuild the tables and figure from the points finished so far, wherever they ran, and print "
            "which points are missing."
        },
    )
    submit: bool = field(
        default=False,
        metadata={
            "help": "Submit the unfinished points as jobs through submitit (one job array per set of resources) "
            "and return; --wait waits for them and reports."
        },
    )
    cluster: str = field(
        default="slurm",
        metadata={"help": "Where --submit sends the jobs: slurm (sbatch) or local (processes of this machine)."},
    )
    wait: bool = field(default=False, metadata={"help": "With --submit: wait for the jobs, then report."})
    resources: dict | str | None = field(
        default=None,
        metadata={
            "help": "Each point's job (--submit): gpus_per_node, cpus_per_task, mem_gb, timeout_min, "
            "array_parallelism, max_num_timeout, slurm_partition, slurm_account, slurm_qos, slurm_constraint."
        },
    )

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise SweepError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.cluster not in CLUSTERS:
            raise SweepError(f"cluster must be one of {', '.join(CLUSTERS)}, got {self.cluster!r}")
        for name in ("series", "variants", "overrides", "resources"):
            value = getattr(self, name)
            if isinstance(value, str):  # given on the command line
                setattr(self, name, load_yaml(value))
        if self.values is not None:
            self.values = [load_yaml(v) if isinstance(v, str) else v for v in self.values]
        if not self.name:
            raise SweepError("a sweep needs a name")
        self._check_modes()
        resources_of(Resources(), self.resources, "resources")  # refused before any work

    def _check_modes(self) -> None:
        if self.point is not None:
            self.point = str(self.point)
        chosen = [m for m in MODES if getattr(self, m) not in (None, False)]
        if len(chosen) > 1 and set(chosen) != {"dry_run", "collect_only"}:  # that pair predates the others
            flags = [f"--{m.removesuffix('_points')}" for m in chosen]
            raise SweepError(f"{' and '.join(flags)}: one at a time")
        if self.wait and not self.submit:
            raise SweepError("--wait goes with --submit")
        if self.point is not None and self.only:
            raise SweepError("--point and --only: give one")


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
    resources: Resources = field(default_factory=Resources)  # what its job asks for (--submit), not a setting


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


def _series_points(args: SweepArguments, common: dict, resources: Resources) -> list[Point]:
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
        own = resources_of(resources, entry.get("resources"), f"series {entry.get('name') or label} resources")
        prefix = f"{entry['name']}-" if entry.get("name") else ""
        for value in entry["values"]:
            settings = {**common, **(entry.get("overrides") or {}), entry["parameter"]: value}
            name = f"{prefix}{entry['parameter']}-{value}"
            point = Point(name, "series", entry["base_recipe"], settings, label, entry["parameter"], value)
            points.append(dataclasses.replace(point, resources=own))
    return points


def _variant_points(args: SweepArguments, common: dict, resources: Resources) -> list[Point]:
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
        own = resources_of(resources, entry.get("resources"), f"variant {variant} resources")
        point = Point(entry.get("point") or variant, "variant", path, settings, model, variant=variant)
        points.append(dataclasses.replace(point, resources=own))
    return points


def _check(args: SweepArguments, points: list[Point]) -> None:
    if not points:
        raise SweepError(f"sweep {args.name!r} has no points: give series, base_recipe/parameter/values or variants")
    names = [p.name for p in points]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(
            f"sweep {args.name!r}: point names used twice: {', '.join(duplicates)} (set series or variant names)"
        )
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
    resources = resources_of(Resources(), args.resources, "resources")
    points = _series_points(args, common, resources) + _variant_points(args, common, resources)
    if args.zero_shot:
        if not points and not args.base_recipe:
            raise SweepError("zero_shot needs a base_recipe, a series or a variant")
        recipe_path = points[0].recipe if points else args.base_recipe
        zero_shot = Point("zero-shot", "zero-shot", recipe_path, dict(common), "zero-shot", train=False)
        points.append(dataclasses.replace(zero_shot, resources=resources))
    _check(args, points)
    return points


def select_point(points: list[Point], wanted: str) -> Point:
    """The point `--point` names: by name, else by its index in the sweep's order (as --list prints it)."""
    by_name = {p.name: p for p in points}
    if wanted in by_name:
        return by_name[wanted]
    if wanted.lstrip("-").isdigit():
        index = int(wanted)
        if 0 <= index < len(points):
            return points[index]
        raise SweepError(f"--point {wanted}: the sweep has points 0 to {len(points) - 1} (--list prints them)")
    raise SweepError(f"--point {wanted}: no point of that name (--list prints them)")
