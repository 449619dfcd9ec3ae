"""A classifier head that starts as a linear probe (head_init linear_probe): the head computes exactly the
fitted logistic regression, on an encoder (head with bias) and a decoder (head without), and train.py runs it."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

import train
from domainqa.config import UsageError
from domainqa.data import LABELS, load_task_data
from domainqa.families.classifier import encode, head_name, load_classifier, match_padding
from domainqa.modeling import load_tokenizer
from domainqa.probe_head import C_GRID, _probe, check_probe_data, cv_folds, fit_head_as_probe, head_inputs
from tests.helpers import train_args

TRAIN_ITEMS = 60  # the first 60 paper training items hold every label at least twice


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_llama"])
def test_head_predicts_what_the_fitted_probe_predicts(model_fixture, request, pqal_path):
    path = request.getfixturevalue(model_fixture)
    model = load_classifier(str(path), "float32")
    tokenizer = load_tokenizer(str(path))
    match_padding(model, tokenizer)
    items = load_task_data(str(pqal_path))["train"][:TRAIN_ITEMS]
    dataset = Dataset.from_list(encode(tokenizer, items, 128))
    head = getattr(model, head_name(model))
    assert (head.bias is not None) == (model_fixture == "tiny_bert")
    before = head.weight.detach().clone()

    choice = fit_head_as_probe(model, head, dataset, LABELS)

    assert choice["C"] in C_GRID and choice["folds"] == 5 and 0 <= choice["cv_macro_f1"] <= 1
    assert not torch.equal(head.weight, before)
    # The same probe fitted here on the same features predicts what the model's own head now predicts.
    features = head_inputs(model, head, dataset)
    scaler, probe = _probe(choice["C"], None, fit_intercept=head.bias is not None)
    expected = probe.fit(scaler.fit_transform(features), dataset["labels"]).predict(scaler.transform(features))
    with torch.inference_mode():
        model.eval()
        logits = [model(input_ids=torch.tensor([row["input_ids"]])).logits[0] for row in dataset]
    predicted = torch.stack(logits).argmax(-1).numpy()
    assert np.array_equal(predicted, expected)
    assert choice["train_accuracy"] == pytest.approx(float((predicted == np.asarray(dataset["labels"])).mean()))


def test_train_py_fits_the_probe_then_fine_tunes(tmp_path, tiny_bert, pqal_path):
    out = tmp_path / "run"
    args = train_args(tiny_bert, out, pqal_path, "--task_type", "sequence_classification",
                      "--head_init", "linear_probe", "--max_train_samples", str(TRAIN_ITEMS))  # fmt: skip
    metrics = train.main(*train.parse_args(args))
    assert metrics["train_examples"] == TRAIN_ITEMS
    probe = json.loads((out / "probe_head.json").read_text())
    assert probe["C"] in C_GRID and set(map(float, probe["cv_macro_f1_by_C"])) == set(C_GRID)
    assert "head_init: linear_probe" in (out / "run_config.yaml").read_text()


def test_cross_validation_keeps_each_source_in_one_fold():
    """An original and the items written from it never sit on both sides of a fold; without repeated sources the
    folds are the plain stratified ones (so runs on original data choose what they chose before)."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(0)
    sources = [f"s{i}" for i in range(60)]
    groups = sources + [s for s in sources[:40] for _ in range(2)]  # 60 originals, 80 rewrites of 40 of them
    labels_of = {s: rng.integers(0, 3) for s in sources}
    targets = np.array([labels_of[g] for g in groups])
    folds = cv_folds(targets, groups)
    assert len(folds) == 5
    for train_part, held_out in folds:
        assert not {groups[i] for i in train_part} & {groups[i] for i in held_out}
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(len(groups)))
    plain = StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(targets[:60], targets[:60])
    for (a_train, a_held), (b_train, b_held) in zip(cv_folds(targets[:60], sources), plain, strict=True):
        assert np.array_equal(a_train, b_train) and np.array_equal(a_held, b_held)


def test_cross_validation_runs_when_a_label_has_one_item_or_none():
    """A small written data set can hold one "maybe" or none (the data study fits each fold's written items
    alone): two folds, every item held out once, instead of a crash on n_splits=1."""
    with pytest.warns(UserWarning, match="least populated class"):
        folds = cv_folds(np.array([0] * 10 + [1] * 6 + [2]))
    assert len(folds) == 2 and sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(17))
    assert len(cv_folds(np.array([0] * 10 + [2] * 3))) == 3  # a label with no item is not the rarest


def test_train_py_groups_augmented_items_by_source(tmp_path, tiny_bert, pqal_path):
    originals = load_task_data(str(pqal_path))["train"][:TRAIN_ITEMS]
    rewrites = [{**e, "id": f"{e['id']}-rewrite", "source_id": e["id"], "question": e["question"] + " (reworded)"}
                for e in originals[:20]]  # fmt: skip
    data = tmp_path / "combined.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*originals, *rewrites]))
    out = tmp_path / "run"
    args = train_args(tiny_bert, out, pqal_path, "--task_type", "sequence_classification", "--head_init",
                      "linear_probe", "--train_data", str(data), "--max_train_samples", "100")  # fmt: skip
    assert train.main(*train.parse_args(args))["train_examples"] == TRAIN_ITEMS + 20
    assert json.loads((out / "probe_head.json").read_text())["sources"] == TRAIN_ITEMS


@pytest.mark.parametrize(
    "model_fixture, extra, message",
    [
        ("tiny_llama", [], "head_init linear_probe is for sequence classifiers"),
        ("tiny_bert", ["--task_type", "sequence_classification", "--max_train_samples", "3"],
         "needs at least 2 training items of every label; too few: ['no (1)', 'maybe (0)']"),
    ],
)  # fmt: skip
def test_bad_probe_settings_stop_before_anything_is_written(tmp_path, request, pqal_path, model_fixture, extra,
                                                             message):  # fmt: skip
    out = tmp_path / "run"
    args = train_args(request.getfixturevalue(model_fixture), out, pqal_path, "--head_init", "linear_probe", *extra)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train.main(*train.parse_args(args))
    assert not out.exists()


def test_zero3_is_refused_before_the_model_loads():
    """ZeRO-3 partitions the head at load, so no process could fit it: refused in one line."""
    from transformers.integrations import HfDeepSpeedConfig

    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    with pytest.raises(UsageError, match="cannot run under DeepSpeed ZeRO-3"):
        check_probe_data([0, 0, 1, 1, 2, 2], LABELS)
    del zero3
    check_probe_data([0, 0, 1, 1, 2, 2], LABELS)  # without it the same data passes


def test_the_feature_cache_keys_items_by_text_not_only_by_id(tmp_path):
    """Written items keep their id across runs and prompt versions; the benchmarks' feature cache must not
    hand one text's features to another text under the same id, and must not compute a cached text twice."""
    from studies.linear_probe import cached_features

    computed = []

    def compute(example):
        computed.append(example["question"])
        return np.array([float(len(example["question"]))])

    first = {"id": "123-new-model-0", "question": "Is it?", "context": "c", "long_answer": "a"}
    second = {**first, "question": "Does it work at all?"}
    assert cached_features(compute, [first], tmp_path, "run_a").tolist() == [[6.0]]
    assert cached_features(compute, [second, first], tmp_path, "run_b").tolist() == [[20.0], [6.0]]
    assert computed == ["Is it?", "Does it work at all?"]
