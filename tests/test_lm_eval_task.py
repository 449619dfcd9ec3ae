"""The lm-evaluation-harness task that domainqa.lm_eval_task exports scores the items infer.py scores, with the same
prompt, label set and tokens: the harness's accuracy equals evaluate.py's, every item's choice is the same and
each label's log-likelihood agrees, for the untouched model, a LoRA run and a full fine-tune (the runs' contexts cut
to their max_length). The harness tests are skipped, with the reason, where lm-eval cannot be imported."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from tokenizers import processors

import evaluate
import infer
import train
from domainqa import lm_eval_task
from domainqa.config import run_main
from domainqa.data import LABELS, load_pubmedqa, paper_split
from domainqa.modeling import load_tokenizer
from domainqa.prompts import PromptFormat
from tests.helpers import STEM, train_args

TASK = "domainqa_paper_test"


@pytest.fixture(scope="module")
def harness():
    """lm_eval.simple_evaluate on an exported task folder, on the CPU, with the harness's own HF model."""
    lm_eval = pytest.importorskip(
        "lm_eval",
        reason="lm-eval cannot be imported (not installed, or broken); pip install -r requirements-dev.txt installs it",
        exc_type=ImportError,  # an install whose dependencies clash is a skip too, not an error
    )
    from lm_eval.tasks import TaskManager

    def run(model_args: str, task_dir: str, task: str) -> dict:
        return lm_eval.simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=[task],
            # Only our folder: indexing the harness's thousands of built-in tasks would take most of the test.
            task_manager=TaskManager(include_path=task_dir, include_defaults=False),
            batch_size=1,
            device="cpu",
            log_samples=True,
            bootstrap_iters=0,
        )

    return run


def export(argv: list[str], capsys) -> list[str]:
    """Run the export as its command line does; returns the `lm_eval` command it printed, as words."""
    capsys.readouterr()
    assert run_main(lm_eval_task.main, argv) == 0
    return shlex.split(capsys.readouterr().out.split("Score it with:")[1])


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_harness_accuracy_equals_evaluate_py_on_the_same_items(harness, tiny_llama, pqal_path, tmp_path, capsys):
    data = ["--dataset_path", str(pqal_path), "--max_eval_samples", "8", "--dtype", "float32"]
    task_dir = tmp_path / "task"
    command = export(["--model_name_or_path", str(tiny_llama), *data, "--output_dir", str(task_dir)], capsys)
    model_args = option(command, "--model_args")
    assert model_args == f"pretrained={tiny_llama},dtype=float32,softmax_dtype=float32"
    assert option(command, "--include_path") == str(task_dir) and option(command, "--tasks") == TASK

    out = tmp_path / "zero_shot"
    infer.main(*infer.parse_args(["--model_name_or_path", str(tiny_llama), *data, "--output_dir", str(out),
                                  "--batch_size", "1"]))  # fmt: skip
    official = str(out / f"{STEM}.json")
    scored = ["--predictions", official, "--dataset_path", str(pqal_path), "--allow_partial", "--bootstrap_samples",
              "0"]  # fmt: skip
    metrics = evaluate.main(*evaluate.parse_args(scored))[official]

    results = harness(model_args, str(task_dir), TASK)
    assert results["results"][TASK]["acc,none"] == pytest.approx(metrics["accuracy"])
    comparison = lm_eval_task.compare(results["samples"][TASK], read_jsonl(out / f"{STEM}.jsonl"))
    assert comparison["items"] == 8 and comparison["harness_only"] == comparison["predictions_only"] == 0
    assert comparison["different_choice"] == [] and comparison["max_loglikelihood_difference"] < 1e-4
    assert comparison["harness_accuracy"] == comparison["accuracy"] == metrics["accuracy"]


@pytest.mark.parametrize("peft_method", ["lora", "full"])
def test_trained_run_exports_its_command_and_scores_alike(harness, tiny_llama, pqal_path, tmp_path, capsys,
                                                          peft_method):  # fmt: skip
    run = tmp_path / "run"
    train.main(*train.parse_args(train_args(tiny_llama, run, pqal_path, "--peft_method", peft_method, "--max_length",
                                            "256", "--save_strategy", "no")))  # fmt: skip
    data = ["--dataset_path", str(pqal_path), "--max_eval_samples", "8", "--dtype", "float32"]
    command = export([str(run), *data], capsys)  # settings from run_config.yaml; the task beside the run
    model_args = option(command, "--model_args")
    model = f"pretrained={tiny_llama},peft={run}" if peft_method == "lora" else f"pretrained={run}"  # a whole model
    assert model_args == f"{model},tokenizer={run},dtype=float32,softmax_dtype=float32"
    assert option(command, "--include_path") == str(run / "lm_eval")

    infer.main(*infer.parse_args(["--adapter_path", str(run), *data, "--batch_size", "1"]))
    rows = read_jsonl(run / f"{STEM}.jsonl")
    assert all(row.get("truncated") for row in rows)  # contexts cut to the run's max_length: the export cut them too

    results = harness(model_args, option(command, "--include_path"), option(command, "--tasks"))
    comparison = lm_eval_task.compare(results["samples"][TASK], rows)
    assert comparison["items"] == 8 and comparison["different_choice"] == []
    assert comparison["max_loglikelihood_difference"] < 1e-4
    assert results["results"][TASK]["acc,none"] == pytest.approx(comparison["accuracy"])


def test_a_bos_from_both_template_and_tokenizer_is_flagged(tiny_llama, pqal_path):
    """The harness adds no BOS to a text that starts with one; label scoring keeps the tokenizer's, a second one."""
    tokenizer = load_tokenizer(str(tiny_llama))
    fmt = PromptFormat("chat", tokenizer)
    item = paper_split(load_pubmedqa(str(pqal_path)))["test"][0]
    assert fmt.scoring_context(item).startswith(tokenizer.bos_token)  # this template writes it
    assert lm_eval_task.same_tokens(tokenizer, fmt, item)
    bos = (tokenizer.bos_token, tokenizer.bos_token_id)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A",
                                                                               special_tokens=[bos])  # fmt: skip
    assert tokenizer(fmt.scoring_context(item)).input_ids[:2] == [bos[1], bos[1]]
    assert not lm_eval_task.same_tokens(tokenizer, fmt, item)


def test_compare_reads_the_harness_samples_file(tmp_path, capsys):
    """The samples file holds the log-likelihoods as strings; a differing choice is named by its item."""
    harness_scores = {"a": [-1.0, -2.0, -3.0], "b": [-2.0, -1.0, -3.0]}
    our_scores = {"a": [-1.0, -2.0, -3.0], "b": [-0.5, -1.0, -3.0]}
    samples = [{"doc_id": i, "doc": {"id": item, "gold": "0"}, "filtered_resps": [[str(s), "False"] for s in scores]}
               for i, (item, scores) in enumerate(harness_scores.items())]  # fmt: skip
    rows = [{"id": item, "prediction": "yes", "label": "yes", "label_logprobs": dict(zip(LABELS, scores, strict=True))}
            for item, scores in our_scores.items()]  # fmt: skip
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert run_main(lm_eval_task.main, ["compare", str(tmp_path / "samples.jsonl"), str(tmp_path / "rows.jsonl")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 2 and result["different_choice"] == ["b"]
    assert result["harness_accuracy"] == 0.5 and result["accuracy"] == 1.0
    assert result["max_loglikelihood_difference"] == pytest.approx(1.5)
