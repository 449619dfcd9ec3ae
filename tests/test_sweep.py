"""sweep.py: points run train -> infer -> evaluate, finished points are skipped, an interrupted point
resumes where it stopped, and the tables and figure are written."""

import json

import pytest
import yaml

import infer
import sweep
import train
from domainqa.families import causal_lm
from sweeps.plan import SweepArguments, SweepError, build_points


def write_sweep(tmp_path, tiny_llama, pqal_path, **definition):
    recipe = tmp_path / "base.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_llama),
                "dataset_path": str(pqal_path),
                "peft_method": "lora",
                "lora_r": 2,
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "max_steps": 1,
                "learning_rate": 1e-3,
                "report_to": "none",
                "save_strategy": "no",
                "mode": "score",
                "batch_size": 4,
            }
        )
    )
    definition = {
        "name": "tiny",
        "base_recipe": str(recipe),
        "overrides": {"max_train_samples": 4, "max_eval_samples": 4, "batch_size": 2, "bootstrap_samples": 50},
        **definition,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def sweep_args(path, tmp_path, *extra):
    return [str(path), "--output_root", str(tmp_path / "out"), "--results_root", str(tmp_path / "results"),
            "--launcher", "inprocess", *extra]  # fmt: skip


@pytest.fixture
def counted(monkeypatch):
    """Count the calls of train.main and infer.main made by the sweep."""
    calls = {"train": 0, "infer": 0}
    for module in (train, infer):
        real = module.main

        def counting(*args, real=real, name=module.__name__):
            calls[name] += 1
            return real(*args)

        monkeypatch.setattr(module, "main", counting)
    return calls


def test_series_runs_skips_finished_points_and_writes_table_and_figure(tmp_path, tiny_llama, pqal_path, counted):
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4, 16], zero_shot=True)
    result = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path)))
    assert result["status"] == {"lora_alpha-4": "ran", "lora_alpha-16": "ran", "zero-shot": "ran"}
    assert counted == {"train": 2, "infer": 3}
    point = tmp_path / "out" / "tiny" / "lora_alpha-16"
    assert json.loads((point / "adapter_config.json").read_text())["lora_alpha"] == 16
    assert json.loads((point / "metrics.json").read_text())["num_examples"] == 4
    record = json.loads((point / "point.json").read_text())
    assert (
        record["commands"]["train"].startswith("python train.py ") and "--lora_alpha 16" in record["commands"]["train"]
    )
    assert not (tmp_path / "out" / "tiny" / "zero-shot" / "adapter_config.json").exists()

    results_dir = tmp_path / "results" / "tiny"
    table = (results_dir / "table.md").read_text()
    assert "| LoRA alpha | LoRA accuracy | LoRA macro-F1 |" in table
    assert "| 4 | " in table and "| 16 | " in table and "| zero-shot (untrained) |" in table
    assert "| majority class (" in table
    assert (results_dir / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((results_dir / "results.json").read_text())
    assert [p["name"] for p in saved["points"]] == ["lora_alpha-4", "lora_alpha-16", "zero-shot"]
    assert saved["unfinished"] == [] and saved["points"][0]["train_examples"] == 4

    mtime = (point / "adapter_model.safetensors").stat().st_mtime_ns
    again = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path)))
    assert set(again["status"].values()) == {"skipped"}
    assert counted == {"train": 2, "infer": 3}  # nothing retrained or predicted again
    assert (point / "adapter_model.safetensors").stat().st_mtime_ns == mtime

    (results_dir / "table.md").unlink()
    sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--collect_only")))
    assert (results_dir / "table.md").read_text() == table
    assert counted == {"train": 2, "infer": 3}


def test_interrupted_point_resumes_without_retraining(tmp_path, tiny_llama, pqal_path, counted, monkeypatch):
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4, 8])
    real = causal_lm.score_labels
    scored = []

    def interrupted(model, tokenizer, fmt, items, batch_size):
        for n, row in enumerate(real(model, tokenizer, fmt, items, batch_size)):
            if n == 2 and len(scored) >= 4:  # the second point stops after two predictions
                raise KeyboardInterrupt
            scored.append(row["id"])
            yield row

    monkeypatch.setattr(causal_lm, "score_labels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path)))
    second = tmp_path / "out" / "tiny" / "lora_alpha-8"
    assert (second / "train_results.json").is_file() and not (second / "metrics.json").exists()
    assert counted["train"] == 2 and len(scored) == 6
    table = tmp_path / "results" / "tiny" / "table.md"
    assert not table.exists()

    sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--collect_only")))  # the finished point only
    assert 'Unfinished points ("not run" in the tables): lora_alpha-8' in table.read_text()
    assert "| 8 | not run | not run |" in table.read_text()

    monkeypatch.setattr(causal_lm, "score_labels", real)
    result = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path)))
    assert result["status"] == {"lora_alpha-4": "skipped", "lora_alpha-8": "ran"}
    assert counted["train"] == 2  # training of the interrupted point was finished: not repeated
    assert json.loads((second / "metrics.json").read_text())["num_examples"] == 4
    assert "predictions_paper_test_score.meta.json" in {p.name for p in second.iterdir()}
    assert json.loads((second / "point.json").read_text())["seconds"]["evaluate"] >= 0


def test_data_variants_table(tmp_path, tiny_llama, pqal_path):
    data = tmp_path / "rewritten.jsonl"
    items = json.loads(pqal_path.read_text())
    rows = [
        {"id": f"r{pmid}", "question": v["QUESTION"], "context": " ".join(v["CONTEXTS"]),
         "long_answer": v["LONG_ANSWER"], "final_decision": v["final_decision"]}
        for pmid, v in list(items.items())[:4]
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write_sweep(
        tmp_path, tiny_llama, pqal_path,
        variants=[{"name": "original", "model": "tiny"},
                  {"name": "rewriteQA", "model": "tiny", "train_data": str(data)}],
    )  # fmt: skip
    sweep.main(*sweep.parse_args(sweep_args(path, tmp_path)))
    table = (tmp_path / "results" / "tiny" / "table.md").read_text()
    assert "| training data | tiny accuracy | tiny macro-F1 |" in table
    assert "| original | " in table and "| rewriteQA | " in table and "figure.png" not in table
    assert not (tmp_path / "results" / "tiny" / "figure.png").exists()


def test_keep_going_runs_the_points_after_a_failed_one(tmp_path, tiny_llama, pqal_path, counted):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "x", "question": "Q?", "context": "C", "final_decision": "probably"}\n')
    path = write_sweep(
        tmp_path, tiny_llama, pqal_path,
        variants=[{"name": "bad", "model": "tiny", "train_data": str(empty)}, {"name": "original", "model": "tiny"}],
    )  # fmt: skip
    with pytest.raises(SweepError, match="point\\(s\\) failed: bad"):
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--keep_going")))
    assert counted["train"] == 2 and counted["infer"] == 1  # the bad point failed, the next one ran
    assert (tmp_path / "out" / "tiny" / "original" / "metrics.json").is_file()
    assert "| bad | not run | not run |" in (tmp_path / "results" / "tiny" / "table.md").read_text()


def test_changed_settings_and_bad_definitions_are_refused(tmp_path, tiny_llama, pqal_path):
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4])
    point = tmp_path / "out" / "tiny" / "lora_alpha-4"
    point.mkdir(parents=True)
    (point / "point.json").write_text(json.dumps({"recipe": "other.yaml", "settings": {}}))
    with pytest.raises(SweepError, match="started with other settings"):
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path)))
    with pytest.raises(SweepError, match="unknown recipe key"):
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--overrides", '{"learning_rat": 1}')))
    with pytest.raises(SweepError, match="unknown point"):
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--only", "lora_alpha-5")))
    with pytest.raises(SweepError, match="no points"):
        sweep.main(
            *sweep.parse_args(sweep_args(write_sweep(tmp_path, tiny_llama, pqal_path, base_recipe=None), tmp_path))
        )


def test_dry_run_prints_each_script_with_its_own_flags(tmp_path, tiny_llama, pqal_path, capsys):
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="lora_alpha", values=[4])
    sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--dry_run")))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["train.py", "infer.py", "evaluate.py"]
    assert "--batch_size 2" in lines[1] and "--batch_size" not in lines[0] + lines[2]
    assert "--bootstrap_samples 50" in lines[2] and "--lora_alpha 4" in lines[0]
    assert build_points(SweepArguments(name="x", base_recipe=str(path.parent / "base.yaml"),
                                       parameter="lora_alpha", values=["8"]))[0].value == 8  # fmt: skip


def test_each_script_runs_in_a_fresh_process_with_its_output_in_the_point_log(tmp_path, tiny_llama, pqal_path):
    """The default launcher: infer and evaluate each in a spawned process, called with their argument objects;
    what they print goes to the point's logs, and a failure names its log."""
    path = write_sweep(tmp_path, tiny_llama, pqal_path, zero_shot=True)
    args = [str(path), "--output_root", str(tmp_path / "out"), "--results_root", str(tmp_path / "results")]
    result = sweep.main(*sweep.parse_args(args))
    assert result["status"] == {"zero-shot": "ran"}
    point = tmp_path / "out" / "tiny" / "zero-shot"
    assert json.loads((point / "metrics.json").read_text())["num_examples"] == 4
    assert (point / "infer.log").read_text().startswith(f"\n$ python infer.py {tmp_path / 'base.yaml'} ")
    assert "Wrote " in (point / "infer.log").read_text() and not (point / "train.log").exists()

    (tmp_path / "no-model").mkdir()  # a folder the arguments accept and the loader then finds empty
    bad = write_sweep(tmp_path, tiny_llama, pqal_path, name="bad", zero_shot=True,
                      overrides={"model_name_or_path": str(tmp_path / "no-model")})  # fmt: skip
    with pytest.raises(SweepError, match=r"^infer\.py failed \(.+\); its log is .*bad/zero-shot/infer\.log$"):
        sweep.main(*sweep.parse_args([str(bad), *args[1:]]))


def test_finalist_is_chosen_on_validation_and_alone_scored_on_test(tmp_path, tiny_llama, pqal_path, counted):
    path = write_sweep(tmp_path, tiny_llama, pqal_path, parameter="learning_rate", values=[1e-3, 1e-1], zero_shot=True)
    with pytest.raises(SweepError, match="chosen on validation items"):
        sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--test_finalist")))
    assert counted == {"train": 0, "infer": 0}  # refused before any work

    on_validation = ["--overrides", '{"max_train_samples": 4, "max_eval_samples": 4, "batch_size": 2, '
                     '"bootstrap_samples": 50, "eval_split": "validation"}']  # fmt: skip
    results = sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--test_finalist", *on_validation)))
    trained = [r for r in results["points"] if r["kind"] == "series"]
    best = max(trained, key=lambda r: r["macro_f1"])  # the first of equals
    other = next(r for r in trained if r is not best)
    out = tmp_path / "out" / "tiny"
    assert results["finalist"]["point"] == best["name"]
    assert counted == {"train": 2, "infer": 3 + 2}  # three points on validation, finalist and untrained on test
    assert (out / best["name"] / "test_metrics.json").is_file() and (out / "zero-shot" / "test_metrics.json").is_file()
    assert not (out / other["name"] / "test_metrics.json").exists()

    test_ids = set(json.loads(next((out / best["name"]).glob("*test*.json")).read_text()))
    validation_ids = set(json.loads(next((out / best["name"]).glob("*validation*.json")).read_text()))
    assert len(test_ids) == 4 and not test_ids & validation_ids
    finalist = (tmp_path / "results" / "tiny" / "finalist.md").read_text()
    assert f"| finalist: {best['name']} | {best['accuracy']:.3f} / {best['macro_f1']:.3f} |" in finalist
    assert "| untrained model |" in finalist and "Finalist minus untrained model" in finalist
    assert "on 4 validation items" in (tmp_path / "results" / "tiny" / "table.md").read_text()

    sweep.main(*sweep.parse_args(sweep_args(path, tmp_path, "--test_finalist", *on_validation)))
    assert counted == {"train": 2, "infer": 5}  # the test items are scored once
