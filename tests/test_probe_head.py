"""A classifier head that starts as a linear probe (head_init linear_probe): the head computes exactly the
fitted logistic regression, on an encoder (head with bias) and a decoder (head without), and train.py runs it."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

import train
from domainqa.classifier import encode, head_name, load_classifier, match_padding
from domainqa.config import UsageError
from domainqa.data import LABELS, load_task_data
from domainqa.modeling import load_tokenizer
from domainqa.probe_head import C_GRID, _probe, check_probe_data, fit_head_as_probe, head_inputs
from tests.test_pipeline import train_args

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
