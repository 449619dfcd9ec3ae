"""Distillation from the teacher's label distribution (`teacher_probs`, `distill_weight`): the data check, the
loss arithmetic, and real training runs of both model families on the tiny models."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import train
from domainqa.config import UsageError
from domainqa.data import DataError, load_task_data, normalize_example
from domainqa.distill import NO_TEACHER, mix_losses, teacher_rows
from domainqa.families.causal_lm import AnswerLossSFTTrainer
from domainqa.families.classifier import classification_loss
from domainqa.probe_head import _probe, fit_soft
from tests.helpers import train_args

# Six of the eight training items carry a teacher distribution, so every batch of four holds some.
TEACHERS = [{"yes": 0.7, "no": 0.2, "maybe": 0.1}, {"yes": 0.1, "no": 0.1, "maybe": 0.8}] * 3 + [None, None]


def test_teacher_probs_are_checked_and_renormalised():
    row = {"id": "1", "question": "Q?", "context": "C", "final_decision": "yes"}
    example = normalize_example({**row, "teacher_probs": {"Yes": 2, "no": 1, "maybe": 1}}, "data.jsonl, row 1")
    assert example["teacher_probs"] == {"yes": 0.5, "no": 0.25, "maybe": 0.25}
    bad = [
        ({"yes": 1.0, "no": 0.0}, "has labels yes, no; expected yes, no, maybe"),
        ({"yes": 1.0, "no": 0.0, "perhaps": 0.0}, "has labels yes, no, perhaps"),
        ({"yes": -0.1, "no": 0.6, "maybe": 0.5}, "must map each label to a probability"),
        ({"yes": float("nan"), "no": 0.5, "maybe": 0.5}, "must map each label to a probability"),
        ({"yes": 0, "no": 0, "maybe": 0}, "must map each label to a probability"),
        ([0.5, 0.3, 0.2], "must map each label to a probability"),
    ]
    for value, message in bad:
        with pytest.raises(DataError, match=f"data.jsonl, row 2: teacher_probs {message}"):
            normalize_example({**row, "teacher_probs": value}, "data.jsonl, row 2")


def test_teacher_rows_follow_the_label_order():
    items = [{"id": "a", "teacher_probs": {"no": 0.2, "yes": 0.8}}, {"id": "b"}]
    assert teacher_rows(items, ("yes", "no")) == [[0.8, 0.2], [NO_TEACHER, NO_TEACHER]]
    with pytest.raises(UsageError, match="item a: teacher_probs has labels"):
        teacher_rows(items, ("yes", "no", "maybe"))


def test_mixed_loss_is_cross_entropy_plus_kl_where_a_teacher_is():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [NO_TEACHER] * 3])
    hard = F.cross_entropy(logits, labels, reduction="none")
    mixed = mix_losses(hard, logits, teacher, 0.25)
    for i in range(2):
        q = logits[i].softmax(-1)
        kl = sum(p * math.log(p / q[j]) for j, p in enumerate(teacher[i].tolist()))
        assert mixed[i].item() == pytest.approx(0.75 * hard[i].item() + 0.25 * kl, rel=1e-5)
    assert mixed[2] == hard[2]  # no teacher: the hard loss alone
    assert torch.equal(mix_losses(hard, logits, teacher, 0.0)[:2], hard[:2])

    # The classifier's loss: the same mix, summed over the accumulated batch's items.
    loss = classification_loss(None, 0.25)
    loss.teacher = teacher
    assert loss({"logits": logits}, labels, num_items_in_batch=3).item() == pytest.approx(mixed.sum().item() / 3)


def test_causal_lm_mixes_the_last_decision_token_of_each_row():
    """The flattened answer positions of three rows: the KL goes to each row's last label token (a reasoning
    answer can name a label before its decision), and a row without one keeps its losses."""
    label_tokens, weight = [5, 6, 7], 0.5
    trainer = SimpleNamespace(label_tokens=label_tokens, args=SimpleNamespace(distill_weight=weight))
    targets = torch.tensor([1, 5, 2, 6, 3, 7, 4, 8, 9])
    rows = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    logits = torch.randn(len(targets), 10, generator=torch.Generator().manual_seed(0))
    losses = F.cross_entropy(logits, targets, reduction="none")
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    mixed = AnswerLossSFTTrainer._distilled(trainer, losses, logits, targets, rows, teacher)
    for position, row in ((1, 0), (5, 1)):
        expected = mix_losses(losses[[position]], logits[[position]][:, label_tokens], teacher[[row]], weight)
        assert mixed[position].item() == pytest.approx(expected.item())
    untouched = [0, 2, 3, 4, 6, 7, 8]
    assert torch.equal(mixed[untouched], losses[untouched])


def teacher_data(tmp_path, pqal_path, teachers, name, count=8):
    """The first `count` training items, the first ones with these teacher distributions."""
    items = load_task_data(str(pqal_path))["train"][:count]
    rows = [{**e, "teacher_probs": t} if t else e for e, t in zip(items, teachers + [None] * count, strict=False)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def trained(tmp_path, name, model, pqal_path, data, *extra):
    out = tmp_path / name
    args = train_args(model, out, pqal_path, "--train_data", str(data), "--save_strategy", "no", "--seed", "7", *extra)
    train.main(*train.parse_args(args))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h], out


@pytest.mark.parametrize(
    "model_fixture, weights_file, extra",
    [
        ("tiny_llama", "adapter_model.safetensors", []),
        ("tiny_bert", "model.safetensors", ["--peft_method", "full"]),
    ],
)
def test_distillation_changes_training_only_when_asked(model_fixture, weights_file, extra, tmp_path, pqal_path,
                                                       request):  # fmt: skip
    model = request.getfixturevalue(model_fixture)
    plain, taught = (
        teacher_data(tmp_path, pqal_path, [], "plain"),
        teacher_data(tmp_path, pqal_path, TEACHERS, "taught"),
    )
    base_losses, base = trained(tmp_path, "plain", model, pqal_path, plain, *extra)
    zero_losses, zero = trained(tmp_path, "zero", model, pqal_path, taught, *extra)
    soft_losses, soft = trained(tmp_path, "soft", model, pqal_path, taught, "--distill_weight", "0.5", *extra)

    # distill_weight 0: the teacher column is read but changes nothing, to the bit.
    assert zero_losses == base_losses
    for key, value in load_file(base / weights_file).items():
        assert torch.equal(value, load_file(zero / weights_file)[key]), key
    # distill_weight 0.5: the first step's batch holds taught items, so its loss moves; training still completes.
    assert len(soft_losses) == len(base_losses) and soft_losses[0] != base_losses[0]
    assert all(math.isfinite(x) for x in soft_losses)
    assert (soft / weights_file).is_file()


def test_distillation_without_a_teacher_is_refused_before_work(tmp_path, tiny_llama, pqal_path):
    out = tmp_path / "run"
    plain = teacher_data(tmp_path, pqal_path, [], "plain")
    with pytest.raises(UsageError, match="distill_weight 0.5 needs training items with teacher_probs"):
        train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, "--train_data", str(plain),
                                                "--distill_weight", "0.5")))  # fmt: skip
    assert not (out / "trainer_state.json").exists()
    with pytest.raises(ValueError, match="distill_weight must be at most 1, got 1.5"):
        train.parse_args(train_args(tiny_llama, out, pqal_path, "--distill_weight", "1.5"))


def test_a_probe_fitted_to_one_hot_targets_is_the_hard_label_probe():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5))
    targets = (features[:, 0] > 0).astype(int) + (features[:, 1] > 1).astype(int)
    scaler, hard = _probe(0.1, None)
    hard.fit(scaler.fit_transform(features), targets)
    soft = fit_soft(0.1, None, True, features, targets, np.eye(3)[targets])
    expected = hard.predict_proba(scaler.transform(features))
    assert np.abs(soft.predict_proba(features) - expected).max() < 1e-3
    # Targets pulled toward "maybe" for every item move the fitted probabilities there.
    pulled = fit_soft(0.1, None, True, features, targets, 0.5 * np.eye(3)[targets] + 0.5 * np.eye(3)[[2] * 60])
    assert pulled.predict_proba(features)[:, 2].mean() > expected[:, 2].mean() + 0.1


def test_the_probe_head_is_fitted_to_the_teacher_mix_only_when_asked(tmp_path, tiny_llama, pqal_path):
    # 30 items: the probe's cross-validation needs two of every label.
    probe_only = ("--task_type", "sequence_classification", "--head_init", "linear_probe", "--num_train_epochs", "0",
                  "--max_steps", "-1", "--peft_method", "full", "--max_train_samples", "30")  # fmt: skip
    plain = teacher_data(tmp_path, pqal_path, [], "plain", 30)
    taught = teacher_data(tmp_path, pqal_path, TEACHERS * 4, "taught", 30)
    heads = {}
    for name, data, extra in (("plain", plain, ()), ("zero", taught, ()), ("soft", taught, ("--distill_weight", "1"))):
        _, out = trained(tmp_path, name, tiny_llama, pqal_path, data, *probe_only, *extra)
        heads[name] = load_file(out / "model.safetensors")["score.weight"]
    assert torch.equal(heads["zero"], heads["plain"])
    assert not torch.allclose(heads["soft"], heads["plain"])
