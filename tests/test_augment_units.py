"""Pieces of augment/: parsing, validation, rate limiting, retry delays, recipes, the local backend."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from augment.__main__ import main
from augment.arguments import AugmentArguments
from augment.backends import OpenAISettings, TransformersSettings, batches, repetition_processors
from augment.batch import BatchSettings
from augment.prompts import (
    QUESTION_MAX_CHARS,
    QUESTION_PATTERN,
    ParseError,
    build_messages,
    output_schema,
    parse_output,
    parse_verdict,
)
from augment.requests import Request
from augment.retry import RateLimiter, RetryPolicy, parse_retry_after
from augment.validation import Limits, check_fields, jaccard, repeat_share
from domainqa.config import parse_args

REPO = Path(__file__).resolve().parents[1]
SOURCE = {
    "id": "1",
    "question": "Does aspirin lower the risk of stroke in older adults?",
    "context": "We followed 2,000 adults over 70 years for five years. Strokes were fewer in the aspirin group.",
    "long_answer": "Aspirin lowered the risk of stroke in older adults.",
    "final_decision": "yes",
}


def test_parse_output_reads_fences_prose_and_aliases():
    text = 'Sure!\n```json\n{"Question": "Q one two?", "contexts": ["a b", "c d"], "answer": "Yes."}\n```'
    out = parse_output(text)
    assert out["question"] == "Q one two?" and out["context"] == "a b c d" and out["final_decision"] == "yes"
    assert out["long_answer"] is None
    assert parse_output('The answer: {"final_decision": "no", "question": "x"} done')["final_decision"] == "no"
    with pytest.raises(ParseError):
        parse_output('{"question": "cut off')
    assert parse_verdict('{"final_decision": "maybe"}') == "maybe" and parse_verdict("I think no.") == "no"


def test_prompts_hide_the_decision_from_the_verifier():
    assert '"final_decision"' in build_messages("rewrite", SOURCE)[1]["content"]
    verify = build_messages("verify", SOURCE)[1]["content"]
    assert SOURCE["question"] in verify and '"yes"' in verify and "Input:" in verify
    assert json.loads(verify.split("Input:")[1]) == {"question": SOURCE["question"], "context": SOURCE["context"]}


def test_prompt_v2_changes_only_the_new_pair_prompt():
    """v2 hides the source question from a new-pair prompt; the other prompts, and so their cached answers, stay."""
    for kind in ("rewrite", "verify"):
        assert build_messages(kind, SOURCE, version="v2") == build_messages(kind, SOURCE, version="v1")
    v1, v2 = (build_messages("new", SOURCE, version=v)[1]["content"] for v in ("v1", "v2"))
    assert SOURCE["question"] in v1 and SOURCE["question"] not in v2
    assert json.loads(v2.split("Input:")[1]) == {"context": SOURCE["context"], "long_answer": SOURCE["long_answer"]}


def test_validation_reasons():
    limits = Limits(max_question_words=20)
    good = {
        "question": "Is stroke less frequent in elderly people taking aspirin?",
        "context": "2,000 people aged over seventy were observed for five years; fewer strokes in the aspirin arm.",
        "long_answer": "Taking aspirin reduced strokes among the elderly.",
        "final_decision": "yes",
    }
    assert check_fields(good, "rewrite", SOURCE, limits) is None
    assert check_fields({**good, "final_decision": "no"}, "rewrite", SOURCE, limits)[0] == "decision_changed"
    assert check_fields({**good, "final_decision": "no"}, "new", SOURCE, limits) is None
    assert check_fields({**good, "final_decision": None}, "new", SOURCE, limits)[0] == "bad_decision"
    assert check_fields({**good, "context": ""}, "rewrite", SOURCE, limits)[0] == "missing_field"
    assert check_fields({**good, "question": "word " * 30}, "rewrite", SOURCE, limits)[0] == "length"
    assert check_fields(dict(SOURCE), "rewrite", SOURCE, limits)[0] == "copy_of_source"
    assert check_fields({**good, "question": SOURCE["question"]}, "new", SOURCE, limits)[0] == "copy_of_source"
    assert jaccard("a b c d", "A b, c d!") == 1.0
    made_up = {**good, "context": good["context"] + " Of them, 1,204 had a stroke (12.5%)."}
    assert check_fields(made_up, "rewrite", SOURCE, limits) == ("invented_number", "not in the source: 12.5, 1204")
    assert check_fields({**good, "context": "All 2000 adults, followed for 5 years."}, "new", SOURCE, limits) is None
    assert check_fields(made_up, "rewrite", SOURCE, Limits(max_question_words=20, check_numbers=False)) is None


def test_a_looping_output_is_rejected_and_no_labelled_item_would_be(pqal_path):
    good = {
        "question": "Is stroke less frequent in elderly people taking aspirin?",
        "context": "Over five years, fewer strokes happened in the aspirin arm than in the placebo arm of the trial.",
        "long_answer": "Taking aspirin reduced strokes among the elderly.",
        "final_decision": "yes",
    }
    looping = {**good, "long_answer": "Aspirin helps. " + "This is the solution to the problem. " * 6}
    reason, detail = check_fields(looping, "new", SOURCE, Limits())
    assert reason == "repetitive" and "allowed 25%" in detail
    assert check_fields(looping, "new", SOURCE, Limits(max_repeat_share=1.0)) is None
    assert check_fields(good, "new", SOURCE, Limits()) is None
    labelled = json.loads(pqal_path.read_text()).values()
    shares = [repeat_share(" ".join([i["QUESTION"], *i["CONTEXTS"], i["LONG_ANSWER"]])) for i in labelled]
    assert len(shares) == 1000 and max(shares) < Limits().max_repeat_share


def test_a_statement_for_a_question_is_rejected_unless_the_source_asks_none(pqal_path):
    """PubMedQA's questions all end with a question mark, and v3's pattern takes every one that is not longer
    than its bound; a source of one's own data that asks none (an instruction) does not make its outputs ask one."""
    statement = {
        "question": "Aspirin lowers the risk of stroke in older adults.",
        "context": "Over five years, fewer strokes happened in the aspirin arm than in the placebo arm of the trial.",
        "long_answer": "Taking aspirin reduced strokes among the elderly.",
        "final_decision": "yes",
    }
    assert check_fields(statement, "new", SOURCE, Limits())[0] == "not_a_question"
    claim = {**SOURCE, "question": "Classify the effect of aspirin on strokes"}
    assert check_fields(statement, "new", claim, Limits()) is None
    questions = [i["QUESTION"] for i in json.loads(pqal_path.read_text()).values()]
    assert len(questions) == 1000 and all(q.endswith("?") for q in questions)
    short = [q for q in questions if len(q) <= QUESTION_MAX_CHARS]
    assert len(short) == 879 and all(re.fullmatch(QUESTION_PATTERN, q) for q in short)


def test_prompt_v3_constrains_the_question_to_end_at_its_question_mark(smollm2_path):
    """v3 asks as v2 does and adds the pattern to bounded schemas only; the real tokenizer's grammar takes
    a question and refuses a statement or a second sentence after the question."""
    import xgrammar

    from augment.backends import GrammarCache
    from domainqa.modeling import load_model, load_tokenizer

    assert build_messages("new", SOURCE, version="v3") == build_messages("new", SOURCE, version="v2")
    assert output_schema("new", version="v2") == output_schema("new")
    assert output_schema("new", bounded=False, version="v3") == output_schema("new", bounded=False)
    schema = output_schema("new", version="v3")
    assert schema["properties"]["question"] == {"type": "string", "pattern": QUESTION_PATTERN}
    assert "pattern" not in output_schema("verify", version="v3")["properties"]["final_decision"]

    grammars = GrammarCache()
    name = "embedded:SmolLM2-135M-Instruct"
    grammars.setup(load_tokenizer(name), load_model(name))
    rest = '"context": "' + "c" * 120 + '", "long_answer": "' + "a" * 30 + '", "final_decision": "yes"}'

    def accepts(question: str) -> bool:  # the whole answer, as the grammar spaces it
        matcher = xgrammar.GrammarMatcher(grammars.grammar(schema))
        return matcher.accept_string('{"question": "' + question + '", ' + rest)

    assert accepts("Does aspirin lower the risk of stroke?")
    assert not accepts("Aspirin lowers the risk of stroke.")
    assert not accepts("Does aspirin lower the risk of stroke? Yes it does.")
    assert not accepts("Why?")  # shorter than the shortest question
    assert not accepts("Does aspirin " + "x" * QUESTION_MAX_CHARS + "?")
    assert not accepts("Does aspirin lower the risk?!")


def test_rate_limiter_paces_requests_to_the_rpm_limit():
    async def go() -> float:
        limiter = RateLimiter(rpm=600)  # one every 0.1 s
        started = time.monotonic()
        await asyncio.gather(*(limiter.acquire() for _ in range(6)))
        return time.monotonic() - started

    elapsed = asyncio.run(go())
    assert 0.45 <= elapsed < 0.8


def test_rate_limiter_keeps_tokens_per_minute():
    async def go() -> float:
        limiter = RateLimiter(tpm=60_000)  # 1,000 tokens/s, a bucket of 10 s' worth
        await limiter.acquire(10_000)  # empties the bucket
        started = time.monotonic()
        await limiter.acquire(500)  # must wait for 500 tokens to flow back in
        return time.monotonic() - started

    assert 0.45 <= asyncio.run(go()) < 0.9


def test_retry_delays_back_off_with_jitter_and_honour_retry_after():
    policy = RetryPolicy(max_retries=5, base=1.0, cap=8.0)
    assert policy.delay(0, rng=lambda: 0.0) == 0.5 and policy.delay(0, rng=lambda: 1.0) == 1.0
    assert policy.delay(3, rng=lambda: 1.0) == 8.0 and policy.delay(10, rng=lambda: 1.0) == 8.0
    assert policy.delay(3, retry_after=2.5) == 2.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 0 <= parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 1
    assert parse_retry_after({}) is None


def test_cache_keys_never_change():
    """Answers are cached under these keys: a different key for the same request orphans every cached answer."""
    messages = [{"role": "system", "content": "Rewrite."}, {"role": "user", "content": 'Input: {"question": "Ça va?"}'}]
    params = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 1024, "seed": 1}
    free = Request(messages, params, "openai", "gpt-3.5-turbo", {"source": 0})
    assert free.key == "a54ddadee0f4279b1c5799ce3b82fa00c13f80e369be71eb157ca6e65b1fc78f"
    schema = output_schema("rewrite", True)
    local = Request(messages, params, "transformers", "embedded:SmolLM2-135M-Instruct", {}, schema)
    assert local.key == "7f0d517bfdbf0d6f4af9cc64471db64687ab913648d4c9ae25b48b442e82ea73"


def test_backends_take_their_settings_from_the_arguments(tmp_path):
    args = AugmentArguments(
        base_url="http://host/v1", max_retries=2, backoff_base=0.5, backoff_max=4.0, json_mode="off", batch_size=3
    )
    server = OpenAISettings.from_arguments(args)
    assert (server.base_url, server.json_mode, server.max_concurrency) == ("http://host/v1", "off", 8)
    assert server.retry == RetryPolicy(max_retries=2, base=0.5, cap=4.0)
    args.output_dir = str(tmp_path)
    local = TransformersSettings.from_arguments(args)
    assert (local.model, local.batch_size, local.constrained) == (args.model, 3, False)
    batch = BatchSettings.from_arguments(args)
    assert (batch.max_retries, batch.state_path) == (2, tmp_path / "batch_state.json")


def test_every_recipe_parses():
    recipes = sorted((REPO / "recipes" / "augment").glob("*qa.yaml"))
    names = {p.stem for p in recipes}
    for model in ("gpt-3.5-turbo", "gpt-4", "smollm2-local"):
        assert {f"{model}-rewriteqa", f"{model}-newqa", f"{model}-combinedqa"} <= names
    for recipe in recipes:
        (args,) = parse_args(AugmentArguments, args=[str(recipe)])
        assert args.output_dir == f"outputs/augment/{recipe.stem}"


@pytest.mark.slow
def test_local_transformers_backend_runs_offline_and_resumes(tiny_llama, tmp_path, pqal_path, capsys):
    out = tmp_path / "local"
    flags = ["--backend", "transformers", "--model", str(tiny_llama), "--dataset_path", str(pqal_path)]
    flags += ["--output_dir", str(out), "--max_sources", "3", "--max_tokens", "8", "--batch_size", "2"]
    assert main(flags) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 3 and summary["requests_sent_this_run"] == 3
    assert summary["accepted"] + summary["rejected"] == 3  # a random tiny model writes no JSON: all rejected
    assert summary["tokens_out"] > 0 and summary["estimated_cost_usd"] == 0.0
    assert main(flags) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_sent_this_run"] == 0 and summary["cache_hits"] == 3


def test_local_batches_share_one_schema_and_one_set_of_parameters():
    """One generate call samples its batch alike under one grammar: mixed requests are never batched."""
    item, verdict = output_schema("rewrite"), output_schema("verify")
    params = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 8, "seed": 0}

    def request(schema, seed=0):
        return Request([{"role": "user", "content": "x"}], {**params, "seed": seed}, "transformers", "m", {}, schema)

    mixed = [request(item), request(item), request(verdict), request(item, seed=1), request(item), request(item)]
    assert [len(b) for b in batches(mixed, 2)] == [2, 1, 1, 2]
    assert all(len({(str(r.schema), r.params["seed"]) for r in b}) == 1 for b in batches(mixed, 2))
    assert output_schema("rewrite", bounded=False)["properties"]["context"] == {"type": "string"}
    assert output_schema("verify")["required"] == ["final_decision"]


def test_the_repetition_penalty_lowers_only_tokens_the_answer_already_holds():
    """Prompts are left-padded to one length; the penalty skips that many tokens, so a word of the source
    can be quoted freely while a word the answer already wrote is penalised (and no penalty, no processor)."""
    import torch

    prompt = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]])
    answered = torch.cat([prompt, torch.tensor([[3], [5]])], dim=1)  # the answers wrote 3 and 5 so far
    (penalty,) = repetition_processors({"repetition_penalty": 2.0}, {"input_ids": prompt})
    scores = penalty(answered, torch.full((2, 10), 4.0))
    assert scores[0].tolist() == [4.0, 4.0, 4.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert scores[1].tolist() == [4.0, 4.0, 4.0, 4.0, 4.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert repetition_processors({"temperature": 0.7}, {"input_ids": prompt}) == []
