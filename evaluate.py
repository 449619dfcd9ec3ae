"""Accuracy and macro-F1 of PubMedQA predictions, identical to the official evaluation, with
per-class scores, confusion matrix, majority baseline and bootstrap 95% intervals.

    python evaluate.py --predictions outputs/run/predictions_paper_test_score.json
    python evaluate.py --predictions run_a.json run_b.jsonl --split official --output_file metrics.json
"""

from __future__ import annotations

from domainqa.arguments import DataArguments, EvaluationArguments, pipeline_keys
from domainqa.config import UsageError, parse_args, run_cli
from domainqa.data import load_task_data
from domainqa.io import atomic_write_json
from domainqa.metrics import evaluate_predictions
from domainqa.predictions import read_predictions


def ground_truth(data_args: DataArguments, eval_args: EvaluationArguments) -> dict[str, str]:
    if eval_args.ground_truth_file:
        truth, _ = read_predictions(eval_args.ground_truth_file)  # the same {PMID: label} format
        return truth
    part = load_task_data(data_args.dataset_path, data_args.split, data_args.fold)[eval_args.eval_split]
    return {e["id"]: e["final_decision"] for e in part}


def markdown_table(results: dict[str, dict]) -> str:
    lines = [
        "| predictions | accuracy | 95% CI | macro-F1 | 95% CI | predicted yes/no/maybe | unparsed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def interval(metrics: dict, name: str) -> str:
        low_high = metrics.get("bootstrap_95", {}).get(name)
        return f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "n/a"

    for name, m in results.items():
        unparsed = "n/a" if m.get("num_unparsed") is None else str(m["num_unparsed"])
        shares = "/".join(str(n) for n in m["predicted_distribution"].values())
        lines.append(
            f"| {name} | {m['accuracy']:.3f} | {interval(m, 'accuracy')} | {m['macro_f1']:.3f} "
            f"| {interval(m, 'macro_f1')} | {shares} | {unparsed} |"
        )
    first = next(iter(results.values()))
    baseline = first["majority_baseline"]
    lines.append(
        f"| majority class ({baseline['label']}) | {baseline['accuracy']:.3f} | | {baseline['macro_f1']:.3f} | | | |"
    )
    return "\n".join(lines)


def main(args: list[str] | None = None) -> dict[str, dict]:
    data_args, eval_args = parse_args(DataArguments, EvaluationArguments, args=args, shared_keys=pipeline_keys())
    read = {path: read_predictions(path) for path in eval_args.predictions}  # bad files fail before any work
    truth = ground_truth(data_args, eval_args)
    results = {}
    for path, (predictions, unparsed) in read.items():
        scored_truth = truth
        if eval_args.allow_partial:
            scored_truth = {pmid: label for pmid, label in truth.items() if pmid in predictions}
        try:
            metrics = evaluate_predictions(
                scored_truth, predictions, eval_args.bootstrap_samples, eval_args.bootstrap_seed
            )
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None
        results[path] = {**metrics, "num_unparsed": unparsed}
    print(markdown_table(results))
    if eval_args.output_file:
        atomic_write_json(eval_args.output_file, results[eval_args.predictions[0]] if len(results) == 1 else results)
    return results


if __name__ == "__main__":
    run_cli(main)
