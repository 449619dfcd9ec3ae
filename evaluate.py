"""Accuracy and macro-F1 of PubMedQA predictions (or those of your own data set, over its label set),
identical to the official evaluation, with per-class scores, confusion matrix, majority baseline and
bootstrap 95% intervals.

    python evaluate.py --predictions outputs/run/predictions_paper_test_score.json
    python evaluate.py --predictions run_a.json run_b.jsonl --split official --output_file metrics.json
    python evaluate.py --predictions tuned.json --baseline untouched.json   # paired differences and intervals
"""

from __future__ import annotations

import dataclasses

from domainqa import config
from domainqa.arguments import DataArguments, EvaluationArguments, pipeline_keys
from domainqa.config import UsageError, run_cli
from domainqa.data_spec import DataSpec, infer_labels, known_labels, load_parts
from domainqa.io import atomic_write_json
from domainqa.metrics import evaluate_predictions, format_difference, paired_bootstrap
from domainqa.predictions import prediction_meta, read_predictions

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(DataSpec))


def spec_from_predictions(data_args: DataArguments, eval_args: EvaluationArguments) -> DataArguments:
    """Where no data set is named (every data key at its default), the one infer.py recorded in the files'
    .meta.json: a prediction file scores with no recipe. Files of different data sets are refused."""
    if eval_args.ground_truth_file or any(getattr(data_args, n) != f.default for n, f in _spec_defaults().items()):
        return data_args
    recorded = {path: {n: prediction_meta(path)[n] for n in SPEC_FIELDS if n in prediction_meta(path)}
                for path in eval_args.predictions}  # fmt: skip
    specs = {repr(sorted(spec.items())): path for path, spec in recorded.items() if spec}
    if len(specs) > 1:
        raise UsageError(f"{' and '.join(specs.values())} were predicted on different data sets; score them apart")
    if not specs:
        return data_args
    spec = recorded[next(iter(specs.values()))]
    if spec.get("split") != "custom":  # PQA-L is the same file wherever it lies: keep this machine's path
        spec.pop("dataset_path", None)
    eval_split = prediction_meta(next(iter(specs.values()))).get("eval_split")
    if eval_split and eval_args.eval_split == "test":
        eval_args.eval_split = eval_split
    return dataclasses.replace(data_args, **spec)


def _spec_defaults() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(DataArguments) if f.name in SPEC_FIELDS}


def ground_truth(data_args: DataArguments, eval_args: EvaluationArguments) -> tuple[dict[str, str], tuple[str, ...]]:
    """{id: label} of the items scored, and the label set: the data set's, or with a truth file the declared
    one (PubMedQA's by default; split custom without labels: the labels the file holds)."""
    if eval_args.ground_truth_file:
        labels = known_labels(data_args)
        truth, _ = read_predictions(eval_args.ground_truth_file, labels)  # the same {PMID: label} format
        if labels is None:
            examples = [{"final_decision": label} for label in truth.values()]
            labels = infer_labels(examples, eval_args.ground_truth_file)
        return truth, labels
    data = load_parts(data_args)
    return {e["id"]: e["final_decision"] for e in data[eval_args.eval_split]}, data.labels


def markdown_table(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    predicted = "/".join(first["predicted_distribution"])  # the label set, in its order
    lines = [
        f"| predictions | accuracy | 95% CI | macro-F1 | 95% CI | predicted {predicted} | unparsed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def interval(metrics: dict, name: str) -> str:
        low_high = metrics.get("bootstrap_95", {}).get(name)
        return f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "n/a"

    for name, m in results.items():
        unparsed = "n/a" if m.get("num_unparsed") is None else str(m["num_unparsed"])
        if m.get("partial"):
            name = f"{name} (partial: {m['partial']}, not comparable)"
        shares = "/".join(str(n) for n in m["predicted_distribution"].values())
        lines.append(
            f"| {name} | {m['accuracy']:.3f} | {interval(m, 'accuracy')} | {m['macro_f1']:.3f} "
            f"| {interval(m, 'macro_f1')} | {shares} | {unparsed} |"
        )
    baseline = first["majority_baseline"]
    lines.append(
        f"| majority class ({baseline['label']}) | {baseline['accuracy']:.3f} | | {baseline['macro_f1']:.3f} | | | |"
    )
    return "\n".join(lines)


def compare_with_baseline(
    results: dict[str, dict], read: dict, baseline: dict[str, str], truth: dict[str, str], eval_args
) -> None:
    """Adds `versus_baseline` to each file's results and prints the paired differences as a table."""
    lines = [
        f"\n| against {eval_args.baseline} | accuracy difference (95% CI) | macro-F1 difference (95% CI) |",
        "| --- | --- | --- |",
    ]
    for path, (predictions, _) in read.items():
        if path == eval_args.baseline:
            continue
        pmids = [pmid for pmid in truth if pmid in predictions]  # every test PMID, or the slice of --allow_partial
        missing = [pmid for pmid in pmids if pmid not in baseline]
        if missing:
            raise UsageError(f"{eval_args.baseline}: the baseline lacks {len(missing)} item(s) of {path}")
        paired = paired_bootstrap(
            [truth[p] for p in pmids],
            [predictions[p] for p in pmids],
            [baseline[p] for p in pmids],
            eval_args.bootstrap_samples,
            eval_args.bootstrap_seed,
        )
        results[path]["versus_baseline"] = {"baseline": eval_args.baseline, **paired}
        lines.append(f"| {path} | {format_difference(paired['accuracy'])} | {format_difference(paired['macro_f1'])} |")
    print("\n".join(lines))


ARGUMENTS = (DataArguments, EvaluationArguments)


def parse_args(
    args: list[str] | None = None, settings: dict | None = None
) -> tuple[DataArguments, EvaluationArguments]:
    """The command line (default: this process's); `settings` are recipe keys set on top of the recipe."""
    return config.parse_args(*ARGUMENTS, args=args, settings=settings, shared_keys=pipeline_keys())


def main(data_args: DataArguments, eval_args: EvaluationArguments) -> dict[str, dict]:
    """Score every predictions file; returns the metrics by file (and writes them to --output_file)."""
    data_args = spec_from_predictions(data_args, eval_args)
    # Bad files fail before any work (a label set read off the data is checked once the data are read).
    read = {path: read_predictions(path, known_labels(data_args)) for path in eval_args.predictions}
    baseline = read_predictions(eval_args.baseline, known_labels(data_args))[0] if eval_args.baseline else None
    truth, labels = ground_truth(data_args, eval_args)
    results = {}
    for path, (predictions, unparsed) in read.items():
        scored_truth = truth
        if eval_args.allow_partial:
            scored_truth = {pmid: label for pmid, label in truth.items() if pmid in predictions}
        try:
            metrics = evaluate_predictions(
                scored_truth, predictions, eval_args.bootstrap_samples, eval_args.bootstrap_seed, labels
            )
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None
        results[path] = {**metrics, "num_unparsed": unparsed, "predictions_file": path}
        if eval_args.allow_partial:
            results[path]["partial"] = f"{len(scored_truth)} of {len(truth)} items"
    print(markdown_table(results))
    if baseline is not None:
        compare_with_baseline(results, read, baseline, truth, eval_args)
    if eval_args.output_file:
        atomic_write_json(eval_args.output_file, results[eval_args.predictions[0]] if len(results) == 1 else results)
    return results


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
