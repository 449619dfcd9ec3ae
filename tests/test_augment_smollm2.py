"""The local backend with the real embedded SmolLM2-135M-Instruct under grammar-constrained decoding."""

from __future__ import annotations

import json
import re

import pytest

from augment.__main__ import main
from augment.prompts import output_schema
from augment.teacher_probs import label_distribution

pytestmark = pytest.mark.slow


def satisfies(value: object, schema: dict) -> bool:
    """The subset of JSON Schema that `output_schema` uses: an object of bounded strings and enums."""
    if not isinstance(value, dict) or set(value) != set(schema["required"]):
        return False
    for name, rule in schema["properties"].items():
        text = value[name]
        if not isinstance(text, str) or ("enum" in rule and text not in rule["enum"]):
            return False
        if not rule.get("minLength", 0) <= len(text) <= rule.get("maxLength", len(text)):
            return False
        if "pattern" in rule and not re.fullmatch(rule["pattern"], text):
            return False
    return True


def cached_answers(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cache").rglob("*.json"))]


def test_constrained_answers_parse_and_satisfy_the_schema(tmp_path, pqal_path, smollm2_path):
    """Every answer, rewrite, new pair and verdict alike, is one JSON object under its schema; the
    content checks still run on them (what they reject is counted, not a parse failure). The local backend's
    defaults are the best settings measured: prompt v3, repetition penalty 1.2, 700 answer tokens."""
    out = tmp_path / "local"
    flags = ["--backend", "transformers", "--dataset_path", str(pqal_path), "--output_dir", str(out)]
    flags += ["--strategy", "combined", "--max_sources", "1", "--batch_size", "2", "--verify"]
    assert main(flags) == 0
    answers = cached_answers(out)
    kinds = {"pubmedqa_item": "rewrite", "pubmedqa_verdict": "verify"}
    assert len(answers) >= 2 and {a["schema"]["title"] for a in answers} <= set(kinds)
    for answer in answers:
        schema = output_schema(kinds[answer["schema"]["title"]], version="v3")
        assert answer["schema"] == schema
        assert satisfies(json.loads(answer["text"]), schema), answer["text"]
        if answer["schema"]["title"] == "pubmedqa_item":
            assert answer["params"]["repetition_penalty"] == 1.2 and answer["params"]["max_tokens"] == 700
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_version"] == "v3" and summary["sampling"]["max_tokens"] == 700
    assert summary["requests_sent_this_run"] == len(answers)
    assert "unparseable" not in summary["rejected_by_reason"]
    assert "missing_field" not in summary["rejected_by_reason"]
    assert summary["accepted_by_strategy"]["original"] == 1
    # The model's own scores where each answer's decision starts: a distribution over the label set.
    for answer in answers:
        assert answer["decision_logprobs"]["source"] == "local scores"
        probs = label_distribution(answer["decision_logprobs"], ["yes", "no", "maybe"])
        assert list(probs) == ["yes", "no", "maybe"] and sum(probs.values()) == pytest.approx(1.0)
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    generated = [r for r in rows if r["strategy"] != "original"]
    assert all(sum(r["teacher_probs"].values()) == pytest.approx(1.0) for r in generated)
    assert summary["teacher_probs"]["accepted"] == len(generated)


def test_json_mode_off_generates_free_text_under_another_cache_key(tmp_path, pqal_path, smollm2_path):
    out = tmp_path / "free"
    flags = ["--backend", "transformers", "--dataset_path", str(pqal_path), "--output_dir", str(out)]
    flags += ["--max_sources", "1", "--max_tokens", "24", "--json_mode", "off", "--temperature", "0"]
    assert main(flags) == 0
    (answer,) = cached_answers(out)
    assert answer["schema"] is None and answer["tokens_out"] <= 24


def test_a_repetition_penalty_changes_the_answer_and_its_cache_key_but_not_the_verdicts(
    tmp_path, pqal_path, smollm2_path
):
    """Greedy answers of the same source with and without the penalty: different texts under different
    keys; the verifier's requests carry no penalty (a one-word verdict has nothing to repeat)."""
    flags = ["--backend", "transformers", "--dataset_path", str(pqal_path), "--max_sources", "1"]
    flags += ["--temperature", "0", "--max_tokens", "160", "--verify"]
    plain, penalised = tmp_path / "plain", tmp_path / "penalised"
    assert main([*flags, "--output_dir", str(plain), "--repetition_penalty", "1.0"]) == 0
    assert main([*flags, "--output_dir", str(penalised), "--repetition_penalty", "1.5"]) == 0

    def by_title(out):
        return {a["schema"]["title"]: a for a in cached_answers(out)}

    before, after = by_title(plain), by_title(penalised)
    assert "repetition_penalty" not in before["pubmedqa_item"]["params"]
    assert after["pubmedqa_item"]["params"]["repetition_penalty"] == 1.5
    assert after["pubmedqa_item"]["text"] != before["pubmedqa_item"]["text"]
    assert all("repetition_penalty" not in a["params"] for t, a in after.items() if t == "pubmedqa_verdict")
    summary = json.loads((penalised / "summary.json").read_text())
    assert summary["sampling"]["repetition_penalty"] == 1.5


def test_a_data_set_of_ones_own_without_long_answers_under_its_own_schema(tmp_path, pqal_path, smollm2_path):
    """A CSV with its own columns and labels and no long answer: the local grammar compiles the generic schema with
    the bounds of the data, the answer satisfies it, and data.jsonl keeps the CSV's column names."""
    import csv

    from domainqa.data import read_examples, split_pubmedqa

    parts = split_pubmedqa(read_examples(pqal_path), "paper")
    short = sorted((e for e in parts["train"] if e["final_decision"] != "maybe"), key=lambda e: len(e["context"]))
    files = {}
    for name, items in (("train", short[:3]), ("test", [e for e in parts["test"] if e["final_decision"] == "no"][:2])):
        files[name] = tmp_path / f"{name}.csv"
        with files[name].open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["key", "ask", "text", "tag"])
            for e in items:
                writer.writerow([e["id"], e["question"], e["context"], {"yes": "on", "no": "off"}[e["final_decision"]]])
    out = tmp_path / "own"
    flags = ["--backend", "transformers", "--split", "custom", "--dataset_path", str(files["train"])]
    flags += ["--test_data", str(files["test"]), "--validation_size", "1", "--labels", "on", "off"]
    flags += ["--id_column", "key", "--question_column", "ask", "--context_column", "text", "--label_column", "tag"]
    flags += ["--output_dir", str(out), "--max_sources", "1", "--min_context_ratio", "0"]
    assert main(flags) == 0
    (answer,) = cached_answers(out)
    schema = answer["schema"]
    assert schema["title"] == "qa_item" and list(schema["properties"]) == ["question", "context", "final_decision"]
    assert schema["properties"]["final_decision"]["enum"] == ["on", "off"]
    assert "long answer" not in json.dumps(answer["messages"])
    assert satisfies(json.loads(answer["text"]), schema), answer["text"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["columns"] == {"question": "ask", "context": "text", "final_decision": "tag", "id": "key"}
    assert "unparseable" not in summary["rejected_by_reason"] and summary["shape"]["long_answer"] is False
    columns = {"key", "ask", "text", "tag", "source_id", "strategy", "model", "prompt_version", "teacher_probs"}
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert all(set(row) == columns for row in rows)
    assert all(
        list(r["teacher_probs"]) == ["on", "off"] and sum(r["teacher_probs"].values()) == pytest.approx(1) for r in rows
    )
    probs = label_distribution(answer["decision_logprobs"], ["on", "off"])
    assert list(probs) == ["on", "off"] and sum(probs.values()) == pytest.approx(1.0)
