"""What the frozen model already knows: a logistic regression on SmolLM2's hidden states, the ceiling a
fine-tuning recipe should at least reach.

Features of each item, from one forward pass over the scoring context (prompt + "The answer is"): the
final and the middle layer at the last token, and the final layer averaged over the tokens. The
regularisation and class weighting are chosen on the validation items by macro-F1; the test items are
scored once with that choice. Features are cached (resumable), so a rerun only fits.

    python benchmarks/linear_probe.py [--split paper] [--output results/smollm2-135m-search/linear_probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from domainqa.data import load_task_data  # noqa: E402
from domainqa.io import atomic_write_json  # noqa: E402
from domainqa.metrics import bootstrap_intervals, official_scores  # noqa: E402
from domainqa.modeling import EMBEDDED_MODEL, load_for_inference  # noqa: E402
from domainqa.prompts import PromptFormat  # noqa: E402

C_GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


@torch.inference_mode()
def item_features(model, tokenizer, fmt: PromptFormat, example: dict) -> np.ndarray:
    ids = tokenizer(fmt.scoring_context(example), return_tensors="pt")
    hidden = model(**ids, output_hidden_states=True).hidden_states
    final, middle = hidden[-1][0], hidden[len(hidden) // 2][0]
    return torch.cat([final[-1], middle[-1], final.mean(0)]).float().numpy()


def cached_features(model, tokenizer, fmt, items: list[dict], cache: Path) -> np.ndarray:
    """Features of `items`, computed once and appended to `cache` (an .npz per part) as they come."""
    done = dict(np.load(cache)) if cache.is_file() else {}
    start = time.perf_counter()
    for i, example in enumerate(items):
        if example["id"] in done:
            continue
        done[example["id"]] = item_features(model, tokenizer, fmt, example)
        if (i + 1) % 25 == 0 or i + 1 == len(items):
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **done)
            tmp.replace(cache)
            print(f"{cache.name}: {i + 1}/{len(items)} ({time.perf_counter() - start:.0f} s)", flush=True)
    return np.stack([done[e["id"]] for e in items])


def learning_curve(scaled: dict, truth: dict, choice: dict, sizes=(50, 100, 200, 300, 450)) -> list[dict]:
    """Test metrics of the chosen probe fitted on the first n training items: does more data still help?"""
    points = []
    for n in sizes:
        probe = LogisticRegression(C=choice["C"], class_weight=choice["class_weight"], max_iter=5000)
        predicted = list(probe.fit(scaled["train"][:n], truth["train"][:n]).predict(scaled["test"]))
        points.append({"train_items": n, **official_scores(truth["test"], predicted)})
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="paper", choices=["paper", "official"])
    parser.add_argument("--cache_dir", default="outputs/linear_probe")
    parser.add_argument("--output", default="results/smollm2-135m-search/linear_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    parts = load_task_data(None, args.split)
    model, tokenizer = load_for_inference(EMBEDDED_MODEL, dtype="float32")
    fmt = PromptFormat("chat", tokenizer)
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    features = {
        name: cached_features(model, tokenizer, fmt, parts[name], cache_dir / f"{args.split}_{name}.npz")
        for name in ("train", "validation", "test")
    }
    truth = {name: [e["final_decision"] for e in parts[name]] for name in features}
    scaler = StandardScaler().fit(features["train"])
    scaled = {name: scaler.transform(x) for name, x in features.items()}

    choices = []
    for c in C_GRID:
        for class_weight in (None, "balanced"):
            probe = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000).fit(
                scaled["train"], truth["train"]
            )
            val = official_scores(truth["validation"], list(probe.predict(scaled["validation"])))
            choices.append({"C": c, "class_weight": class_weight, "validation": val})
    best = max(choices, key=lambda r: (r["validation"]["macro_f1"], r["validation"]["accuracy"]))
    probe = LogisticRegression(C=best["C"], class_weight=best["class_weight"], max_iter=5000)
    predicted = list(probe.fit(scaled["train"], truth["train"]).predict(scaled["test"]))
    curve = learning_curve(scaled, truth, best)
    result = {
        "split": args.split,
        "learning_curve_test": curve,
        "features": "final + middle layer at the last token of the scoring context, final layer mean",
        "chosen_on_validation": best,
        "test": {
            **official_scores(truth["test"], predicted),
            "bootstrap_95": bootstrap_intervals(truth["test"], predicted),
            "predicted_distribution": {label: predicted.count(label) for label in ("yes", "no", "maybe")},
        },
        "grid": choices,
    }
    atomic_write_json(args.output, result)
    print(json.dumps({k: result[k] for k in ("chosen_on_validation", "test", "learning_curve_test")}, indent=2))


if __name__ == "__main__":
    main()
