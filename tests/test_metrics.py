import json

import pytest

import evaluate
from domainqa.config import UsageError
from domainqa.metrics import evaluate_predictions, paired_bootstrap

# 6 items: truth yes yes no no maybe yes; predicted yes no no yes maybe yes.
TRUTH = {"1": "yes", "2": "yes", "3": "no", "4": "no", "5": "maybe", "6": "yes"}
PRED = {"1": "yes", "2": "no", "3": "no", "4": "yes", "5": "maybe", "6": "yes"}


def test_metrics_match_hand_computed_values():
    m = evaluate_predictions(TRUTH, PRED, bootstrap_samples=200)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # yes: P 2/3 R 2/3 F1 2/3; no: P 1/2 R 1/2 F1 1/2; maybe: P 1 R 1 F1 1.
    assert m["per_class"]["yes"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["no"]["f1"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["confusion_matrix"]["rows_true_cols_predicted"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["majority_baseline"] == pytest.approx({"label": "yes", "accuracy": 0.5, "macro_f1": (2 / 3) / 3})
    low, high = m["bootstrap_95"]["accuracy"]
    assert 0 <= low <= m["accuracy"] <= high <= 1


def test_macro_f1_follows_the_official_script_when_a_class_is_never_predicted():
    # The official script calls f1_score(average="macro") with no label list: the classes are those in
    # truth or predictions, so an absent "maybe" does not count as a zero.
    truth = {"1": "yes", "2": "no", "3": "yes"}
    pred = {"1": "yes", "2": "yes", "3": "yes"}
    m = evaluate_predictions(truth, pred, bootstrap_samples=0)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)
    assert "bootstrap_95" not in m


def test_missing_and_unknown_pmids_are_listed():
    pred = {k: v for k, v in PRED.items() if k != "3"} | {"99": "yes"}
    with pytest.raises(ValueError, match=r"1 test PMID\(s\) missing: 3; 1 PMID\(s\) not in the test set: 99"):
        evaluate_predictions(TRUTH, pred)
    with pytest.raises(ValueError, match="not yes/no/maybe"):
        evaluate_predictions(TRUTH, PRED | {"1": "Yes"})


def test_evaluate_script_reads_both_formats_and_compares_runs(tmp_path, capsys):
    truth_file, official, jsonl = tmp_path / "truth.json", tmp_path / "a.json", tmp_path / "b.jsonl"
    truth_file.write_text(json.dumps(TRUTH))
    official.write_text(json.dumps(PRED))
    rows = [{"id": k, "prediction": v, "parsed": k != "2"} for k, v in TRUTH.items()]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "metrics.json"
    args = ["--predictions", str(official), str(jsonl), "--ground_truth_file", str(truth_file)]
    results = evaluate.main(*evaluate.parse_args(args + ["--output_file", str(out), "--bootstrap_samples", "50"]))
    table = capsys.readouterr().out
    assert f"| {official} | 0.667 |" in table and f"| {jsonl} | 1.000 |" in table
    assert "| majority class (yes) | 0.500 |" in table
    assert results[str(jsonl)]["num_unparsed"] == 1
    saved = json.loads(out.read_text())
    assert saved[str(official)]["accuracy"] == pytest.approx(4 / 6) and "macro_f1" in saved[str(official)]


def test_evaluate_script_single_file_output_has_top_level_keys(tmp_path, pqal_path):
    preds = tmp_path / "p.json"
    from domainqa.data import load_pubmedqa, paper_split

    test = paper_split(load_pubmedqa(str(pqal_path)))["test"]
    preds.write_text(json.dumps({e["id"]: "yes" for e in test}))
    out = tmp_path / "m.json"
    evaluate.main(
        *evaluate.parse_args(["--predictions", str(preds), "--dataset_path", str(pqal_path), "--output_file", str(out)])
    )
    metrics = json.loads(out.read_text())
    assert metrics["accuracy"] == pytest.approx(0.554)  # the paper's majority-class row
    assert metrics["macro_f1"] == pytest.approx(0.238, abs=5e-4)


def test_evaluate_script_errors_on_partial_predictions_unless_allowed(tmp_path, pqal_path):
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"21645374": "yes"}))  # a train item, not a test item
    with pytest.raises(UsageError, match="not in the test set: 21645374"):
        evaluate.main(*evaluate.parse_args(["--predictions", str(preds), "--dataset_path", str(pqal_path)]))
    from domainqa.data import load_pubmedqa

    last = load_pubmedqa(str(pqal_path))[-1]
    preds.write_text(json.dumps({last["id"]: last["final_decision"]}))
    results = evaluate.main(
        *evaluate.parse_args(["--predictions", str(preds), "--dataset_path", str(pqal_path), "--allow_partial"])
    )
    assert results[str(preds)]["accuracy"] == 1.0 and results[str(preds)]["num_examples"] == 1


def test_a_long_list_of_wrong_pmids_stays_one_short_line():
    truth = {f"{i:02d}": "yes" for i in range(30)}
    with pytest.raises(
        ValueError, match=r"30 test PMID\(s\) missing: 00, 01, 02, 03, 04, 05, 06, 07, 08, 09 and 20 more$"
    ):
        evaluate_predictions(truth, {})


def test_paired_bootstrap_of_a_model_against_itself_and_against_a_worse_one():
    truth, pred = list(TRUTH.values()), list(PRED.values())
    same = paired_bootstrap(truth, pred, pred, samples=200)
    assert same["accuracy"] == {"difference": 0.0, "interval_95": [0.0, 0.0], "share_not_better": 1.0}
    better = paired_bootstrap(truth * 20, truth * 20, pred * 20, samples=200)  # perfect against 4/6 right
    assert better["accuracy"]["difference"] == pytest.approx(2 / 6)
    low, high = better["macro_f1"]["interval_95"]
    assert 0 < low <= better["macro_f1"]["difference"] <= high
    assert better["accuracy"]["share_not_better"] == 0.0


def test_evaluate_script_compares_each_run_with_a_baseline(tmp_path, capsys):
    truth_file, tuned, untouched = tmp_path / "truth.json", tmp_path / "tuned.json", tmp_path / "untouched.json"
    truth_file.write_text(json.dumps(TRUTH))
    tuned.write_text(json.dumps(TRUTH))  # every item right
    untouched.write_text(json.dumps(PRED))  # 4 of 6 right
    out = tmp_path / "metrics.json"
    evaluate.main(*evaluate.parse_args(["--predictions", str(tuned), "--baseline", str(untouched),
                                        "--ground_truth_file", str(truth_file), "--bootstrap_samples", "100",
                                        "--output_file", str(out)]))  # fmt: skip
    table = capsys.readouterr().out
    assert f"| against {untouched} |" in table and f"| {tuned} | +0.333 (" in table
    versus = json.loads(out.read_text())["versus_baseline"]
    assert versus["baseline"] == str(untouched)
    assert versus["accuracy"]["difference"] == pytest.approx(2 / 6)
    assert versus["macro_f1"]["difference"] == pytest.approx(1 - (2 / 3 + 0.5 + 1) / 3)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({k: v for k, v in PRED.items() if k != "6"}))
    with pytest.raises(UsageError, match="the baseline lacks 1 item"):
        evaluate.main(
            *evaluate.parse_args(
                ["--predictions", str(tuned), "--baseline", str(short), "--ground_truth_file", str(truth_file)]
            )
        )
    with pytest.raises(UsageError, match="--baseline needs --bootstrap_samples above 0"):
        evaluate.main(
            *evaluate.parse_args(
                ["--predictions", str(tuned), "--baseline", str(untouched), "--bootstrap_samples", "0"]
            )
        )
