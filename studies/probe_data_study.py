"""The data study with the selected SmolLM2 recipe (the probe head, `recipes/search/smollm2-135m-seqcls-probe.yaml`):
the same head fitted on the original training items, on LLM-written items (rewriteQA, newQA), and on both
(original + rewriteQA, original + newQA, and combinedQA: the combined output, originals then the written items,
which drops a written item equal to another), scored on the same validation and test items. Does the augmented
data help the model this tool makes best?

The head is fitted as train.py fits it (`domainqa.probe_head.fit_probe`: C by 5-fold cross-validation on the
training items, an original and the items written from it always in one fold; no intercept), on the features
train.py computes (`linear_probe.head_feature_function`), cached per item. The fit is deterministic, so a variant
has one result per split; what varies is the test sample (bootstrap intervals, and a paired bootstrap against the
original data on the same items) and, with --split official, the fold: there each fold's head is fitted on the
fold's training items plus the items written from them (sources outside the fold's training part are dropped,
so no validation or test item of the fold leaks in), and the table gives mean and standard deviation over the 10
folds with the number of folds where the variant beats the original data.

    python -m studies.probe_data_study --split paper
    python -m studies.probe_data_study --split official
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from domainqa.data import NUM_OFFICIAL_FOLDS, load_task_data, read_examples, test_leaks
from domainqa.io import atomic_write_json, atomic_write_text
from domainqa.metrics import format_difference, official_scores, paired_bootstrap
from domainqa.predictions import write_predictions
from domainqa.probe_head import source_groups
from studies.linear_probe import LABELS, cached_features, fit_head_probe, head_feature_function, test_summary

REPO = Path(__file__).resolve().parents[1]

# The training data of each variant, from the original items and the two kinds of written items.
VARIANTS = {
    "original": ("original",),
    "rewriteQA": ("rewrite",),
    "newQA": ("new",),
    "original + rewriteQA": ("original", "rewrite"),
    "original + newQA": ("original", "new"),
    "combinedQA": ("original", "combined"),  # the combined output's own rows and order, as train.py reads it
}


def slug(variant: str) -> str:
    return variant.replace(" + ", "+").replace("QA", "qa").lower()


def written_items(data: dict[str, str]) -> dict[str, list[dict]]:
    """The accepted LLM-written rows of each augmentation output ({kind: folder or file}); a combined output's
    original rows are left out (each fold brings its own)."""
    return {kind: [r for r in read_examples(path) if r.get("strategy") != "original"] for kind, path in data.items()}


def run_fold(split: str, fold: int | None, written: dict, compute, with_bias: bool, args) -> dict:
    parts = load_task_data(None, split, fold or 0)
    name = split if fold is None else f"{split}_fold{fold}"
    train_ids = {e["id"] for e in parts["train"]}
    available = {"original": parts["train"]}
    for kind, rows in written.items():
        available[kind] = [r for r in rows if r["source_id"] in train_ids]
        leaked = test_leaks(available[kind], parts["test"] + parts["validation"])
        if leaked:
            raise SystemExit(f"{kind}: {len(leaked)} row(s) are or come from held-out items, e.g. {next(iter(leaked))}")
    features = {kind: cached_features(compute, items, args.cache_dir, f"{split}_{kind}") for kind, items in
                available.items()}  # fmt: skip
    for part in ("validation", "test"):
        features[part] = cached_features(compute, parts[part], args.cache_dir, f"{split}_{part}")
    truth = {part: [e["final_decision"] for e in parts[part]] for part in ("validation", "test")}
    results, baseline = {}, None
    for variant, kinds in VARIANTS.items():
        items = [e for kind in kinds for e in available[kind]]
        targets = np.array([LABELS.index(e["final_decision"]) for e in items])
        train_features = np.concatenate([features[kind] for kind in kinds])
        choice, predict = fit_head_probe(train_features, targets, with_bias, source_groups(items))
        predicted = {part: predict(features[part]) for part in ("validation", "test")}
        rows = [{"id": e["id"], "prediction": p} for e, p in zip(parts["test"], predicted["test"], strict=True)]
        write_predictions(Path(args.predictions_dir) / f"predictions_{slug(variant)}_{name}_test", rows, "yes")
        baseline = baseline or predicted["test"]
        results[variant] = {
            "train_items": len(items),
            "train_labels": {label: sum(e["final_decision"] == label for e in items) for label in LABELS},
            "chosen_by_cross_validation": choice,
            "validation": official_scores(truth["validation"], predicted["validation"]),
            "test": test_summary(truth["test"], predicted["test"]),
            "test_vs_original": paired_bootstrap(truth["test"], predicted["test"], baseline),
        }
        print(f"{name} {variant}: {len(items)} items, test {results[variant]['test']['accuracy']:.3f} / "
              f"{results[variant]['test']['macro_f1']:.3f}", flush=True)  # fmt: skip
    return {"fold": fold, "written_items_used": {k: len(v) for k, v in available.items()}, "variants": results}


def interval_cell(test: dict, metric: str) -> str:
    low, high = test["bootstrap_95"][metric]
    return f"{test[metric]:.3f} [{low:.3f}, {high:.3f}]"


def paper_table(run: dict) -> str:
    lines = [
        "| training data | items (yes/no/maybe) | C (CV macro-F1) | validation acc / F1 | test accuracy [95%] | "
        "test macro-F1 [95%] | test answers (yes/no/maybe) | vs original: accuracy | vs original: macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, r in run["variants"].items():
        test, choice, validation = r["test"], r["chosen_by_cross_validation"], r["validation"]
        cells = [
            variant,
            f"{r['train_items']} ({'/'.join(str(r['train_labels'][label]) for label in LABELS)})",
            f"{choice['C']} ({choice['cv_macro_f1']:.3f})",
            f"{validation['accuracy']:.2f} / {validation['macro_f1']:.3f}",
            interval_cell(test, "accuracy"),
            interval_cell(test, "macro_f1"),
            "/".join(str(test["predicted_distribution"][label]) for label in LABELS),
        ]
        for metric in ("accuracy", "macro_f1"):
            cells.append(format_difference(r["test_vs_original"][metric]) if variant != "original" else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def over_folds(runs: list[dict]) -> dict:
    summary = {}
    for variant in VARIANTS:
        entry = {}
        for metric in ("accuracy", "macro_f1"):
            values = [r["variants"][variant]["test"][metric] for r in runs]
            gains = [r["variants"][variant]["test_vs_original"][metric]["difference"] for r in runs]
            entry[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}
            entry[f"{metric}_vs_original"] = {
                "mean": float(np.mean(gains)),
                "std": float(np.std(gains, ddof=1)),
                "folds_better": int(sum(g > 0 for g in gains)),
            }
        entry["train_items_mean"] = float(np.mean([r["variants"][variant]["train_items"] for r in runs]))
        summary[variant] = entry
    return summary


def official_table(summary: dict, folds: int) -> str:
    lines = [
        "| training data | items (mean over folds) | test accuracy | test macro-F1 | accuracy vs original "
        f"(folds better of {folds}) | macro-F1 vs original (folds better of {folds}) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for variant, s in summary.items():
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in ("accuracy", "macro_f1")]
        gains = [
            f"{s[f'{m}_vs_original']['mean']:+.3f} ± {s[f'{m}_vs_original']['std']:.3f} "
            f"({s[f'{m}_vs_original']['folds_better']})"
            for m in ("accuracy", "macro_f1")
        ]
        lines.append(f"| {variant} | {s['train_items_mean']:.0f} | {' | '.join(cells)} | "
                     + (" | ".join(gains) if variant != "original" else "- | -") + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="paper", choices=["paper", "official"])
    parser.add_argument("--rewrite", default="outputs/augment/smollm2-local-rewriteqa", help="rewriteQA output.")
    parser.add_argument("--new", default="outputs/augment/smollm2-local-newqa", help="newQA output.")
    parser.add_argument("--combined", default="outputs/augment/smollm2-local-combinedqa", help="combinedQA output.")
    parser.add_argument("--cache_dir", type=Path, default=Path("outputs/linear_probe_head"))
    parser.add_argument("--output_dir", default="results/data-study", help="<split>.json and <split>.md go here.")
    parser.add_argument("--predictions_dir", default="results/data-study/probe-head")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = {"rewrite": args.rewrite, "new": args.new, "combined": args.combined}
    written = written_items(data)  # bad data fails before the model loads
    compute, with_bias = head_feature_function()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    folds = list(range(NUM_OFFICIAL_FOLDS)) if args.split == "official" else [None]
    runs = [run_fold(args.split, fold, written, compute, with_bias, args) for fold in folds]
    result = {"split": args.split, "data": data, "runs": runs}
    if args.split == "official":
        result["test_over_folds"] = over_folds(runs)
        table = official_table(result["test_over_folds"], len(runs))
    else:
        table = paper_table(runs[0])
    atomic_write_json(Path(args.output_dir) / f"probe_head_{args.split}.json", result)
    atomic_write_text(Path(args.output_dir) / f"probe_head_{args.split}.md", table + "\n")
    print(table)
    print(json.dumps(result.get("test_over_folds", {}), indent=1)[:2000])


if __name__ == "__main__":
    main()
