import json
from collections import Counter

import pytest
from datasets import Dataset

from domainqa.data import (
    DataError,
    load_pubmedqa,
    load_task_data,
    official_split,
    paper_split,
    read_examples,
    split_pubmedqa,
)


def counts(examples):
    return dict(Counter(e["final_decision"] for e in examples))


@pytest.fixture(scope="module")
def pqal(pqal_path):
    return load_pubmedqa(str(pqal_path))


def test_pqal_loads_in_file_order_with_reference_counts(pqal, pqal_path):
    assert len(pqal) == 1000
    assert [e["id"] for e in pqal] == list(json.loads(pqal_path.read_text()))
    assert counts(pqal) == {"yes": 552, "no": 338, "maybe": 110}
    first = pqal[0]
    assert first["question"].startswith("Do mitochondria play a role")
    assert first["long_answer"] and isinstance(first["context"], str)


def test_paper_split_matches_reference_counts(pqal):
    parts = paper_split(pqal)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [450, 50, 500]
    assert counts(parts["train"]) == {"yes": 243, "no": 142, "maybe": 65}
    assert counts(parts["test"]) == {"yes": 277, "no": 179, "maybe": 44}
    assert parts["test"][0]["id"] == pqal[500]["id"]


def test_official_split_test_part_is_the_official_test_set(pqal, ground_truth_path):
    truth = json.loads(ground_truth_path.read_text())
    parts = official_split(pqal, fold=0)
    assert {e["id"]: e["final_decision"] for e in parts["test"]} == truth
    assert counts(parts["test"]) == {"yes": 276, "no": 169, "maybe": 55}
    assert len({e["id"] for e in parts["test"]} & {e["id"] for e in paper_split(pqal)["test"]}) == 258


def test_official_folds_partition_the_other_500(pqal):
    dev_sets = []
    for fold in range(10):
        parts = split_pubmedqa(pqal, "official", fold)
        train_ids, dev_ids = {e["id"] for e in parts["train"]}, {e["id"] for e in parts["validation"]}
        assert not train_ids & dev_ids
        assert len(train_ids | dev_ids) == 500
        assert not (train_ids | dev_ids) & {e["id"] for e in parts["test"]}
        dev_sets.append(dev_ids)
    assert set().union(*dev_sets) == dev_sets[0] | (set().union(*dev_sets[1:]))
    assert sum(len(d) for d in dev_sets) == 500  # every item is validation in exactly one fold
    assert split_pubmedqa(pqal, "official", 3) == split_pubmedqa(pqal, "official", 3)  # deterministic


def test_split_arguments_are_checked(pqal):
    with pytest.raises(DataError, match="fold must be in 0..9"):
        official_split(pqal, fold=10)
    with pytest.raises(DataError, match="unknown split"):
        split_pubmedqa(pqal, "random")
    with pytest.raises(DataError, match="needs the 1,000 PQA-L items"):
        paper_split(pqal[:10])


ROWS = [
    {"id": "a1", "question": "Is it?", "context": ["Part one.", "Part two."], "long_answer": "It is.",
     "final_decision": "Yes"},
    {"pubid": 7, "question": "Or not?", "context": {"contexts": ["Hub style."]}, "final_decision": "maybe"},
]  # fmt: skip


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "datasets"])
def test_every_local_format_reads_to_the_same_fields(tmp_path, suffix):
    path = tmp_path / f"data.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(ROWS))
    elif suffix == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    elif suffix == "csv":
        path.write_text(
            'id,question,context,final_decision\na1,Is it?,"Part one. Part two.",Yes\n7,Or not?,Hub style.,maybe\n'
        )
    else:
        Dataset.from_list(
            [
                {**ROWS[0], "context": "Part one. Part two."},
                {"id": "7", **ROWS[1], "pubid": None, "context": "Hub style."},
            ]
        ).save_to_disk(path)  # noqa: E501
    examples = read_examples(path)
    assert [e["id"] for e in examples] == ["a1", "7"]
    assert examples[0]["context"] == "Part one. Part two."
    assert [e["final_decision"] for e in examples] == ["yes", "maybe"]
    assert examples[1]["long_answer"] == ""


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "x", "context": "c", "final_decision": "yes"}, r"row 2: missing field\(s\) question"),
        ({"id": "x", "question": "q?", "context": "c", "final_decision": "perhaps"}, "row 2: final_decision 'perhaps'"),
        ({"id": "x", "question": "  ", "context": "c", "final_decision": "no"}, "row 2: empty question"),
        ({"id": "x", "question": "q?", "context": [1, 2], "final_decision": "no"}, "row 2: context must be"),
        ({"id": "a1", "question": "q?", "context": "c", "final_decision": "no"}, "row 2: duplicate id a1"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message) as error:
        read_examples(path)
    assert str(path) in str(error.value)


def test_unreadable_inputs_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "missing.json")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1}\n{not json\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        read_examples(broken)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="unreadable"):
        read_examples(binary)
    with pytest.raises(DataError, match="unsupported file type"):
        read_examples(_touch(tmp_path / "data.txt"))
    with pytest.raises(DataError, match="not a saved datasets folder"):
        read_examples(tmp_path)


def _touch(path):
    path.write_text("x")
    return path


def test_training_data_that_comes_from_test_items_is_refused(tmp_path, pqal_path, pqal):
    test_item = paper_split(pqal)["test"][0]
    leaked = {**test_item, "id": "rewrite-1", "source_id": test_item["id"]}
    path = tmp_path / "augmented.jsonl"
    path.write_text(json.dumps(pqal[0]) + "\n" + json.dumps(leaked) + "\n")
    with pytest.raises(DataError, match=f"come from, paper-split test items: {test_item['id']}"):
        load_task_data(str(pqal_path), "paper", train_data=str(path))
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({**pqal[1], "id": "rewrite-2", "source_id": pqal[1]["id"]}) + "\n")
    parts = load_task_data(str(pqal_path), "paper", train_data=str(clean))
    assert [e["id"] for e in parts["train"]] == ["rewrite-2"]
    assert len(parts["test"]) == 500


def test_dataset_path_comes_from_the_environment(monkeypatch, pqal_path):
    monkeypatch.setenv("PUBMEDQA_PATH", str(pqal_path))
    assert len(load_pubmedqa()) == 1000
