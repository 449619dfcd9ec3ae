"""augment/ against a real HTTP server on 127.0.0.1 through the real `openai` client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import train
from augment.__main__ import EXIT_BAD_INPUT, EXIT_BATCH_PENDING, PROG, main
from augment.merge import merge, merges_from_file
from augment.prompts import output_schema, without_max_lengths
from domainqa.config import run_main
from domainqa.data import read_examples, split_pubmedqa
from domainqa.hub_upload import DATASET_FILES
from tests.helpers import train_args
from tests.openai_server import FakeOpenAI


@pytest.fixture(scope="module")
def pqal(pqal_path):
    return read_examples(pqal_path)


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
        yield fake


def run(server: FakeOpenAI, out: Path, dataset, *flags: str) -> int:
    args = ["--dataset_path", str(dataset), "--base_url", server.base_url, "--output_dir", str(out)]
    args += ["--backoff_base", "0.01", "--request_timeout", "5", *flags]
    return run_main(main, args, PROG)  # as `python -m augment` runs it: bad input is exit status 2


def outputs(out: Path) -> tuple[dict, list[dict], list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    return summary, rows, rejected


def all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_rewrite_run_then_rerun_from_cache(server, tmp_path, pqal_path):
    out = tmp_path / "run"
    assert run(server, out, pqal_path, "--max_sources", "6", "--num_variants", "2", "--model", "gpt-4") == 0
    summary, rows, rejected = outputs(out)
    assert summary["accepted"] == 12 and summary["rejected"] == 0 and not rejected
    assert summary["requests"] == 12 and summary["cache_hits"] == 0
    assert summary["tokens_in"] > 0 and summary["tokens_out"] > 0
    assert summary["estimated_cost_usd"] == pytest.approx(
        (summary["tokens_in"] * 30 + summary["tokens_out"] * 60) / 1e6
    )
    assert {r["strategy"] for r in rows} == {"rewrite"} and {r["model"] for r in rows} == {"gpt-4"}
    assert all(r["prompt_version"] == "v1" and r["source_id"] for r in rows)
    examples = read_examples(out)  # what train.py --train_data reads
    assert len({e["id"] for e in examples}) == 12
    assert "# PubMedQA augmented" in (out / "README.md").read_text()
    before = (out / "data.jsonl").read_bytes()
    asked = sum(server.counts.values())
    assert run(server, out, pqal_path, "--max_sources", "6", "--num_variants", "2", "--model", "gpt-4") == 0
    assert sum(server.counts.values()) == asked  # nothing sent again
    assert json.loads((out / "summary.json").read_text())["cache_hits"] == 12
    assert (out / "data.jsonl").read_bytes() == before


def test_prompt_v2_writes_new_pairs_without_showing_the_source_question(server, tmp_path, pqal_path, pqal):
    out = tmp_path / "run"
    assert run(server, out, pqal_path, "--strategy", "new", "--prompt_version", "v2", "--max_sources", "4") == 0
    summary, rows, _ = outputs(out)
    assert summary["prompt_version"] == "v2" and {r["prompt_version"] for r in rows} == {"v2"} and len(rows) == 4
    assert "prompt version `v2`" in (out / "README.md").read_text()
    sent = " ".join(body["messages"][-1]["content"] for body in server.bodies)
    assert len(server.bodies) == 4 and not any(source["question"] in sent for source in pqal[:4])
    assert all(json.dumps(source["context"][:40])[1:-1] in sent for source in pqal[:4])


def test_faults_are_retried_or_rejected_and_the_run_goes_on(server, tmp_path, pqal):
    train = pqal[:12]
    server.retry_after = "0.3"
    server.slow_seconds = 1.5
    plan = {
        0: ["429", "ok"],
        1: ["500", "500", "ok"],
        2: ["slow", "ok"],
        3: ["drop", "ok"],
        4: ["malformed"],
        5: ["fenced"],
        6: ["wrong_decision"],
        7: ["copy"],
        8: ["500"] * 10,  # more than --max_retries
    }
    for index, actions in plan.items():
        server.faults[train[index]["question"]] = list(actions)
    out = tmp_path / "faults"
    flags = ("--max_sources", "12", "--max_retries", "3", "--request_timeout", "0.8", "--max_concurrency", "4")
    assert run(server, out, server_pqal_file(tmp_path, pqal), *flags) == 0
    summary, rows, rejected = outputs(out)
    reasons = {r["source_id"]: r["reason"] for r in rejected}
    assert reasons == {
        train[4]["id"]: "unparseable",
        train[6]["id"]: "decision_changed",
        train[7]["id"]: "copy_of_source",
        train[8]["id"]: "request_failed",
    }
    failed = next(r for r in rejected if r["reason"] == "request_failed")
    assert "http_500" in failed["detail"] and "4 attempts" in failed["detail"]
    assert {r["source_id"] for r in rows} == {e["id"] for e in train} - set(reasons)
    assert summary["failed_requests"] == 1 and summary["retries"] == 1 + 2 + 1 + 1 + 3
    # Retry-After was honoured: the retry of item 0 came at least 0.3 s after the 429.
    times = [e["time"] for e in server.log if e["key"] == key_of(server, "429")]
    assert len(times) == 2 and times[1] - times[0] >= 0.3


def test_timeouts_and_conflicts_are_retried_as_the_openai_client_does(server, tmp_path, pqal):
    """HTTP 408 and 409 are retried like 429 and 5xx (the openai client's own rule); a 404 is not."""
    train = pqal[:3]
    server.faults[train[0]["question"]] = ["408", "ok"]
    server.faults[train[1]["question"]] = ["409", "409", "ok"]
    server.faults[train[2]["question"]] = ["404"]
    out = tmp_path / "statuses"
    assert run(server, out, server_pqal_file(tmp_path, pqal), "--max_sources", "3", "--max_retries", "3") == 0
    summary, rows, rejected = outputs(out)
    assert {r["source_id"] for r in rows} == {train[0]["id"], train[1]["id"]}
    assert [(r["source_id"], r["reason"]) for r in rejected] == [(train[2]["id"], "request_failed")]
    assert rejected[0]["detail"].startswith("HTTP 404") and summary["retries"] == 1 + 2
    assert [e["action"] for e in server.log].count("404") == 1  # never asked again


def server_pqal_file(tmp_path: Path, pqal: list[dict]) -> Path:
    path = tmp_path / "pqal.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps(e) + "\n" for e in pqal))
    return path


def key_of(server: FakeOpenAI, action: str) -> str:
    return next(e["key"] for e in server.log if e["action"] == action)


def test_verifier_rejects_a_flipped_rewrite_and_json_mode_falls_back(server, tmp_path, pqal_path, pqal):
    server.json_mode_supported = False
    server.faults[pqal[1]["question"]] = ["flip"]
    out = tmp_path / "verify"
    assert run(server, out, pqal_path, "--max_sources", "3", "--verify") == 0
    summary, rows, rejected = outputs(out)
    assert [r["reason"] for r in rejected] == ["verifier_flipped"] and rejected[0]["source_id"] == pqal[1]["id"]
    assert len(rows) == 2 and summary["requests"] == 3 + 3


def test_answers_are_asked_under_the_json_schema(server, tmp_path, pqal_path):
    """The same schema the local grammar uses goes out as response_format, bounded for a self-hosted server."""
    assert run(server, tmp_path / "schema", pqal_path, "--max_sources", "2", "--verify") == 0
    formats = [f for f in server.response_formats if f]
    assert len(formats) == 4 and {f["type"] for f in formats} == {"json_schema"}
    schemas = [f["json_schema"]["schema"] for f in formats]
    assert schemas == [output_schema("rewrite")] * 2 + [output_schema("verify")] * 2
    assert formats[0]["json_schema"]["strict"] is True and "maxLength" in str(formats[0])


@pytest.mark.parametrize("status", [400, 422, 500])
def test_a_server_without_json_schema_gets_the_schema_in_a_json_object_request(server, tmp_path, pqal_path, status):
    """OpenAI and vLLM refuse an unknown response_format with 400, llama-cpp-python with 422, older llama.cpp
    servers with 500: each time the run goes on with llama-cpp-python's form {"type": "json_object", "schema"}."""
    server.json_schema_supported = False
    server.format_refusal_status = status
    out = tmp_path / "object"
    assert run(server, out, pqal_path, "--max_sources", "3") == 0
    summary = outputs(out)[0]
    assert summary["accepted"] == 3 and summary["retries"] == 0
    formats = server.response_formats  # requests in flight at the first refusal meet it too: order varies
    assert formats[0]["type"] == "json_schema" and {f["type"] for f in formats} == {"json_schema", "json_object"}
    assert [f for f in formats if f["type"] == "json_object"] == [
        {"type": "json_object", "schema": without_max_lengths(output_schema("rewrite"))}
    ] * 3
    assert "minLength" in str(formats[-1]) and "maxLength" not in str(formats[-1])  # llama.cpp takes only minima


def test_json_mode_on_does_not_fall_back(server, tmp_path, pqal_path):
    server.json_schema_supported = False
    out = tmp_path / "strict"
    assert run(server, out, pqal_path, "--max_sources", "1", "--json_mode", "on") == 0
    (rejected,) = outputs(out)[2]
    assert rejected["reason"] == "request_failed" and "refused response_format json_schema" in rejected["detail"]


def test_combined_strategy_and_merge_of_two_models(server, tmp_path, pqal_path):
    for model in ("gpt-3.5-turbo", "gpt-4"):
        flags = ("--strategy", "combined", "--max_sources", "4", "--model", model)
        assert run(server, tmp_path / model, pqal_path, *flags) == 0
    summary, rows, _ = outputs(tmp_path / "gpt-4")
    assert summary["accepted_by_strategy"] == {"original": 4, "rewrite": 4, "new": 4}
    merged = merge([str(tmp_path / "gpt-3.5-turbo"), str(tmp_path / "gpt-4")], str(tmp_path / "merged"))
    assert merged["examples"] == 4 + 8 + 8 and merged["dropped"] == {"original": 4}
    merges = tmp_path / "merges.yaml"
    merges.write_text("both: [gpt-3.5-turbo, gpt-4]\n")
    assert merges_from_file(str(merges), str(tmp_path)) == [
        ([f"{tmp_path}/gpt-3.5-turbo", f"{tmp_path}/gpt-4"], f"{tmp_path}/both")
    ]
    examples = read_examples(tmp_path / "merged")
    assert {e["model"] for e in examples if e["strategy"] != "original"} == {"gpt-3.5-turbo", "gpt-4"}


def test_test_items_are_refused_and_overlapping_outputs_rejected(server, tmp_path, pqal_path, pqal):
    parts = split_pubmedqa(pqal, "paper")
    leaky = dict(parts["train"][0], id="leaky", context=parts["test"][0]["context"])  # train question, test abstract
    items = parts["train"][1:4] + parts["test"][:2] + [leaky]
    dataset = tmp_path / "mixed.jsonl"
    dataset.write_text("".join(json.dumps(e) + "\n" for e in items))
    server.faults[leaky["question"]] = ["keep_context"]
    out = tmp_path / "leak"
    assert run(server, out, dataset, "--pubmedqa_path", str(pqal_path)) == 0
    summary, rows, rejected = outputs(out)
    assert summary["sources_refused_test"] == 2 and summary["sources"] == 4
    assert summary["test_overlap_rejected"] == 1 and rejected[0]["source_id"] == "leaky"
    assert len(rows) == 3
    test_ids = {e["id"] for e in parts["test"]}
    assert not {r["source_id"] for r in rows} & test_ids
    assert sum(server.counts.values()) == 4  # test items were never sent


def test_non_pqal_dataset_without_pqal_for_the_leak_check_stops(server, tmp_path, pqal, monkeypatch, capsys):
    monkeypatch.delenv("PUBMEDQA_PATH", raising=False)
    dataset = tmp_path / "small.jsonl"
    dataset.write_text("".join(json.dumps(e) + "\n" for e in pqal[:3]))
    assert run(server, tmp_path / "o", dataset) == EXIT_BAD_INPUT
    assert "--pubmedqa_path" in capsys.readouterr().err
    assert not server.counts


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_file", "no such file"),
        ("wrong_fields", "missing field"),
        ("strategy", "strategy must be one of"),
        ("prompt_version", "prompt_version must be one of v1, v2, v3, got 'v9'"),
        ("share", "max_repeat_share is a share: it must be between 0 and 1, got 25.0"),
        ("penalty", "repetition_penalty applies to the transformers backend"),
        ("unreachable", "cannot reach"),
        ("wrong_key", "refused the API key"),
        ("no_key", "no API key"),
    ],
)
def test_bad_input_stops_before_any_request(server, tmp_path, pqal_path, monkeypatch, capsys, case, expected):
    dataset, flags = pqal_path, ["--max_sources", "2"]
    if case == "missing_file":
        dataset = tmp_path / "nope.json"
    if case == "wrong_fields":
        dataset = tmp_path / "bad.jsonl"
        dataset.write_text(json.dumps({"id": "1", "text": "no question here", "final_decision": "yes"}) + "\n")
    if case == "strategy":
        flags += ["--strategy", "paraphrase"]
    if case == "prompt_version":
        flags += ["--prompt_version", "v9"]
    if case == "share":
        flags += ["--max_repeat_share", "25"]
    if case == "penalty":
        flags += ["--repetition_penalty", "1.2"]
    if case == "wrong_key":
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-9876543210")
    if case == "no_key":
        monkeypatch.delenv("OPENAI_API_KEY")
    if case == "unreachable":
        with FakeOpenAI() as closed:
            url = closed.base_url
        flags += ["--base_url", url, "--request_timeout", "1"]
    rc = run(server, tmp_path / "out", dataset, *flags)
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and expected in err
    assert not server.counts  # no generation request was sent
    assert "sk-wrong-key-9876543210" not in err and server.api_key not in err
    assert not (tmp_path / "out" / "data.jsonl").exists()


def test_api_key_never_written(server, tmp_path, pqal_path, pqal, caplog):
    server.faults[pqal[0]["question"]] = ["500"] * 5
    out = tmp_path / "secret"
    with caplog.at_level("DEBUG"):
        assert run(server, out, pqal_path, "--max_sources", "3", "--max_retries", "1") == 0
    assert server.api_key not in all_text(out) and server.api_key not in caplog.text
    assert any(a == f"Bearer {server.api_key}" for a in server.auth_seen)  # it was used, only on the wire


def test_batch_api_submits_once_and_a_rerun_collects(server, tmp_path, pqal_path):
    server.batch_polls = 3
    out = tmp_path / "batch"
    flags = ("--use_batch_api", "--max_sources", "5", "--batch_poll_interval", "0.05", "--model", "gpt-4")
    assert run(server, out, pqal_path, *flags, "--batch_wait_timeout", "0") == EXIT_BATCH_PENDING
    state = json.loads((out / "batch_state.json").read_text())
    assert state["batch_id"] == "batch-1" and len(state["keys"]) == 5
    assert run(server, out, pqal_path, *flags) == 0
    assert server.batch_creates == 1 and not (out / "batch_state.json").exists()
    assert server.paths["POST /v1/chat/completions"] == 0
    summary, rows, _ = outputs(out)
    assert len(rows) == 5 and summary["backend"] == "openai (batch API)"
    # The Batch API asks for no logprobs (a refusal would fail every line): no teacher_probs.
    assert b'"logprobs"' not in server.files["file-0"] and not any("teacher_probs" in r for r in rows)
    assert summary["estimated_cost_usd"] == pytest.approx(
        (summary["tokens_in"] * 15 + summary["tokens_out"] * 30) / 1e6
    )
    assert run(server, out, pqal_path, *flags) == 0 and server.batch_creates == 1


def test_a_200_answer_that_is_not_a_completion_is_retried_then_recorded(server, tmp_path, pqal):
    """A proxy's HTML page or a JSON body cut off in transit, both with status 200: retried like a dropped
    connection, recorded as a failed request when it persists, and the other items still come through."""
    train = pqal[:4]
    server.faults[train[0]["question"]] = ["html", "ok"]
    server.faults[train[1]["question"]] = ["bad_json", "ok"]
    server.faults[train[2]["question"]] = ["html"] * 5
    out = tmp_path / "not-json"
    flags = ("--max_sources", "4", "--max_retries", "2")
    assert run(server, out, server_pqal_file(tmp_path, pqal), *flags) == 0
    summary, rows, rejected = outputs(out)
    assert {r["source_id"] for r in rows} == {train[0]["id"], train[1]["id"], train[3]["id"]}
    (failed,) = rejected
    assert failed["source_id"] == train[2]["id"] and failed["reason"] == "request_failed"
    assert "not a completion" in failed["detail"] and "3 attempts" in failed["detail"]
    assert summary["failed_requests"] == 1 and summary["retries"] == 1 + 1 + 2


def test_push_to_hub_uploads_exactly_data_summary_and_card(server, fake_hub, tmp_path, pqal_path, monkeypatch, capfd):
    """--push_to_hub through huggingface_hub's own client to the fake Hub: a private dataset repo holding the
    data, summary and card as written locally, and the token only ever in the Authorization header."""
    token = "hf_datasetTOKEN0123456789SECRET"
    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "hub"
    assert (
        run(server, out, pqal_path, "--max_sources", "2", "--push_to_hub", "--hub_dataset_id", "me/pubmedqa-aug") == 0
    )
    create = json.loads(fake_hub.requests[0][3])
    assert create == {"name": "pubmedqa-aug", "organization": "me", "visibility": "private", "type": "dataset"}
    uploaded = fake_hub.repos["me/pubmedqa-aug"]
    assert sorted(uploaded) == sorted(DATASET_FILES)  # not the cache, rejected.jsonl or logs
    for name, content in uploaded.items():
        assert content == (out / name).read_bytes(), name
        assert token.encode() not in content
    assert uploaded["README.md"].startswith(b"---\n") and b"  data_files: data.jsonl" in uploaded["README.md"]
    paths = [p.split("?")[0] for _, p, _, _ in fake_hub.requests]
    repo = "/api/datasets/me/pubmedqa-aug"
    assert paths == ["/api/repos/create", "/api/validate-yaml", f"{repo}/preupload/main", f"{repo}/commit/main"]
    for _method, path, headers, body in fake_hub.requests:
        assert {k.lower(): v for k, v in headers.items()}["authorization"] == f"Bearer {token}"
        assert token not in path and token.encode() not in body
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err and token not in all_text(out)


def test_push_needs_a_dataset_id(capsys):
    assert run_main(main, ["--push_to_hub"], PROG) == EXIT_BAD_INPUT and "hub_dataset_id" in capsys.readouterr().err


def test_slow_server_times_out_and_is_retried(server, tmp_path, pqal_path, pqal):
    server.slow_seconds = 1.0
    server.faults[pqal[0]["question"]] = ["slow", "slow"]
    out = tmp_path / "slow"
    started = time.monotonic()
    flags = ("--max_sources", "1", "--request_timeout", "0.3", "--max_retries", "2")
    assert run(server, out, pqal_path, *flags) == 0
    summary, rows, _ = outputs(out)
    assert len(rows) == 1 and summary["retries"] == 2
    assert time.monotonic() - started < 10


def cache_entries(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (out / "cache").rglob("*.json")]


def test_teacher_probs_are_recorded_from_the_servers_logprobs(server, tmp_path, pqal_path):
    """Every generated item, new or rewritten, carries the label distribution the server's top_logprobs give where
    the decision value starts (yes ln 0.7, no ln 0.2, maybe ln 0.1); the unchanged sources carry none."""
    out = tmp_path / "probs"
    assert run(server, out, pqal_path, "--strategy", "combined", "--max_sources", "3") == 0
    summary, rows, _ = outputs(out)
    assert all(body["logprobs"] is True and body["top_logprobs"] == 20 for body in server.bodies)
    generated = [r for r in rows if r["strategy"] != "original"]
    assert {r["strategy"] for r in generated} == {"rewrite", "new"} and len(generated) == 6
    for row in generated:
        assert list(row["teacher_probs"]) == ["yes", "no", "maybe"]
        assert row["teacher_probs"] == pytest.approx({"yes": 0.7, "no": 0.2, "maybe": 0.1})
    assert not any("teacher_probs" in r for r in rows if r["strategy"] == "original")
    assert summary["teacher_probs"] == {"requested": True, "accepted": 6, "by_source": {"logprobs": 6}}
    assert "`teacher_probs`" in (out / "README.md").read_text()
    entries = cache_entries(out)
    assert all(e["decision_logprobs"]["source"] == "logprobs" for e in entries)
    assert server.api_key not in all_text(out)


def test_the_teacher_distribution_flows_into_training(server, tmp_path, pqal_path, tiny_llama):
    """augment's output, as train.py reads it: its teacher_probs change the loss with distill_weight, and with 0
    the run is the hard-label run."""
    out = tmp_path / "written"
    server.decision_probs = {"yes": 0.2, "no": 0.1, "maybe": 0.7}
    assert run(server, out, pqal_path, "--strategy", "new", "--max_sources", "8") == 0
    assert sum("teacher_probs" in r for r in outputs(out)[1]) >= 4
    losses = {}
    for weight in ("0", "0.5"):
        run_dir = tmp_path / f"distill-{weight}"
        args = train_args(tiny_llama, run_dir, pqal_path, "--train_data", str(out), "--distill_weight", weight,
                          "--save_strategy", "no")  # fmt: skip
        train.main(*train.parse_args(args))
        history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
        losses[weight] = [h["loss"] for h in history if "loss" in h]
    assert losses["0"][0] != losses["0.5"][0]


def test_teacher_probs_come_back_from_the_cache(server, tmp_path, pqal_path):
    """A rerun answered from the cache records the same teacher_probs without asking the server again, whatever
    the server would say now."""
    out = tmp_path / "rerun"
    flags = ("--strategy", "new", "--max_sources", "2", "--verify")
    server.decision_probs = {"yes": 0.5, "no": 0.3, "maybe": 0.2}
    assert run(server, out, pqal_path, *flags) == 0
    before = (out / "data.jsonl").read_bytes()
    rows = outputs(out)[1]
    assert [r["teacher_probs"] for r in rows] == [pytest.approx({"yes": 0.5, "no": 0.3, "maybe": 0.2})] * 2
    asked = len(server.bodies)
    server.decision_probs = {"yes": 0.1, "no": 0.1, "maybe": 0.8}
    assert run(server, out, pqal_path, *flags) == 0
    assert len(server.bodies) == asked and (out / "data.jsonl").read_bytes() == before
    assert outputs(out)[0]["teacher_probs"]["by_source"] == {"logprobs": 2}


def test_a_server_refusing_logprobs_gets_none_and_the_run_goes_on(server, tmp_path, pqal_path, caplog):
    server.logprobs_supported = False
    out = tmp_path / "refused"
    with caplog.at_level("WARNING"):
        assert run(server, out, pqal_path, "--max_sources", "3", "--max_concurrency", "1") == 0
    summary, rows, rejected = outputs(out)
    assert len(rows) == 3 and not rejected and summary["retries"] == 0
    assert not any("teacher_probs" in r for r in rows)
    assert summary["teacher_probs"] == {"requested": True, "accepted": 0, "by_source": {}}
    assert [b.get("logprobs") for b in server.bodies] == [True, None, None, None]  # refused once, then not asked
    assert caplog.text.count("refused logprobs") == 1


def test_teacher_probs_off_asks_for_no_logprobs(server, tmp_path, pqal_path):
    out = tmp_path / "off"
    assert run(server, out, pqal_path, "--max_sources", "2", "--teacher_probs", "false") == 0
    summary, rows, _ = outputs(out)
    assert len(rows) == 2 and not any("logprobs" in b or "top_logprobs" in b for b in server.bodies)
    assert not any("teacher_probs" in r for r in rows) and summary["teacher_probs"]["requested"] is False
    assert "teacher_probs" not in (out / "README.md").read_text()
