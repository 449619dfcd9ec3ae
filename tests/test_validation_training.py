"""Validation-driven training: label-scoring metrics at every evaluation, the best checkpoint by macro-F1,
label-only and class-weighted losses, and the curves figure."""

import json

import pytest
import torch

import infer
import train
from domainqa.arguments import DataArguments, ModelArguments, TrainingArguments
from domainqa.data import LABELS, load_task_data
from domainqa.families.causal_lm import CausalLM
from domainqa.inference import label_token_ids
from domainqa.metrics import official_scores
from domainqa.modeling import load_tokenizer
from domainqa.prompts import PromptFormat
from domainqa.training import balanced_weights
from tests.helpers import REPO, train_args


def test_best_checkpoint_by_validation_macro_f1_matches_infer(tmp_path, tiny_llama, pqal_path):
    out = tmp_path / "run"
    validation = ["--eval_strategy", "steps", "--eval_steps", "1", "--metric_for_best_model", "macro_f1",
                  "--load_best_model_at_end", "true", "--max_eval_samples", "6", "--max_steps", "3",
                  "--loss_on", "label", "--class_weighted_loss", "true", "--report_to", "tensorboard"]  # fmt: skip
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, *validation)))
    state = json.loads((out / "trainer_state.json").read_text())
    evaluations = [e for e in state["log_history"] if "eval_macro_f1" in e]
    # One evaluation per step, then train.py's final one of the reloaded best checkpoint.
    assert [e["step"] for e in evaluations] == [1, 2, 3, 3]
    assert all({"eval_accuracy", "eval_share_maybe"} <= set(e) for e in evaluations)
    assert state["best_metric"] == max(e["eval_macro_f1"] for e in evaluations[:3])
    assert evaluations[-1]["eval_macro_f1"] == pytest.approx(state["best_metric"])
    assert (out / "training_curves.png").stat().st_size > 10_000

    # TensorBoard holds the same curves: the training loss and the validation metrics at every evaluation.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {path.parent for path in out.rglob("events.out.tfevents.*")}
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train/loss", "eval/macro_f1", "eval/accuracy", "eval/share_maybe"} <= set(scalars)

    # The saved model is the best checkpoint: infer.py on the same validation items measures its macro-F1.
    infer.main(*infer.parse_args(["--output_dir", str(out), "--dataset_path", str(pqal_path), "--eval_split",
                                  "validation", "--max_eval_samples", "6", "--batch_size", "3"]))  # fmt: skip
    predicted = json.loads((out / "predictions_paper_validation_score.json").read_text())
    truth = {e["id"]: e["final_decision"] for e in load_task_data(str(pqal_path))["validation"][:6]}
    scores = official_scores([truth[k] for k in predicted], list(predicted.values()))
    assert scores["macro_f1"] == pytest.approx(state["best_metric"])


def test_label_only_pair_is_what_scoring_reads(tiny_llama, pqal_path):
    tokenizer = load_tokenizer(str(tiny_llama))
    fmt = PromptFormat("chat", tokenizer)
    example = load_task_data(str(pqal_path))["train"][0]
    pair = fmt.training_pair(example, loss_on="label")
    assert pair["prompt"] == fmt.scoring_context(example)
    assert pair["completion"] == fmt.label_text(example["final_decision"])  # the scored continuation
    assert pair["prompt"] + pair["completion"] == fmt.scoring_context(example) + fmt.label_text(
        example["final_decision"]
    )
    with pytest.raises(ValueError, match="answer_style 'direct'"):
        PromptFormat("chat", tokenizer, "reasoning").training_pair(example, loss_on="label")


def test_balanced_class_weights_on_the_decision_token(tiny_llama, pqal_path):
    items = load_task_data(str(pqal_path))["train"]  # 243 yes, 142 no, 65 maybe
    weights = balanced_weights(items, LABELS)
    assert weights["yes"] == pytest.approx(450 / (3 * 243)) and weights["maybe"] == pytest.approx(450 / (3 * 65))
    counts = {"yes": 243, "no": 142, "maybe": 65}
    assert sum(weights[label] * n for label, n in counts.items()) == pytest.approx(450)
    model_args, data_args = ModelArguments(model_name_or_path=str(tiny_llama)), DataArguments()
    family = CausalLM(model_args, data_args)
    family.training_data(TrainingArguments(output_dir="unused", class_weighted_loss=True), LABELS, items, items[:2])
    tokens = label_token_ids(family.tokenizer, family.prompt_format, items[0])
    assert family.class_weights == {tokens[label]: weights[label] for label in LABELS}


def test_class_weights_scale_the_decision_tokens_loss(tmp_path, tiny_llama, pqal_path):
    from domainqa.arguments import TrainingArguments
    from domainqa.families.causal_lm import AnswerLossSFTTrainer, build_peft_config, training_dataset
    from domainqa.modeling import load_model

    tokenizer = load_tokenizer(str(tiny_llama))
    fmt = PromptFormat("chat", tokenizer)
    items = load_task_data(str(pqal_path))["train"][:4]
    dataset = training_dataset(items, fmt, loss_on="label")
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none")
    plain = AnswerLossSFTTrainer(
        model=load_model(str(tiny_llama)),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=build_peft_config("lora", "llama"),
    )
    batch = plain.data_collator([plain.train_dataset[i] for i in range(4)])
    batch = {k: v.to(plain.args.device) for k, v in batch.items()}
    tokens = label_token_ids(tokenizer, fmt, items[0])
    plain.class_weights = {tokens["yes"]: 0.5, tokens["no"]: 2.0, tokens["maybe"]: 4.0}
    with torch.no_grad():
        weighted = plain.compute_loss(plain.model, dict(batch))
        # The same loss from the full logits: per-token cross-entropy, the decision tokens weighted.
        logits = plain.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    losses = torch.nn.functional.cross_entropy(logits[scored].float(), targets[scored], reduction="none")
    weights = torch.tensor([plain.class_weights.get(int(t), 1.0) for t in targets[scored]])
    assert (weights != 1.0).sum() == 4  # one decision token per example
    torch.testing.assert_close(weighted, (losses * weights).sum() / scored.sum(), atol=1e-5, rtol=1e-5)


SEARCH_RECIPES = sorted((REPO / "recipes" / "search").glob("*.yaml"))


@pytest.mark.parametrize("path", SEARCH_RECIPES, ids=[p.name for p in SEARCH_RECIPES])
def test_search_recipes_select_by_validation(path):
    from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, TrainingArguments, pipeline_keys
    from domainqa.config import parse_args

    on_cpu = {"bf16": False}  # the GPU search's recipes ask for bf16, which TrainingArguments refuses on a CPU
    model_args, data_args, training_args = parse_args(
        ModelArguments, DataArguments, TrainingArguments, args=[str(path)], settings=on_cpu, shared_keys=pipeline_keys()
    )
    _, _, infer_args = parse_args(
        ModelArguments, DataArguments, InferenceArguments, args=[str(path)], shared_keys=pipeline_keys()
    )
    if training_args.num_train_epochs == 0:  # a probe head and no step after it: no checkpoints to choose from
        assert training_args.head_init == "linear_probe"
    else:
        # A reasoning answer cannot be scored by label during training: its checkpoints are chosen by loss.
        best = ("eval_loss", False) if data_args.answer_style == "reasoning" else ("macro_f1", True)
        assert (training_args.metric_for_best_model, training_args.greater_is_better) == best
        assert training_args.load_best_model_at_end
        assert training_args.save_strategy == training_args.eval_strategy in ("steps", "epoch")
        if training_args.eval_strategy == "steps":
            assert training_args.save_steps == training_args.eval_steps  # every checkpoint has its score
    assert infer_args.eval_split == "validation"  # test items are scored once per finalist
    assert "tensorboard" in training_args.report_to
    assert training_args.output_dir == f"outputs/search/{path.stem}"
