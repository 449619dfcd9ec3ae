"""A sweep's results: the finished points gathered into results.json, the paper-style tables (table.md) and,
for hyperparameter series, the accuracy and macro-F1 figure (figure.png), in `<results_root>/<name>/`."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

from domainqa.io import atomic_write_json, atomic_write_text
from domainqa.metrics import format_difference
from domainqa.run_folder import METRICS, TRAIN_RESULTS, TRAINER_STATE

from .plan import TEST_METRICS, Point, SweepArguments, infer_step, predictions_of

logger = logging.getLogger(__name__)

POINT_RECORD = "point.json"  # a point's recipe, settings, equivalent commands and seconds per script
PARAMETER_LABELS = {"lora_alpha": "LoRA alpha", "num_virtual_tokens": "virtual tokens"}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def point_result(point: Point, point_dir: Path) -> dict | None:
    metrics = _read_json(point_dir / METRICS)
    if metrics is None:
        return None
    record = _read_json(point_dir / POINT_RECORD) or {}
    train = _read_json(point_dir / TRAIN_RESULTS) or {}
    state = _read_json(point_dir / TRAINER_STATE) or {}
    meta = _read_json(predictions_of(infer_step(point, point_dir))["meta"]) or {}
    return {
        **{k: v for k, v in asdict(point).items() if k not in ("train", "resources")},
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
        "ran_on": record.get("ran_on"),  # host, pid and job of each attempt: a cluster's points ran anywhere
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


def _answers(result: dict) -> str:
    """Predicted label counts as yes/no/maybe."""
    dist = result.get("predicted_distribution") or {}
    return "/".join(str(dist.get(k, 0)) for k in ("yes", "no", "maybe"))


def details_table(results: list[dict]) -> str:
    lines = [
        "| point | train items | steps | train s | infer s | items scored | predicted yes/no/maybe "
        "| accuracy | macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        seen = _answers(r)
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


def collect(args: SweepArguments, points: list[Point]) -> dict:
    """Gather finished points into results.json, table.md and (for series) figure.png."""
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
        _, _, infer_args = infer_step(points[0], sweep_dir / points[0].name).arguments()
        parts += [
            f"Accuracy and macro-F1 on {n} {infer_args.eval_split} items, with bootstrap 95% intervals in brackets.",
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


def _scores(result: dict) -> str:
    return f"{result['accuracy']:.3f} / {result['macro_f1']:.3f}"


def write_finalist(args: SweepArguments, best: dict, candidates: int, sweep_dir: Path) -> dict:
    """finalist.json and finalist.md: the chosen point's validation and test scores beside the untrained model's."""
    test = _read_json(sweep_dir / best["name"] / TEST_METRICS)
    untrained = _read_json(sweep_dir / "zero-shot" / TEST_METRICS)
    validation = _read_json(sweep_dir / "zero-shot" / METRICS)
    finalist = {"point": best["name"], "chosen_among": candidates, "validation": best, "test": test}
    rows = [("finalist: " + best["name"], _scores(best), test)]
    if untrained is not None:
        finalist["untrained_test"] = untrained
        rows.append(("untrained model", _scores(validation) if validation else "", untrained))
    lines = [
        f"# Sweep {args.name}: the finalist on the test items",
        "",
        f"Chosen by validation macro-F1 among {candidates} trained points, then scored once on "
        f"{test['num_examples']} test items (bootstrap 95% intervals in brackets).",
        "",
        "| model | validation accuracy / macro-F1 | test accuracy | test macro-F1 | predicted yes/no/maybe |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, on_validation, scores in rows:
        lines.append(
            f"| {label} | {on_validation} | {_cell(scores, 'accuracy')} | {_cell(scores, 'macro_f1')} "
            f"| {_answers(scores)} |"
        )
    majority = test["majority_baseline"]
    lines.append(
        f"| majority class ({majority['label']}) | | {majority['accuracy']:.3f} | {majority['macro_f1']:.3f} | |"
    )
    paired = test.get("versus_baseline")
    if paired:
        lines += [
            "",
            f"Finalist minus untrained model on the same items (paired bootstrap, 95%): accuracy "
            f"{format_difference(paired['accuracy'])}, macro-F1 {format_difference(paired['macro_f1'])}.",
        ]
    out_dir = Path(args.results_root) / args.name
    atomic_write_json(out_dir / "finalist.json", finalist)
    atomic_write_text(out_dir / "finalist.md", "\n".join(lines) + "\n")
    logger.info("Wrote %s", out_dir / "finalist.md")
    return finalist
