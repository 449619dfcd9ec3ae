"""Which layer should the probe head read? For every layer N of the frozen model, what a head reading layer N
(the model cut to its first N layers, `num_hidden_layers: N`) reaches as a linear probe, by cross-validation
on the training items only: the probe as train.py fits it (scaled features, no intercept, C from the grid), 5
stratified folds repeated with 3 shuffles, macro-F1 and accuracy at each layer's best C. No validation or test
item is read.

Two rules pick a layer: the fewest layers whose mean macro-F1 is within one standard error of the full model's
(layer L), so a cut model is chosen only where it costs nothing measurable against today's head, and runs in
about N/L of the time; and the usual one-standard-error rule, the fewest layers within one standard error of the
best layer's. For reference, one probe reads every layer's state side by side. Features (the final norm applied
to every layer's last-token state of the classifier's text pair, which is what the cut model's head reads) are
cached per item in outputs/probe_layers/.

    python -m studies.probe_layers [--output results/smollm2-135m-search/probe_layers.json]   # and its .png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline

from domainqa.data import load_task_data
from domainqa.io import atomic_write_json
from domainqa.probe_head import C_GRID, _probe
from studies.linear_probe import LABELS, cached_features, embedded_classifier

REPO = Path(__file__).resolve().parents[1]

REPEATS = 3
FOLDS = 5


def layer_feature_function():
    """Every layer's last-token state of one item's text pair, each through the model's final norm (the last
    layer's state already is): what a head on the model cut to N layers reads, for every N at once."""
    model, encode_item = embedded_classifier()
    model.eval()
    backbone = model.base_model

    @torch.inference_mode()
    def compute(example: dict) -> np.ndarray:
        ids = torch.tensor([encode_item(example)[0]["input_ids"]])
        hidden = backbone(input_ids=ids, output_hidden_states=True).hidden_states
        last = [backbone.norm(h[0, -1]) for h in hidden[1:-1]] + [hidden[-1][0, -1]]
        return torch.stack(last).numpy()  # layers, hidden size

    return compute


def cross_validated(features: np.ndarray, targets: np.ndarray) -> dict:
    """Mean and standard error over REPEATS x FOLDS held-out folds, at the C with the best mean macro-F1."""
    folds = [
        split
        for seed in range(REPEATS)
        for split in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(features, targets)
    ]
    macro_f1 = make_scorer(f1_score, average="macro", labels=list(range(len(LABELS))), zero_division=0)
    best = None
    for c in C_GRID:
        probe = make_pipeline(*_probe(c, None, fit_intercept=False))
        scores = cross_validate(probe, features, targets, cv=folds, scoring={"f1": macro_f1, "accuracy": "accuracy"})
        f1s = scores["test_f1"]
        row = {
            "C": c,
            "macro_f1": float(np.mean(f1s)),
            "macro_f1_se": float(np.std(f1s, ddof=1) / np.sqrt(len(f1s))),
            "accuracy": float(np.mean(scores["test_accuracy"])),
        }
        if best is None or row["macro_f1"] > best["macro_f1"]:
            best = row
    return best


def fewest_within_one_se(layers: list[dict], reference: dict) -> int:
    return next(r for r in layers if r["macro_f1"] >= reference["macro_f1"] - reference["macro_f1_se"])[
        "num_hidden_layers"
    ]


def plot(result: dict, path: Path) -> None:
    """Cross-validated macro-F1 (with its standard error) and accuracy by the layer the head reads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    n = [r["num_hidden_layers"] for r in layers]
    fig, axes = plt.subplots(figsize=(7, 3.6))
    f1 = np.array([r["macro_f1"] for r in layers])
    se = np.array([r["macro_f1_se"] for r in layers])
    axes.plot(n, f1, marker="o", label="macro-F1")
    axes.fill_between(n, f1 - se, f1 + se, alpha=0.2)
    axes.plot(n, [r["accuracy"] for r in layers], marker=".", label="accuracy")
    together = result["all_layers_together"]
    axes.axhline(together["macro_f1"], linestyle="--", color="C0", alpha=0.6, label="macro-F1, all layers together")
    axes.set(xlabel="layers the head reads through (num_hidden_layers)", ylabel="cross-validated, training items")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/smollm2-135m-search/probe_layers.json")
    parser.add_argument("--cache_dir", default="outputs/probe_layers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    train = load_task_data(None, "paper")["train"]
    features = cached_features(layer_feature_function(), train, cache_dir, "paper_train")
    targets = np.array([LABELS.index(e["final_decision"]) for e in train])
    layers = []
    for n in range(1, features.shape[1] + 1):
        layers.append({"num_hidden_layers": n, **cross_validated(features[:, n - 1], targets)})
        print(json.dumps(layers[-1]), flush=True)
    result = {
        "split": "paper",
        "train_items": len(train),
        "protocol": f"{FOLDS}-fold stratified cross-validation on the training items, {REPEATS} shuffles",
        "fewest_within_one_se_of_full_model": fewest_within_one_se(layers, layers[-1]),
        "fewest_within_one_se_of_best_layer": fewest_within_one_se(layers, max(layers, key=lambda r: r["macro_f1"])),
        "layers": layers,
        # Not a head a model can have: every layer's state side by side, the most a linear reading of these gets.
        "all_layers_together": cross_validated(features.reshape(len(features), -1), targets),
    }
    atomic_write_json(args.output, result)
    plot(result, Path(args.output).with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "layers"}, indent=2))


if __name__ == "__main__":
    main()
