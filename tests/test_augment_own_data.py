"""Augmentation of a closed-label data set that is not PubMedQA: a CSV with its own column names, its own labels
(relevant/irrelevant) and no long answer, made of real PubMedQA items. The prompts, the schema and the output
follow its spec, and the training reader reads the output with the same data block."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from augment.__main__ import PROG, main
from augment.merge import merge
from augment.sources import bound
from domainqa.config import run_main
from domainqa.data import read_examples, split_pubmedqa
from domainqa.data_spec import DataSpec, load_parts
from tests.openai_server import FakeOpenAI

LABELS = ["relevant", "irrelevant"]
RELEVANCE = {"yes": "relevant", "no": "irrelevant"}
SPEC = {
    "split": "custom",
    "id_column": "uid",
    "question_column": "prompt",
    "context_column": "passage",
    "label_column": "verdict",
    "labels": LABELS,
}
COLUMNS = {"id": "uid", "question": "prompt", "context": "passage", "final_decision": "verdict"}
PROVENANCE = {"source_id", "strategy", "model", "prompt_version"}


def extra_fields(row: dict) -> set[str]:
    """Provenance, and on a generated row the teacher's label distribution (the fake server gives logprobs)."""
    return PROVENANCE | ({"teacher_probs"} if row["strategy"] != "original" else set())


TRAIN_ROWS = 10


def write_csv(path: Path, items: list[dict], rationale: bool = False) -> Path:
    columns = ["uid", "prompt", "passage", "verdict"] + (["rationale"] if rationale else [])
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for item in items:
            row = {"uid": f"doc-{item['id']}", "prompt": item["question"], "passage": item["context"]}
            row["verdict"] = RELEVANCE[item["final_decision"]]
            if rationale:
                row["rationale"] = item["long_answer"]
            writer.writerow(row)
    return path


@pytest.fixture(scope="module")
def relevance(pqal_path, tmp_path_factory) -> dict[str, Path]:
    """Real PubMedQA yes/no items as a relevance task: training rows from the paper split's training items,
    test rows from its test items."""
    parts = split_pubmedqa(read_examples(pqal_path), "paper")
    train = [e for e in parts["train"] if e["final_decision"] in RELEVANCE][:TRAIN_ROWS]
    test = [e for e in parts["test"] if e["final_decision"] in RELEVANCE][:4]
    folder = tmp_path_factory.mktemp("relevance")
    return {
        "train": write_csv(folder / "train.csv", train),
        "test": write_csv(folder / "test.csv", test),
        "train_rationale": write_csv(folder / "train-rationale.csv", train, rationale=True),
        "test_rationale": write_csv(folder / "test-rationale.csv", test, rationale=True),
        "items": train,
    }


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
        yield fake


def recipe(tmp_path: Path, relevance: dict, out: Path, **keys) -> Path:
    """A recipe as a user writes it: the data block, then what to generate."""
    data = {**SPEC, "dataset_path": str(relevance["train"]), "test_data": str(relevance["test"])}
    data.update(validation_size=2, split_seed=0, output_dir=str(out), **keys)
    path = tmp_path / "augment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def augment(server: FakeOpenAI, path: Path, *flags: str) -> int:
    return run_main(main, [str(path), "--base_url", server.base_url, "--backoff_base", "0.01", *flags], PROG)


def data_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]


def test_own_columns_labels_and_no_long_answer_from_prompt_to_training_reader(server, tmp_path, relevance):
    out = tmp_path / "relevance-combined"
    path = recipe(tmp_path, relevance, out, strategy="combined", verify=True, prompt_version="v2")
    train_part = load_parts(DataSpec(**{k: v for k, v in yaml.safe_load(path.read_text()).items() if k in
                                        DataSpec.__dataclass_fields__}))["train"]  # fmt: skip
    shortened = train_part[1]
    server.faults[shortened["question"]] = ["shorten"]  # its rewrite keeps one sentence (v2: only it shows it)
    assert augment(server, path) == 0

    # What the server was asked: the data set's labels, no long answer anywhere, no PubMedQA words.
    assert server.bodies
    for body in server.bodies:
        system, user = (m["content"] for m in body["messages"])
        assert "long_answer" not in system + user and "long answer" not in system + user
        instruction = system + user.split("Input:")[0]
        for word in ("PubMed", "abstract", "biomedical", "research", '"yes"', "maybe"):
            assert word not in instruction, word
        schema = body["response_format"]["json_schema"]["schema"]
        assert "long_answer" not in schema["properties"] and schema["title"].startswith("qa_")
        assert schema["properties"]["final_decision"]["enum"] == LABELS
        if "context" in schema["properties"]:  # the context bound: the longest training passage plus 25%
            longest = max(len(e["context"]) for e in train_part)
            assert schema["properties"]["context"]["maxLength"] == bound(longest)
            assert longest * 1.25 <= bound(longest) < longest * 1.25 + 100
    inputs = [json.loads(b["messages"][-1]["content"].split("Input:")[1]) for b in server.bodies]
    assert all("long_answer" not in shown for shown in inputs)

    # The output: the data set's own column names, no long answer, the label set's labels.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["columns"] == COLUMNS and summary["shape"]["long_answer"] is False
    assert summary["shape"]["wording"] == "generic" and summary["labels"] == LABELS
    rows = data_rows(out)
    assert rows and all(set(r) == set(COLUMNS.values()) | extra_fields(r) for r in rows)
    # The own label set's labels: uniform, as the fake server gives a label set it does not know.
    generated = [r["teacher_probs"] for r in rows if r["strategy"] != "original"]
    assert generated == [pytest.approx(dict.fromkeys(LABELS, 0.5))] * len(generated)
    assert {r["verdict"] for r in rows} <= set(LABELS)
    sources = {f"doc-{e['id']}": RELEVANCE[e["final_decision"]] for e in relevance["items"]}
    assert all(r["verdict"] == sources[r["source_id"]] for r in rows if r["strategy"] != "new")
    n = len(train_part)
    assert summary["accepted_by_strategy"] == {"original": n, "rewrite": n - 1, "new": n}
    (rejected,) = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected["reason"] == "context_shortened" and rejected["source_id"] == shortened["id"]
    assert "at least 60% required" in rejected["detail"] and set(rejected["output"]) == {
        "question",
        "context",
        "final_decision",
    }

    # The training reader, with the recipe's data block: what train.py --train_data reads.
    columns = DataSpec(**SPEC, dataset_path=str(relevance["train"])).columns()
    examples = read_examples(out, LABELS, columns)
    assert len(examples) == len(rows) and {e["final_decision"] for e in examples} <= set(LABELS)
    assert all(e["long_answer"] == "" for e in examples)
    spec = DataSpec(**SPEC, dataset_path=str(relevance["train"]), test_data=str(relevance["test"]),
                    validation_size=2, split_seed=0)  # fmt: skip
    assert len(load_parts(spec, train_data=str(out))["train"]) == len(rows)

    # Merged with another run of the same data set, the column names stay.
    other = tmp_path / "relevance-rewrite"
    assert augment(server, recipe(tmp_path, relevance, other, strategy="rewrite", model="other-model")) == 0
    merged = merge([str(out), str(other)], str(tmp_path / "merged"))
    assert merged["examples"] == len(rows) + n and merged["columns"] == COLUMNS
    assert len(read_examples(tmp_path / "merged", LABELS, columns)) == len(rows) + n
    assert all(set(r) == set(COLUMNS.values()) | extra_fields(r) for r in data_rows(tmp_path / "merged"))


def test_a_long_answer_column_is_asked_for_and_kept_under_its_name(server, tmp_path, relevance):
    out = tmp_path / "with-rationale"
    path = recipe(tmp_path, relevance, out, strategy="rewrite", long_answer_column="rationale")
    text = path.read_text().replace(str(relevance["train"]), str(relevance["train_rationale"]))
    path.write_text(text.replace(str(relevance["test"]), str(relevance["test_rationale"])))
    assert augment(server, path) == 0
    schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["question", "context", "long_answer", "final_decision"]
    assert "its long answer" in server.bodies[0]["messages"][-1]["content"]
    rows = data_rows(out)
    assert rows and all(set(r) == set(COLUMNS.values()) | {"rationale"} | extra_fields(r) for r in rows)
    columns = {**COLUMNS, "long_answer": "rationale"}
    assert json.loads((out / "summary.json").read_text())["columns"] == columns
    examples = read_examples(out, LABELS, columns)
    assert all(e["long_answer"] for e in examples)


def test_the_context_bound_can_be_set(server, tmp_path, relevance):
    out = tmp_path / "bounded"
    assert augment(server, recipe(tmp_path, relevance, out, max_sources=1), "--max_context_chars", "4000") == 0
    (body,) = server.bodies
    assert body["response_format"]["json_schema"]["schema"]["properties"]["context"]["maxLength"] == 4000
