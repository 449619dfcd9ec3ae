"""Sweeps: train -> infer -> evaluate for every point of a hyperparameter range or a set of data variants,
resumable point by point, and the paper's tables and alpha / virtual-token figure from the results.

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

A single series may be written flat: `base_recipe`, `parameter`, `values` at the top level.

Each point lives in `<output_root>/<name>/<point>/`: the training output, the predictions, `metrics.json`
(evaluate.py's output; its presence marks the point as finished) and `point.json` (the exact commands).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .arguments import (
    DataArguments,
    EvaluationArguments,
    InferenceArguments,
    ModelArguments,
    TrainingArguments,
    pipeline_keys,
)
from .config import UsageError, field_names, load_recipe
from .io import atomic_write_json, atomic_write_text
from .run_folder import METRICS, TRAIN_RESULTS, TRAINER_STATE, predictions_files, predictions_name

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ("subprocess", "inprocess")
PARAMETER_LABELS = {"lora_alpha": "LoRA alpha", "num_virtual_tokens": "virtual tokens"}
SCRIPT_KEYS = {  # the flags each script accepts
    "train": lambda: field_names(ModelArguments, DataArguments, TrainingArguments),
    "infer": lambda: field_names(ModelArguments, DataArguments, InferenceArguments),
    "evaluate": lambda: field_names(DataArguments, EvaluationArguments),
}
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
    launcher: str = field(
        default="subprocess",
        metadata={"help": "subprocess (each script in its own process: memory is freed) or inprocess (faster)."},
    )

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise SweepError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        for name in ("series", "variants", "overrides"):
            value = getattr(self, name)
            if isinstance(value, str):  # given on the command line
                setattr(self, name, yaml.safe_load(value))
        if self.values is not None:
            self.values = [yaml.safe_load(v) if isinstance(v, str) else v for v in self.values]
        if not self.name:
            raise SweepError("a sweep needs a name")


@dataclass
class Point:
    name: str
    kind: str  # "series", "variant" or "zero-shot"
    recipe: str
    settings: dict[str, Any]  # recipe keys set by flags (sweep overrides, point overrides, the swept value)
    group: str  # series label, or the model column of a variant
    parameter: str | None = None
    value: Any = None
    variant: str | None = None
    train: bool = True


# ---------------------------------------------------------------------------------------------- definition


def _peft_label(recipe: dict) -> str:
    return PEFT_LABELS.get(recipe.get("peft_method", "lora"), str(recipe.get("peft_method")))


def _model_label(recipe_path: str, recipe: dict) -> str:
    parts = Path(recipe_path).parts
    if len(parts) >= 3 and parts[-3] != "recipes":
        return f"{parts[-3]} {_peft_label(recipe)}"  # recipes/<model>/<peft>/<data>.yaml
    return f"{Path(str(recipe.get('model_name_or_path', 'model'))).name} {_peft_label(recipe)}"


def build_points(args: SweepArguments) -> list[Point]:
    """Every point of the sweep, in a fixed order: series values, then variants, then zero-shot."""
    common = dict(args.overrides or {})
    series = list(args.series or [])
    if args.base_recipe and args.parameter:
        series.append(
            {"label": args.label, "base_recipe": args.base_recipe, "parameter": args.parameter, "values": args.values}
        )
    points: list[Point] = []
    for entry in series:
        missing = [k for k in ("base_recipe", "parameter", "values") if not entry.get(k)]
        if missing:
            raise SweepError(f"series {entry!r}: missing {', '.join(missing)}")
        recipe = load_recipe(entry["base_recipe"])
        label = entry.get("label") or _peft_label(recipe)
        for value in entry["values"]:
            settings = {**common, **(entry.get("overrides") or {}), entry["parameter"]: value}
            name = f"{entry['parameter']}-{value}"
            points.append(Point(name, "series", entry["base_recipe"], settings, label, entry["parameter"], value))
    for entry in args.variants or []:
        if isinstance(entry, str):
            entry = {"base_recipe": entry}
        path = entry.get("base_recipe") or entry.get("recipe") or args.base_recipe
        if not path:
            raise SweepError(f"variant {entry!r}: no base_recipe (and no sweep base_recipe)")
        recipe = load_recipe(path)
        variant = entry.get("name") or Path(path).stem
        settings = {**common, **(entry.get("overrides") or {})}
        if entry.get("train_data"):
            settings["train_data"] = entry["train_data"]
        model = entry.get("model") or _model_label(path, recipe)
        points.append(Point(entry.get("point") or variant, "variant", path, settings, model, variant=variant))
    if args.zero_shot:
        if not points and not args.base_recipe:
            raise SweepError("zero_shot needs a base_recipe, a series or a variant")
        recipe_path = points[0].recipe if points else args.base_recipe
        points.append(Point("zero-shot", "zero-shot", recipe_path, dict(common), "zero-shot", train=False))
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
    return points


# ---------------------------------------------------------------------------------------------- commands


def _flag_values(value: Any) -> list[str]:
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _flags(settings: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        if value is None:
            continue  # None: leave the recipe's value
        out += [f"--{key}", *_flag_values(value)]
    return out


def _resolved(point: Point, key: str, cls: type) -> Any:
    """A key's value for the point: flag, else recipe, else the dataclass default."""
    if key in point.settings and point.settings[key] is not None:
        return point.settings[key]
    recipe = load_recipe(point.recipe)
    if key in recipe:
        return recipe[key]
    return {f.name: f.default for f in fields(cls)}[key]


def predictions_stem(point: Point, point_dir: Path) -> Path:
    return point_dir / predictions_name(
        _resolved(point, "split", DataArguments),
        _resolved(point, "eval_split", InferenceArguments),
        _resolved(point, "mode", InferenceArguments),
        _resolved(point, "predictions_name", InferenceArguments),
    )


def point_commands(point: Point, point_dir: Path) -> dict[str, list[str]]:
    """The argument lists of train.py, infer.py and evaluate.py for one point."""

    def own(script: str) -> dict[str, Any]:
        return {k: v for k, v in point.settings.items() if k in SCRIPT_KEYS[script]()}

    stem = predictions_stem(point, point_dir)
    commands = {
        "infer": [point.recipe, *_flags(own("infer")), "--output_dir", str(point_dir)],
        "evaluate": [
            point.recipe,
            *_flags(own("evaluate")),
            "--predictions",
            str(predictions_files(stem)["official"]),
            "--allow_partial",
            "--output_file",
            str(point_dir / METRICS),
        ],
    }
    if point.train:
        commands = {"train": [point.recipe, *_flags(own("train")), "--output_dir", str(point_dir)], **commands}
    return commands


def shell_line(script: str, args: list[str]) -> str:
    return shlex.join(["python", f"{script}.py", *args])


def run_script(script: str, args: list[str], launcher: str, log_file: Path) -> Any:
    """Run train/infer/evaluate: in a fresh Python process (its output in `log_file`) or in this one."""
    logger.info("%s", shell_line(script, args))
    if launcher == "inprocess":
        return importlib.import_module(script).main(list(args))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"\n$ {shell_line(script, args)}\n")
        log.flush()
        done = subprocess.run([sys.executable, str(REPO / f"{script}.py"), *args], stdout=log, stderr=log)
    if done.returncode != 0:
        tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        logger.error("%s.py failed; the end of %s:\n%s", script, log_file, tail)
        raise SweepError(f"{script}.py failed (exit {done.returncode}); its log is {log_file}")
    return None


# ---------------------------------------------------------------------------------------------- running


def run_point(point: Point, point_dir: Path, launcher: str) -> str:
    """Bring one point to the finished state; returns what was done ("skipped" when it was finished)."""
    metrics_file = point_dir / METRICS
    if metrics_file.is_file():
        return "skipped"
    commands = point_commands(point, point_dir)
    record_file = point_dir / "point.json"
    record = {"name": point.name, "kind": point.kind, "recipe": point.recipe, "settings": point.settings}
    if record_file.is_file():
        earlier = json.loads(record_file.read_text(encoding="utf-8"))
        same = ("recipe", "settings")  # what decides the result; names and kinds are labels
        if {k: earlier.get(k) for k in same} != json.loads(json.dumps({k: record[k] for k in same})):
            raise SweepError(
                f"{point_dir} was started with other settings ({record_file}); remove the folder to rerun it"
            )
        timings = earlier.get("seconds", {})
    else:
        timings = {}
    record["commands"] = {script: shell_line(script, args) for script, args in commands.items()}
    point_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_file, {**record, "seconds": timings})
    stem = predictions_stem(point, point_dir)
    for script, args in commands.items():
        if script == "train" and (point_dir / TRAIN_RESULTS).is_file():
            continue  # trained (an interrupted point stopped later)
        if script == "infer" and predictions_files(stem)["official"].is_file():
            continue
        start = time.perf_counter()
        run_script(script, args, launcher, point_dir / f"{script}.log")
        timings[script] = round(timings.get(script, 0.0) + time.perf_counter() - start, 1)
        atomic_write_json(record_file, {**record, "seconds": timings})
    return "ran"


def run_sweep(args: SweepArguments) -> dict:
    points = build_points(args)
    sweep_dir = Path(args.output_root) / args.name
    unknown = sorted(set(args.only or []) - {p.name for p in points})
    if unknown:
        raise SweepError(f"--only names unknown point(s) {', '.join(unknown)}; points: {[p.name for p in points]}")
    status = {}
    if not args.collect_only:
        for point in points:
            if args.only and point.name not in args.only:
                continue
            point_dir = sweep_dir / point.name
            if args.dry_run:
                if not (point_dir / METRICS).is_file():
                    for script, cmd in point_commands(point, point_dir).items():
                        print(shell_line(script, cmd))
                continue
            logger.info("Point %s", point.name)
            try:
                status[point.name] = run_point(point, point_dir, args.launcher)
            except Exception as e:  # noqa: BLE001 - any failure of one point, reported below
                if not args.keep_going:
                    raise
                logger.error("Point %s failed: %s", point.name, e)
                status[point.name] = f"failed: {str(e).splitlines()[0]}"
            logger.info("Point %s: %s", point.name, status[point.name])
    if args.dry_run:
        return {"points": [p.name for p in points]}
    results = collect(args, points)
    results["status"] = status
    failed = [name for name, state in status.items() if state.startswith("failed")]
    if failed:
        raise SweepError(f"point(s) failed: {', '.join(failed)} (the others ran; see their logs)")
    return results


# ---------------------------------------------------------------------------------------------- results


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def point_result(point: Point, point_dir: Path) -> dict | None:
    metrics = _read_json(point_dir / METRICS)
    if metrics is None:
        return None
    record = _read_json(point_dir / "point.json") or {}
    train = _read_json(point_dir / TRAIN_RESULTS) or {}
    state = _read_json(point_dir / TRAINER_STATE) or {}
    meta = _read_json(predictions_files(predictions_stem(point, point_dir))["meta"]) or {}
    return {
        **{k: v for k, v in asdict(point).items() if k != "train"},
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "bootstrap_95": metrics.get("bootstrap_95"),
        "num_examples": metrics["num_examples"],
        "majority_baseline": metrics["majority_baseline"],
        "predicted_distribution": metrics.get("predicted_distribution"),
        "train_examples": train.get("train_examples"),
        "train_steps": state.get("global_step"),
        "train_runtime_s": train.get("train_runtime"),
        "infer_s": meta.get("seconds"),
        "wall_s": record.get("seconds"),
        "commands": record.get("commands"),
    }


def _cell(result: dict | None, metric: str) -> str:
    if result is None:
        return "not run"
    interval = (result.get("bootstrap_95") or {}).get(metric)
    text = f"{result[metric]:.3f}"
    return f"{text} ({interval[0]:.2f}-{interval[1]:.2f})" if interval else text


def _baseline_rows(results: list[dict], columns: int) -> list[str]:
    rows = []
    zero = [r for r in results if r["kind"] == "zero-shot"]
    if zero:
        z = zero[0]
        rows.append(
            "| zero-shot (untrained) | " + " | ".join([_cell(z, "accuracy"), _cell(z, "macro_f1")] * columns) + " |"
        )
    if results:
        m = results[0]["majority_baseline"]
        rows.append(
            f"| majority class ({m['label']}) | "
            + " | ".join([f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}"] * columns)
            + " |"
        )
    return rows


def _planned(pending: list[Point], kind: str) -> list[dict]:
    return [{**asdict(p), "unfinished": True} for p in pending if p.kind == kind]


def _match(rows: list[dict], **keys) -> dict | None:
    """The finished point with these keys (None: not finished, or not planned)."""
    found = next((r for r in rows if all(r[k] == v for k, v in keys.items())), None)
    return None if found is None or found.get("unfinished") else found


def _pivot(records: list[dict], key: str, row_values: list, first_header: str, results: list[dict]) -> str:
    """One row per value of `key`, accuracy and macro-F1 columns per group ("not run": planned, not finished;
    empty: not planned), then the baseline rows."""
    groups = list(dict.fromkeys(r["group"] for r in records))
    lines = [
        f"| {first_header} | " + " | ".join(f"{g} accuracy | {g} macro-F1" for g in groups) + " |",
        "| --- | " + " | ".join("--- | ---" for _ in groups) + " |",
    ]
    for value in row_values:
        cells = []
        for group in groups:
            planned = any(r["group"] == group and r[key] == value for r in records)
            match = _match(records, group=group, **{key: value})
            cells += [_cell(match, "accuracy"), _cell(match, "macro_f1")] if planned else ["", ""]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines + _baseline_rows(results, len(groups)))


def series_table(results: list[dict], pending: list[Point] = ()) -> str:
    """Rows: values of the swept parameter; columns: accuracy and macro-F1 of each series."""
    series = [r for r in results if r["kind"] == "series"] + _planned(pending, "series")
    parameters = list(dict.fromkeys(r["parameter"] for r in series))
    values = sorted({r["value"] for r in series}, key=lambda v: (isinstance(v, str), v))
    header = " / ".join(PARAMETER_LABELS.get(p, p) for p in parameters)
    return _pivot(series, "value", values, header, results)


def variant_table(results: list[dict], pending: list[Point] = ()) -> str:
    """Rows: training data variants; columns: accuracy and macro-F1 per model (the paper's augmentation table)."""
    variants = [r for r in results if r["kind"] == "variant"] + _planned(pending, "variant")
    names = list(dict.fromkeys(r["variant"] for r in variants))
    return _pivot(variants, "variant", names, "training data", results)


def details_table(results: list[dict]) -> str:
    lines = [
        "| point | train items | steps | train s | infer s | test items | predicted yes/no/maybe "
        "| accuracy | macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        dist = r.get("predicted_distribution") or {}
        seen = "/".join(str(dist.get(k, 0)) for k in ("yes", "no", "maybe"))
        train_s = "" if r["train_runtime_s"] is None else f"{r['train_runtime_s']:.0f}"
        infer_s = "" if r["infer_s"] is None else f"{r['infer_s']:.0f}"
        lines.append(
            f"| {r['name']} | {r['train_examples'] or ''} | {r['train_steps'] or ''} | {train_s} | {infer_s} "
            f"| {r['num_examples']} | {seen} | {_cell(r, 'accuracy')} | {_cell(r, 'macro_f1')} |"
        )
    return "\n".join(lines)


def plot_series(results: list[dict], path: Path, title: str) -> None:
    """Accuracy and macro-F1 against the swept value (log2 axis), one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [r for r in results if r["kind"] == "series"]
    groups = list(dict.fromkeys(r["group"] for r in series))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, metric, label in zip(axes, ("accuracy", "macro_f1"), ("accuracy", "macro-F1"), strict=True):
        for group in groups:
            rows = sorted((r for r in series if r["group"] == group), key=lambda r: r["value"])
            xs = [r["value"] for r in rows]
            ys = [r[metric] for r in rows]
            line = ax.plot(xs, ys, marker="o", label=group)[0]
            intervals = [(r.get("bootstrap_95") or {}).get(metric) for r in rows]
            if all(intervals):
                ax.fill_between(xs, [i[0] for i in intervals], [i[1] for i in intervals],
                                color=line.get_color(), alpha=0.12)  # fmt: skip
        if series:
            majority = series[0]["majority_baseline"]
            ax.axhline(majority[metric], color="grey", linestyle="--", label=f"majority ({majority['label']})")
        zero = [r for r in results if r["kind"] == "zero-shot"]
        if zero:
            ax.axhline(zero[0][metric], color="black", linestyle=":", label="zero-shot")
        ax.set_xscale("log", base=2)
        values = sorted({r["value"] for r in series})
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(" / ".join(dict.fromkeys(PARAMETER_LABELS.get(r["parameter"], r["parameter"]) for r in series)))
        ax.set_ylabel(label)
        ax.set_ylim(
            0, 1 if metric == "accuracy" else max(0.6, math.ceil(max([r[metric] for r in series] + [0]) * 10) / 10)
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect(args: SweepArguments, points: list[Point] | None = None) -> dict:
    """Gather finished points into results.json, table.md and (for series) figure.png."""
    points = points if points is not None else build_points(args)
    sweep_dir = Path(args.output_root) / args.name
    results = [r for p in points if (r := point_result(p, sweep_dir / p.name)) is not None]
    pending = [p for p in points if not (sweep_dir / p.name / METRICS).is_file()]
    missing = [p.name for p in pending]
    out_dir = Path(args.results_root) / args.name
    summary = {"sweep": args.name, "points": results, "unfinished": missing}
    atomic_write_json(out_dir / "results.json", summary)
    parts = [f"# Sweep {args.name}", ""]
    if missing:
        parts += [f'Unfinished points ("not run" in the tables): {", ".join(missing)}.', ""]
    if results:
        n = results[0]["num_examples"]
        parts += [
            f"Accuracy and macro-F1 on {n} test items, with bootstrap 95% intervals in brackets.",
            "",
        ]
        if any(r["kind"] == "series" for r in results):
            parts += [series_table(results, pending), ""]
            plot_series(results, out_dir / "figure.png", f"{args.name} ({n} test items)")
            parts += ["![accuracy and macro-F1 against the swept value](figure.png)", ""]
        if any(r["kind"] == "variant" for r in results):
            parts += [variant_table(results, pending), ""]
        parts += ["All points:", "", details_table(results), ""]
    atomic_write_text(out_dir / "table.md", "\n".join(parts))
    logger.info("Wrote %s (%d finished, %d unfinished)", out_dir / "table.md", len(results), len(missing))
    return summary
