"""Pieces of augment/: parsing, validation, rate limiting, retry delays, recipes, the local backend."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from hashlib import sha256
from pathlib import Path

import pytest
import yaml

from augment.__main__ import main
from augment.arguments import AugmentArguments, looks_like_a_key
from augment.backends import (
    DecisionScores,
    OpenAISettings,
    TransformersBackend,
    TransformersSettings,
    batches,
    repetition_processors,
)
from augment.batch import BatchSettings
from augment.cache import CLAIMS_SUFFIX, AnswerCache, Claims
from augment.prompts import (
    PUBMEDQA,
    QUESTION_MAX_CHARS,
    QUESTION_PATTERN,
    ParseError,
    Shape,
    build_messages,
    output_schema,
    parse_output,
    parse_verdict,
)
from augment.requests import Answer, Request
from augment.retry import RateLimiter, RetryPolicy, parse_retry_after
from augment.teacher_probs import (
    DecisionLogprobs,
    decision_token_index,
    from_openai_logprobs,
    label_distribution,
    label_prefix,
)
from augment.validation import Limits, check_fields, jaccard, repeat_share
from domainqa.config import parse_args
from domainqa.data import read_examples

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
    assert server.teacher_probs is True
    assert server.retry == RetryPolicy(max_retries=2, base=0.5, cap=4.0)
    args.output_dir = str(tmp_path)
    local = TransformersSettings.from_arguments(args)
    assert (local.model, local.batch_size, local.constrained) == (args.model, 3, False)
    batch = BatchSettings.from_arguments(args)
    assert (batch.max_retries, batch.state_path) == (2, tmp_path / "batch_state.json")


def test_every_recipe_parses():
    recipes = sorted((REPO / "recipes" / "augment").glob("*qa.yaml"))
    names = {p.stem for p in recipes}
    for model in ("gpt-3.5-turbo", "gpt-4", "smollm2-local", "smollm2-local-v1", "smollm2-local-yesno-csv"):
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


def test_pubmedqa_prompts_and_schemas_of_every_version_never_change(pqal_path):
    """Their text and schema are the cache key of every answer made with them: the generic wording for other
    data sets left them as they were (a digest over three training items, every kind, label set and bound)."""
    from domainqa.data import read_examples, split_pubmedqa

    items = split_pubmedqa(read_examples(pqal_path), "paper")["train"][:3]
    digests = {}
    for version in ("v1", "v2", "v3"):
        for kind in ("rewrite", "new", "verify"):
            for labels in (("yes", "no", "maybe"), ("yes", "no")):
                for bounded in (True, False):
                    payload = [
                        [build_messages(kind, e, labels, version) for e in items],
                        output_schema(kind, bounded, labels, version),
                    ]
                    text = json.dumps(payload, sort_keys=True)
                    digests[f"{version}-{kind}-{'/'.join(labels)}-{bounded}"] = sha256(text.encode()).hexdigest()[:16]
    digest = sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    assert digest == "02ebfd2e1862e0f779e7748a314ef2aff5b01c36cc474d7e8927f9cf9089d42c"


def test_the_generic_wording_names_no_long_answer_where_the_data_has_none():
    item = {**SOURCE, "long_answer": "", "final_decision": "relevant"}
    labels = ("relevant", "irrelevant")
    bare, with_answer = Shape(generic=True, long_answer=False), Shape(generic=True)
    for version in ("v1", "v2", "v3"):
        for kind in ("rewrite", "new", "verify"):
            system, user = (m["content"] for m in build_messages(kind, item, labels, version, bare))
            assert "long answer" not in system + user and "long_answer" not in system + user
            assert "PubMed" not in system + user and "abstract" not in user
            schema = output_schema(kind, True, labels, version, bare)
            assert "long_answer" not in schema["properties"] and schema["title"].startswith("qa_")
            assert '"relevant" or "irrelevant"' in user or '"relevant", "irrelevant"' in user
        assert "its long answer" in build_messages("rewrite", item, labels, version, with_answer)[1]["content"]
        assert "long_answer" in output_schema("new", True, labels, version, with_answer)["properties"]


def test_the_shape_of_a_data_set_of_ones_own(tmp_path):
    """Bounds from the data: the context's longest plus 25% (rounded up to 100), the others at least PubMedQA's,
    minima no longer than the data's own shortest; v3's pattern only for one-question-mark questions that fit."""
    from augment.sources import data_shape

    items = [
        {"id": "1", "question": "Is it?", "context": "x " * 40, "long_answer": "", "final_decision": "a"},
        {"id": "2", "question": "Does aspirin help?", "context": "y " * 500, "long_answer": "", "final_decision": "b"},
    ]
    args = AugmentArguments(split="custom", dataset_path="d.csv", labels=["a", "b"])
    shape = data_shape(args, items)
    assert shape.generic and not shape.long_answer and shape.text_fields == ("question", "context")
    assert shape.max_chars["context"] == 1300 and shape.max_chars["question"] == 300  # 1,000 * 1.25, 300 at least
    assert shape.min_chars == {"question": 6, "context": 80} and shape.question_pattern
    assert not data_shape(args, [*items, {**items[0], "question": "Classify the claim."}]).question_pattern
    args.max_context_chars = 5000
    assert data_shape(args, items).max_chars["context"] == 5000
    pubmedqa = data_shape(AugmentArguments(), [{**items[0], "long_answer": "It is."}])
    assert pubmedqa == PUBMEDQA  # PubMedQA's bounds whatever its lengths


def test_a_rewrite_that_drops_the_passage_is_rejected():
    long_source = {**SOURCE, "context": " ".join(f"word{i}" for i in range(100))}
    rewrite = {
        "question": "Is stroke less frequent in elderly people taking aspirin?",
        "context": " ".join(f"term{i}" for i in range(59)),
        "long_answer": "Taking aspirin reduced strokes among the elderly.",
        "final_decision": "yes",
    }
    reason, detail = check_fields(rewrite, "rewrite", long_source, Limits(check_numbers=False))
    assert reason == "context_shortened" and detail.startswith("the context keeps 59 of its source's 100 words")
    kept = {**rewrite, "context": " ".join(f"term{i}" for i in range(60))}
    assert check_fields(kept, "rewrite", long_source, Limits(check_numbers=False)) is None
    assert check_fields(rewrite, "new", long_source, Limits(check_numbers=False)) is None  # a part, by design
    off = Limits(check_numbers=False, min_context_ratio=0.0)
    assert check_fields(rewrite, "rewrite", long_source, off) is None
    no_answer = {k: v for k, v in kept.items() if k != "long_answer"}
    assert check_fields(no_answer, "rewrite", long_source, Limits(check_numbers=False))[0] == "missing_field"
    assert check_fields(no_answer, "rewrite", long_source, Limits(check_numbers=False, long_answer=False)) is None


def test_the_defaults_follow_the_backend():
    """The local backend's defaults are the best settings measured for SmolLM2 (prompt v3, penalty 1.2, 700
    tokens); the openai backend's are unchanged, and so are the cache keys of its runs."""
    local = AugmentArguments(backend="transformers")
    assert (local.prompt_version, local.repetition_penalty, local.max_tokens) == ("v3", 1.2, 700)
    remote = AugmentArguments()
    assert (remote.prompt_version, remote.repetition_penalty, remote.max_tokens) == ("v1", 1.0, 1024)
    given = AugmentArguments(backend="transformers", prompt_version="v1", repetition_penalty=1.0, max_tokens=64)
    assert (given.prompt_version, given.repetition_penalty, given.max_tokens) == ("v1", 1.0, 64)
    (parsed,) = parse_args(AugmentArguments, args=["--backend", "transformers", "--max_tokens", "32"])
    assert (parsed.prompt_version, parsed.repetition_penalty, parsed.max_tokens) == ("v3", 1.2, 32)


def test_local_recipes_use_the_best_settings_and_pinned_ones_rebuild_the_committed_data():
    for strategy in ("rewriteqa", "newqa", "combinedqa"):
        recipes = REPO / "recipes" / "augment"
        (best,) = parse_args(AugmentArguments, args=[str(recipes / f"smollm2-local-{strategy}.yaml")])
        assert (best.prompt_version, best.repetition_penalty, best.max_tokens) == ("v3", 1.2, 700)
        (pinned,) = parse_args(AugmentArguments, args=[str(recipes / f"smollm2-local-v1-{strategy}.yaml")])
        # The settings of results/smollm2-135m-augment/run-local.sh, the data of results/data-study/.
        assert (pinned.prompt_version, pinned.repetition_penalty, pinned.max_tokens) == ("v1", 1.0, 700)
        assert (pinned.batch_size, pinned.temperature, pinned.top_p, pinned.seed) == (8, 0.7, 1.0, 0)
        assert pinned.cache_dir == "outputs/augment/smollm2-local-cache" and pinned.strategy == best.strategy


def test_the_local_own_data_recipes_share_the_training_recipes_data_block():
    """So that train.py with the training recipe reads what the augment recipe writes."""
    from domainqa.data_spec import SPEC_KEYS

    training = yaml.safe_load((REPO / "recipes" / "own-data" / "smollm2-135m-yesno-csv.yaml").read_text())
    keys = ("split", "dataset_path", *SPEC_KEYS)
    for strategy in ("rewriteqa", "newqa", "combinedqa"):
        path = REPO / "recipes" / "augment" / f"smollm2-local-yesno-csv-{strategy}.yaml"
        recipe = yaml.safe_load(path.read_text())
        assert {k: recipe.get(k) for k in keys} == {k: training.get(k) for k in keys}
        (args,) = parse_args(AugmentArguments, args=[str(path)])
        assert args.backend == "transformers" and (args.prompt_version, args.repetition_penalty) == ("v3", 1.2)


@pytest.mark.parametrize(
    "name, key",
    [
        ("OPENAI_API_KEY", False),
        ("AZURE_OPENAI_API_KEY", False),
        ("my_server_key", False),
        ("TOKEN_2024", False),
        ("sk-proj-abc123", True),
        ("hf_AbCdEfGhIjKlMnOpQrStUv0123456789", True),
        ("gsk_8fJ2kLmN4pQ6rS8tU0vW2xY4", True),
        ("key with spaces", True),
    ],
)
def test_a_key_in_api_key_env_is_told_from_a_variable_name(name, key):
    assert looks_like_a_key(name) is key


def test_claims_keep_two_runs_from_sending_one_request(tmp_path):
    first, second = Claims(tmp_path), Claims(tmp_path)
    assert first.claim(["a", "b"]) == {"a", "b"}
    assert second.claim(["b", "c"]) == {"c"} and second.held_by_others(["a", "b", "c"]) == {"a", "b"}
    first.release(["a"])
    assert second.claim(["a"]) == {"a"}
    stale = tmp_path / ".claims" / f"99999-dead{CLAIMS_SUFFIX}"  # a run killed with its claims: nobody holds it
    stale.write_text("d\n")
    assert second.claim(["d"]) == {"d"} and not stale.exists()
    first.close()
    assert second.held_by_others(["b"]) == set() and not first.path.exists()
    second.close()


def _decision(token: str, *alternatives: tuple[str, float]) -> DecisionLogprobs:
    return DecisionLogprobs(source="logprobs", token=token, alternatives=[[t, math.log(p)] for t, p in alternatives])


@pytest.mark.parametrize(
    "tokens, index",
    [
        (['{"', "question", '":"', "Q?", '","', "final", "_", "decision", '":"', "yes", '"}'], 9),
        (['{"final_decision"', ": ", '"yes', '"}'], 2),  # the value's token holds the opening quote
        (['{"final_decision": "', 'maybe"}'], 1),  # the quote ends the token before
        (['{"final_decision":"no"}'], 0),
        (['{"context": "a \\"final_decision\\": \\"no\\" b", "final_decision": ', '"', "no", '"}'], 2),  # quoted
        (['{"question": "x"}'], None),
        (['{"final_decision": "'], None),  # cut off at the opening quote: no value
    ],
)
def test_the_decision_value_is_found_however_the_answer_is_cut_into_tokens(tokens, index):
    assert decision_token_index(tokens) == index


def test_the_label_distribution_sums_each_labels_alternatives_and_renormalises():
    labels = ("yes", "no", "maybe")
    decision = _decision(
        ' "yes', (' "yes', 0.5), ("Yes", 0.15), ('"YES', 0.05), ('"no', 0.2), ("may", 0.05), ('"', 0.05)
    )
    probs = label_distribution(decision, labels)
    assert list(probs) == list(labels) and probs == pytest.approx(
        {"yes": 0.7 / 0.95, "no": 0.2 / 0.95, "maybe": 0.05 / 0.95}
    )
    # Keys are the label set's own spelling; a label no alternative begins gets 0.
    assert label_distribution(_decision("yes", ("yes", 0.6), ("no", 0.2)), ("Yes", "No", "Maybe")) == pytest.approx(
        {"Yes": 0.75, "No": 0.25, "Maybe": 0.0}
    )


def test_no_label_distribution_is_guessed():
    # Labels sharing their first token ("no" begins "none" too): the position cannot tell them apart.
    assert label_distribution(_decision("no", ("no", 0.6), ("none", 0.3)), ("no", "none")) is None
    assert label_distribution(_decision("maybe", ("perhaps", 0.9), ('"', 0.1)), ("yes", "no", "maybe")) is None
    assert label_distribution(_decision("maybe", ("maybe", 0.9)), ("yes", "no")) is None
    # An alternative that begins two labels counts for neither; the written token told them apart.
    assert label_distribution(_decision("on", ("on", 0.6), ("off", 0.3), ("o", 0.1)), ("on", "off")) == pytest.approx(
        {"on": 2 / 3, "off": 1 / 3}
    )


def test_the_decision_alternatives_are_read_from_openai_logprobs():
    def entry(token, top=()):
        return {
            "token": token,
            "logprob": -0.1,
            "bytes": None,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top],
        }

    content = [
        entry('{"'),
        entry("final_decision"),
        entry('":'),
        entry(' "no', [(' "no', -0.2), (' "yes', -1.8)]),
        entry('"}'),
    ]
    assert from_openai_logprobs(content) == {
        "source": "logprobs", "token": ' "no', "alternatives": [[' "no', -0.2], [' "yes', -1.8]]
    }  # fmt: skip
    assert from_openai_logprobs(content[:3]) is None and from_openai_logprobs(None) is None
    assert from_openai_logprobs([*content[:3], entry(' "no'), entry('"}')]) is None  # no top_logprobs
    assert from_openai_logprobs(["{", "}"]) is None


def test_the_cache_keeps_the_decision_alternatives(tmp_path):
    cache = AnswerCache(tmp_path)
    request = Request([{"role": "user", "content": "x"}], {"seed": 0}, "openai", "m")
    decision = _decision(' "yes', (' "yes', 0.7), (' "no', 0.3))
    cache.put(request, Answer('{"final_decision": "yes"}', 3, 4, decision))
    assert cache.get(request) == Answer('{"final_decision": "yes"}', 3, 4, decision)
    other = Request([{"role": "user", "content": "y"}], {"seed": 0}, "openai", "m")
    cache.put(other, Answer("text"))
    assert cache.get(other).decision_logprobs is None
    assert "decision_logprobs" not in json.loads(next(tmp_path.rglob(f"{other.key}.json")).read_text())


def test_the_local_recorder_keeps_the_raw_scores_and_changes_nothing():
    """It passes the scores on untouched (the grammar after it masks them in place) and reads, after generation,
    the step that wrote the decision value's first token."""
    import torch

    texts = ['{"final_decision":"', "yes", "no", "maybe", '"}', "y"]
    recorder = DecisionScores([1, 2, 3, 5], texts)
    steps = [torch.tensor([[5.0, 0.0, 0.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 1.0, 0.0, -1.0, 0.5]])]
    for scores in steps:
        kept = scores.clone()
        assert recorder(None, scores) is scores and torch.equal(scores, kept)
    decision = recorder.decision(0, [0, 1, 4])
    expected = steps[1][0].log_softmax(-1)
    assert decision["source"] == "local scores" and decision["token"] == "yes"
    assert [t for t, _ in decision["alternatives"]] == ["yes", "no", "maybe", "y"]
    assert [v for _, v in decision["alternatives"]] == pytest.approx(expected[[1, 2, 3, 5]].tolist())
    assert recorder.decision(0, [4, 4]) is None


def test_the_local_backend_gives_a_label_distribution_from_the_model_itself(tiny_llama, pqal_path):
    """The tiny model under the grammar writes a verdict; its scores where the decision starts give each label
    a probability, summing to 1 (and none when teacher_probs is off)."""
    from augment.runner import make_request

    items = read_examples(pqal_path)[:2]
    for teacher_probs in (True, False):
        args = AugmentArguments(
            backend="transformers", model=str(tiny_llama), temperature=0.0, teacher_probs=teacher_probs
        )
        backend = TransformersBackend(TransformersSettings.from_arguments(args))
        asyncio.run(backend.preflight())
        answers = backend._generate([make_request(args, "verify", e, 0, {}) for e in items])
        for answer in answers:
            assert parse_verdict(answer.text) in ("yes", "no", "maybe")
            if not teacher_probs:
                assert answer.decision_logprobs is None
                continue
            decision = answer.decision_logprobs
            assert decision["source"] == "local scores" and label_prefix(decision["token"], ("yes", "no", "maybe"))
            probs = label_distribution(decision, ("yes", "no", "maybe"))
            assert list(probs) == ["yes", "no", "maybe"] and sum(probs.values()) == pytest.approx(1.0)
            assert all(p > 0 for p in probs.values())
