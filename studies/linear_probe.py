"""What the frozen model already knows: a logistic regression on SmolLM2's hidden states, the ceiling a
fine-tuning recipe should at least reach.

Features of each item, from one forward pass over the scoring context (prompt + "The answer is"): the
final and the middle layer at the last token, and the final layer averaged over the tokens. The
regularisation and class weighting are chosen on the validation items by macro-F1; the test items are
scored once with that choice. Features are cached per item (resumable, shared by both splits), so a rerun
only fits. With --split official, each of the 10 folds is a probe of its own (the 500 test items are the same
in every fold), reported as mean and standard deviation over folds, as the PubMedQA leaderboard does.

    python -m studies.linear_probe [--split paper] [--output results/smollm2-135m-search/linear_probe.json]
    python -m studies.linear_probe --split official --output results/smollm2-135m-search/linear_probe_official.json

With --features head it measures the recipe the search selected (`head_init: linear_probe` with no training
step) without training it once per fold: the features are what that head reads (the sequence classifier's
input, question and context as a text pair, and the last token's final hidden state, computed by the same
code), and the probe is fitted as train.py fits the head (C by 5-fold cross-validation on the training items,
no class weighting, no intercept as SmolLM2's head has none). Validation items are scored but choose nothing.

    python -m studies.linear_probe --features head --split official \
        --output results/smollm2-135m-search/probe_head_official.json \
        --predictions_dir results/smollm2-135m-search/probe-head
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from domainqa.data import NUM_OFFICIAL_FOLDS, load_task_data
from domainqa.embedded import EMBEDDED_MODEL
from domainqa.families.causal_lm import load_for_inference
from domainqa.io import atomic_write_json
from domainqa.metrics import bootstrap_intervals, official_scores
from domainqa.predictions import write_predictions
from domainqa.prompts import PromptFormat

REPO = Path(__file__).resolve().parents[1]

C_GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
LABELS = ("yes", "no", "maybe")
FEATURES = {
    "scoring_context": "final + middle layer at the last token of the scoring context, final layer mean",
    "head": "the probe head's input: final layer at the last token of the classifier's text pair",
}


@torch.inference_mode()
def item_features(model, tokenizer, fmt: PromptFormat, example: dict) -> np.ndarray:
    ids = tokenizer(fmt.scoring_context(example), return_tensors="pt")
    hidden = model(**ids, output_hidden_states=True).hidden_states
    final, middle = hidden[-1][0], hidden[len(hidden) // 2][0]
    return torch.cat([final[-1], middle[-1], final.mean(0)]).float().numpy()


def feature_key(example: dict) -> str:
    """An item's key in the feature cache: its id and a digest of its text. Written items keep their id
    across prompt versions and runs (`<source>-new-<model>-0`), so an id alone would hand one run's
    features to another run's different text."""
    text = "\0".join(str(example.get(f, "")) for f in ("question", "context", "long_answer"))
    return f"{example['id']}@{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def cached_features(compute, items: list[dict], cache_dir: Path, part: str) -> np.ndarray:
    """Features of `items`, computed once: every .npz in `cache_dir` is read (features are per item and
    text, so the paper and official splits share them), and new ones are appended to `<part>.npz` as they
    come."""
    done = {}
    for path in sorted(cache_dir.glob("*.npz")):
        done.update(np.load(path))
    cache = cache_dir / f"{part}.npz"
    mine = dict(np.load(cache)) if cache.is_file() else {}
    start = time.perf_counter()
    keys = [feature_key(example) for example in items]
    for i, (key, example) in enumerate(zip(keys, items, strict=True)):
        if key in done:
            continue
        done[key] = mine[key] = compute(example)
        if len(mine) % 25 == 0 or i + 1 == len(items):
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **mine)
            tmp.replace(cache)
            print(f"{cache.name}: {i + 1}/{len(items)} ({time.perf_counter() - start:.0f} s)", flush=True)
    return np.stack([done[key] for key in keys])


def embedded_classifier(num_hidden_layers: int | None = None) -> tuple[torch.nn.Module, Callable[[dict], list]]:
    """The embedded SmolLM2 as train.py loads a sequence classifier (cut to its first `num_hidden_layers` layers,
    where given), and a function from one item to its encoded rows (the text pair, cut to 1024 tokens)."""
    from transformers import AutoConfig

    from domainqa.embedded import resolve_model_path
    from domainqa.families.classifier import encode, load_classifier, match_padding, model_max_length
    from domainqa.modeling import load_tokenizer

    path = resolve_model_path(EMBEDDED_MODEL)
    model, tokenizer = load_classifier(path, "float32", num_hidden_layers=num_hidden_layers), load_tokenizer(path)
    match_padding(model, tokenizer)
    max_length = model_max_length(tokenizer, AutoConfig.from_pretrained(path), 1024)
    return model, lambda example: encode(tokenizer, [example], max_length, with_labels=False)


def head_feature_function(num_hidden_layers: int | None = None):
    """What the probe head reads for one item, computed as train.py computes it (on the model cut to its first
    `num_hidden_layers` layers, where given)."""
    from domainqa.families.classifier import head_name
    from domainqa.probe_head import head_inputs

    model, encode_item = embedded_classifier(num_hidden_layers)
    head = getattr(model, head_name(model))

    def compute(example: dict) -> np.ndarray:
        return head_inputs(model, head, Dataset.from_list(encode_item(example)))[0]

    return compute, head.bias is not None


def fit_head_probe(
    features: np.ndarray, targets: np.ndarray, with_bias: bool, groups: list[str] | None = None
) -> tuple[dict, Callable[[np.ndarray], list[str]]]:
    """The probe head fitted as train.py fits it (`domainqa.probe_head.fit_probe`, unweighted); returns the choice
    and a function from features to labels."""
    from domainqa.probe_head import fit_probe

    choice, scaler, probe = fit_probe(features, targets, LABELS, None, with_bias, groups)
    return choice, lambda x: [LABELS[i] for i in probe.predict(scaler.transform(x))]


def fit_as_head(features: dict, truth: dict, with_bias: bool) -> tuple[dict, list[str], list[dict]]:
    """The probe head's fit: C by cross-validation on the training items; returns the choice with the
    validation scores (reported, not used), the test predictions and the learning curve over training-set size."""
    targets = np.array([LABELS.index(label) for label in truth["train"]])
    choice, predict = fit_head_probe(features["train"], targets, with_bias)
    validation = official_scores(truth["validation"], predict(features["validation"]))
    curve = []
    for n in (50, 100, 200, 300, 450):
        _, predict_first_n = fit_head_probe(features["train"][:n], targets[:n], with_bias)
        curve.append({"train_items": n, **official_scores(truth["test"], predict_first_n(features["test"]))})
    return {**choice, "validation": validation}, predict(features["test"]), curve


def choose_and_fit(features: dict, truth: dict) -> tuple[dict, list[dict], list[str], list[dict]]:
    """The probe's regularisation and class weighting chosen by validation macro-F1 (then accuracy), refitted
    and applied to the test items once. Returns the choice, the grid, the test predictions and a learning
    curve of the choice over training-set size."""
    scaler = StandardScaler().fit(features["train"])
    scaled = {name: scaler.transform(x) for name, x in features.items()}
    grid = []
    for c in C_GRID:
        for class_weight in (None, "balanced"):
            probe = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000).fit(
                scaled["train"], truth["train"]
            )
            val = official_scores(truth["validation"], list(probe.predict(scaled["validation"])))
            grid.append({"C": c, "class_weight": class_weight, "validation": val})
    best = max(grid, key=lambda r: (r["validation"]["macro_f1"], r["validation"]["accuracy"]))
    probe = LogisticRegression(C=best["C"], class_weight=best["class_weight"], max_iter=5000)
    predicted = list(probe.fit(scaled["train"], truth["train"]).predict(scaled["test"]))
    return best, grid, predicted, learning_curve(scaled, truth, best)


def learning_curve(scaled: dict, truth: dict, choice: dict, sizes=(50, 100, 200, 300, 450)) -> list[dict]:
    """Test metrics of the chosen probe fitted on the first n training items: does more data still help?"""
    points = []
    for n in sizes:
        probe = LogisticRegression(C=choice["C"], class_weight=choice["class_weight"], max_iter=5000)
        predicted = list(probe.fit(scaled["train"][:n], truth["train"][:n]).predict(scaled["test"]))
        points.append({"train_items": n, **official_scores(truth["test"], predicted)})
    return points


def test_summary(truth: list[str], predicted: list[str]) -> dict:
    return {
        **official_scores(truth, predicted),
        "bootstrap_95": bootstrap_intervals(truth, predicted),
        "predicted_distribution": {label: predicted.count(label) for label in ("yes", "no", "maybe")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="paper", choices=["paper", "official"])
    parser.add_argument("--features", default="scoring_context", choices=["scoring_context", "head"])
    parser.add_argument(
        "--num_hidden_layers",
        type=int,
        default=None,
        help="--features head: the head of a model cut to its first N layers (studies/probe_layers.py).",
    )
    parser.add_argument("--cache_dir", default=None, help="Default: outputs/linear_probe[_head[_N_layers]].")
    parser.add_argument("--output", default="results/smollm2-135m-search/linear_probe.json")
    parser.add_argument(
        "--predictions_dir",
        default="results/smollm2-135m-search/linear-probe",
        help="Where the official-format test predictions of each fold go (predictions_<split>[_fold<k>]_test).",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.num_hidden_layers is not None and args.features != "head":
        parser.error("--num_hidden_layers needs --features head")
    if args.features == "head":
        compute, with_bias = head_feature_function(args.num_hidden_layers)
    else:
        model, tokenizer = load_for_inference(EMBEDDED_MODEL, dtype="float32")
        fmt = PromptFormat("chat", tokenizer)
        compute = lambda example: item_features(model, tokenizer, fmt, example)  # noqa: E731
    cut = f"_{args.num_hidden_layers}_layers" if args.num_hidden_layers else ""
    cache_dir = Path(args.cache_dir or f"outputs/linear_probe{'_head' + cut if args.features == 'head' else ''}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    folds = range(NUM_OFFICIAL_FOLDS) if args.split == "official" else [None]
    runs = []
    for fold in folds:
        parts = load_task_data(None, args.split, fold or 0)
        name = args.split if fold is None else f"{args.split}_fold{fold}"
        features = {
            part: cached_features(compute, parts[part], cache_dir, f"{args.split}_{part}")
            for part in ("train", "validation", "test")
        }
        truth = {part: [e["final_decision"] for e in parts[part]] for part in features}
        if args.features == "head":
            best, predicted, curve = fit_as_head(features, truth, with_bias)
            run = {"fold": fold, "chosen_by_cross_validation": best}
        else:
            best, grid, predicted, curve = choose_and_fit(features, truth)
            run = {"fold": fold, "chosen_on_validation": best, "grid": grid}
        rows = [{"id": e["id"], "prediction": p} for e, p in zip(parts["test"], predicted, strict=True)]
        write_predictions(Path(args.predictions_dir) / f"predictions_{name}_test", rows, "yes")
        runs.append({**run, "test": test_summary(truth["test"], predicted), "learning_curve_test": curve})
    result = {
        "split": args.split,
        "features": FEATURES[args.features],
        "num_hidden_layers": args.num_hidden_layers,
        "runs": runs,
    }
    if len(runs) > 1:
        result["test_over_folds"] = {
            metric: {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}
            for metric in ("accuracy", "macro_f1")
            for values in [[r["test"][metric] for r in runs]]
        }
    atomic_write_json(args.output, result)
    summary = {k: v for k, v in result.items() if k != "runs"}
    summary["runs"] = [{k: v for k, v in r.items() if k not in ("grid", "learning_curve_test")} for r in runs]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
