"""Collect the seeds of results/encoders-minilm into results.json and table.md: per seed the metrics of
evaluate.py (with its bootstrap 95% intervals), the validation macro-F1 of the kept checkpoint and the wall
times; per split and recipe variant (the folder name before -seedN, without a -foldK) the mean and sample
standard deviation over the seeds, or over the official split's folds (fold 0's folder has no -fold0).

    python results/encoders-minilm/collect.py
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Reference rows on the same test items (paper split: 500 items, yes 277 / no 179 / maybe 44; official split:
# 500 items, yes 276 / no 169 / maybe 55), with where each number comes from.
REFERENCES = {
    "paper": [
        ("majority class (yes)", 0.554, 0.238, "evaluate.py"),
        ("SmolLM2-135M-Instruct untrained, chat label scoring", 0.44, 0.31, "../shared/REFERENCE.md"),
        ("SmolLM2-135M-Instruct untrained, label scoring (GPU sweep)", 0.474, 0.318, "smollm2-135m-peft-gpu"),
        ("SmolLM2-135M-Instruct LoRA alpha 16, 450 items, 10 epochs (GPU)", 0.474, 0.329, "smollm2-135m-peft-gpu"),
        ("SmolLM2-135M-Instruct LoRA alpha 256, 450 items, 10 epochs (GPU)", 0.546, 0.266, "smollm2-135m-peft-gpu"),
        (
            "SmolLM2-135M-Instruct LoRA sequence classifier, 450 items, selected on validation",
            0.528,
            0.349,
            "smollm2-135m-search",
        ),
        (
            "SmolLM2-135M-Instruct probe head (head_init linear_probe), 450 items, selected on validation",
            0.534,
            0.374,
            "smollm2-135m-search",
        ),
        ("linear probe on frozen SmolLM2-135M-Instruct features", 0.550, 0.390, "smollm2-135m-search"),
    ],
    "official": [
        ("majority class (yes)", 0.552, 0.237, "evaluate.py"),
        ("SmolLM2-135M-Instruct untrained, chat label scoring", 0.454, 0.307, "smollm2-135m-search"),
        ("SmolLM2-135M-Instruct probe head, mean of the 10 official folds", 0.556, 0.420, "smollm2-135m-search"),
        ("PubMedBERT (BLURB, published)", 0.558, None, "Gu et al. 2021"),
        ("BioLinkBERT-base (published)", 0.702, None, "Yasunaga et al. 2022"),
        ("BioLinkBERT-large (published)", 0.722, None, "Yasunaga et al. 2022"),
    ],
}


def seconds(path: Path) -> float | None:
    """Wall seconds from a /usr/bin/time -f '%e s wall, %U s user' file."""
    match = re.match(r"([\d.]+) s wall", path.read_text()) if path.is_file() else None
    return float(match.group(1)) if match else None


def one_seed(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    state = json.loads((folder / "trainer_state.json").read_text())
    return {
        "run": folder.name,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "bootstrap_95": metrics["bootstrap_95"],
        "predicted": metrics["predicted_distribution"],
        "majority_baseline": metrics["majority_baseline"],
        "best_checkpoint": state["best_model_checkpoint"],
        "validation_macro_f1": state["best_metric"],
        "steps": state["global_step"],
        "train_wall_s": seconds(folder / "train_time.txt"),
        "infer_wall_s": seconds(folder / "infer_time.txt"),
    }


def summary(runs: list[dict], over: str) -> dict:
    def spread(key: str) -> dict:
        values = [r[key] for r in runs]
        return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else None}

    return {over: len(runs), "accuracy": spread("accuracy"), "macro_f1": spread("macro_f1")}


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(variant: str, runs: list[dict], total: dict) -> list[str]:
    split = variant.split("-")[0]
    lines = [f"## {variant}", "", "| run | accuracy (95% CI) | macro-F1 (95% CI) | predicted yes/no/maybe | "
             "validation macro-F1 (kept checkpoint) | train wall s | infer wall s |", "| --- " * 7 + "|"]  # fmt: skip
    for r in runs:
        ci = r["bootstrap_95"]
        lines.append(
            f"| {r['run']} | {fmt(r['accuracy'])} ({fmt(ci['accuracy'][0])}-{fmt(ci['accuracy'][1])}) | "
            f"{fmt(r['macro_f1'])} ({fmt(ci['macro_f1'][0])}-{fmt(ci['macro_f1'][1])}) | "
            f"{'/'.join(str(r['predicted'][k]) for k in ('yes', 'no', 'maybe'))} | {fmt(r['validation_macro_f1'])} | "
            f"{r['train_wall_s']:.0f} | {r['infer_wall_s']:.0f} |"
        )
    acc, f1 = total["accuracy"], total["macro_f1"]
    over = "folds" if "folds" in total else "seeds"
    lines.append(f"| **mean ± sd over {total[over]} {over}** | {fmt(acc['mean'])} ± {fmt(acc['sd'])} | "
                 f"{fmt(f1['mean'])} ± {fmt(f1['sd'])} | | | | |")  # fmt: skip
    lines += ["", "| reference on the same test items | accuracy | macro-F1 | source |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {fmt(a)} | {fmt(f)} | {src} |" for name, a, f, src in REFERENCES[split]]
    return lines + [""]


def main() -> None:
    results, lines = {}, ["# all-MiniLM-L6-v2 classifier: test results by seed", ""]
    # One group per split and recipe variant: paper-seed1..3, paper-unweighted-seed1, official-lpft-seed1 with
    # official-lpft-fold1-seed1 .. -fold9-seed1, ...
    groups: dict[str, list[Path]] = {}
    for folder in sorted(
        HERE.glob("*-seed*"), key=lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)]
    ):
        if (folder / "metrics.json").is_file():
            groups.setdefault(re.sub(r"-fold\d+", "", folder.name.rsplit("-seed", 1)[0]), []).append(folder)
    for variant in sorted(groups):
        runs = [one_seed(f) for f in groups[variant]]
        over = "folds" if any("-fold" in f.name for f in groups[variant]) else "seeds"
        results[variant] = {"runs": runs, "summary": summary(runs, over)}
        lines += table(variant, runs, results[variant]["summary"])
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
