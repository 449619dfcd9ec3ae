"""The local backend with the real embedded SmolLM2-135M-Instruct under grammar-constrained decoding."""

from __future__ import annotations

import json

import pytest

from augment.__main__ import main
from augment.prompts import output_schema

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
    return True


def cached_answers(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cache").rglob("*.json"))]


def test_constrained_answers_parse_and_satisfy_the_schema(tmp_path, pqal_path, smollm2_path):
    """Every answer, rewrite, new pair and verdict alike, is one JSON object under its schema; the
    content checks still run on them (what they reject is counted, not a parse failure)."""
    out = tmp_path / "local"
    flags = ["--backend", "transformers", "--dataset_path", str(pqal_path), "--output_dir", str(out)]
    flags += ["--strategy", "combined", "--max_sources", "1", "--batch_size", "2", "--max_tokens", "700", "--verify"]
    assert main(flags) == 0
    answers = cached_answers(out)
    kinds = {"pubmedqa_item": "rewrite", "pubmedqa_verdict": "verify"}
    assert len(answers) >= 2 and {a["schema"]["title"] for a in answers} <= set(kinds)
    for answer in answers:
        schema = output_schema(kinds[answer["schema"]["title"]])
        assert answer["schema"] == schema
        assert satisfies(json.loads(answer["text"]), schema), answer["text"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_sent_this_run"] == len(answers)
    assert "unparseable" not in summary["rejected_by_reason"]
    assert "missing_field" not in summary["rejected_by_reason"]
    assert summary["accepted_by_strategy"]["original"] == 1


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
    assert main([*flags, "--output_dir", str(plain)]) == 0
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
