"""Training data from the Hub: `--train_data user/name[@revision][:split]` and augment's `--dataset_path` read a
Hub dataset through `datasets.load_dataset`, against the fake Hub on 127.0.0.1 (tests/fake_hub.py). The data are
uploaded with the real huggingface_hub client (augment's own push for its output), read back by `datasets` in a
child process whose environment points it at the fake Hub, with HF_HUB_OFFLINE off for that process only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
from datasets import Dataset
from huggingface_hub import CommitOperationAdd, HfApi

from domainqa.data import DataError, HubDataset, parse_hub_dataset, read_examples, split_pubmedqa
from domainqa.hub_upload import push_dataset
from tests.fake_hub import COMMIT, serve_fake_hub
from tests.helpers import REPO, train_args

AUGMENTED = "someone/pubmedqa-augmented"  # an augment/ output pushed as augment pushes it
PARQUET = "someone/pubmedqa-parquet"  # the Hub's PubMedQA columns, train and test splits as Parquet files
CARD = "---\nconfigs:\n- config_name: default\n  data_files: data.jsonl\n---\n# augmented\n"

# Runs in the child: every spec read with read_examples (ids, or the error), then the leak check of
# load_task_data and augment's source loading.
CHILD = """
import json, sys
from augment.arguments import AugmentArguments, AugmentError
from augment.sources import load_sources
from domainqa.data import DataError, load_task_data, read_examples

pqal, *specs = sys.argv[1:]
out = {}
for spec in specs:
    try:
        out[spec] = [e["id"] for e in read_examples(spec)]
    except DataError as e:
        out[spec] = str(e)
try:
    load_task_data(pqal, train_data="someone/pubmedqa-parquet:test")
except DataError as e:
    out["leak"] = str(e)
sources, _, facts = load_sources(AugmentArguments(dataset_path="someone/pubmedqa-augmented", pubmedqa_path=pqal))
out["augment"] = [e["id"] for e in sources]
try:
    load_sources(AugmentArguments(dataset_path="someone/pubmedqa-parquet:test", pubmedqa_path=pqal))
except AugmentError as e:
    out["augment_test_split"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "value, expected",
    [
        ("someone/data", HubDataset("someone/data")),
        ("someone/data:validation", HubDataset("someone/data", split="validation")),
        ("someone/data@v1.0", HubDataset("someone/data", revision="v1.0")),
        (f"someone/data.v2@{COMMIT}:train", HubDataset("someone/data.v2", COMMIT, "train")),
        ("someone/data@refs/pr/1:test", HubDataset("someone/data", "refs/pr/1", "test")),
        ("outputs/run", None),  # ./outputs exists: a folder that is missing, not a Hub id
        ("outputs/augment/gpt-4-newqa", None),
        ("data/train.csv", None),
        ("./someone/data", None),
        ("/someone/data", None),
        ("someone", None),
        ("local/data", None),  # exists in the working folder
    ],
)
def test_what_is_a_hub_id(value, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "local" / "data").mkdir(parents=True)
    assert parse_hub_dataset(value) == expected
    if expected:
        assert str(expected) == value


@pytest.mark.parametrize("value", ["outputs/augment/gpt-4-newqa", "outputs/missing", "data/train.jsonl"])
def test_a_missing_local_path_is_a_path_error_not_a_hub_query(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(DataError) as error:
        read_examples(value)
    assert str(error.value) == f"{value}: no such file or folder"  # load_hub_rows would add "nor a Hub dataset"


def _parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    Dataset.from_list(rows).to_parquet(buffer)
    return buffer.getvalue()


def _hub_row(example: dict) -> dict:
    """An item in the columns of the Hub's qiaojin/PubMedQA: pubid, context as {'contexts': [...]}."""
    context = {"contexts": [example["context"]], "labels": ["BACKGROUND"]}
    return {"pubid": int(example["id"]), "question": example["question"], "context": context,
            "long_answer": example["long_answer"], "final_decision": example["final_decision"]}  # fmt: skip


def _upload(api: HfApi, augment_output: Path, train: list[dict], test: list[dict]) -> None:
    """The augment output as augment pushes it, and the Parquet dataset in one commit."""
    assert push_dataset(augment_output, AUGMENTED, api=api) == ["data.jsonl", "summary.json", "README.md"]
    api.create_repo(PARQUET, repo_type="dataset")
    operations = [
        CommitOperationAdd(f"data/{name}-00000-of-00001.parquet", _parquet([_hub_row(e) for e in items]))
        for name, items in (("train", train), ("test", test))
    ]
    api.create_commit(PARQUET, operations, commit_message="data", repo_type="dataset")


@pytest.fixture(scope="module")
def hub_data(tmp_path_factory, pqal_path):
    """The fake Hub holding both dataset repos; yields (handler, endpoint, augmented rows, parquet train, test)."""
    parts = split_pubmedqa(read_examples(pqal_path), "paper")
    augmented = [{**e, "id": f"aug-{e['id']}", "source_id": e["id"], "strategy": "rewrite"} for e in parts["train"][:8]]
    folder = tmp_path_factory.mktemp("augment-output")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in augmented), encoding="utf-8")
    (folder / "summary.json").write_text('{"accepted": 8}', encoding="utf-8")  # on the Hub beside the data
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    train, test = parts["train"][8:12], parts["test"][:2]
    with serve_fake_hub() as (handler, endpoint):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # for the uploads only
            _upload(HfApi(endpoint=endpoint, token="hf_fakeTOKEN"), folder, train, test)
        assert sorted(handler.repos[PARQUET]) == [
            "data/test-00000-of-00001.parquet",
            "data/train-00000-of-00001.parquet",
        ]
        yield handler, endpoint, augmented, train, test


def _hub_env(endpoint: str, home: Path) -> dict[str, str]:
    """The child's environment: the fake Hub as endpoint, an empty cache, online whatever the parent says."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}


def test_hub_datasets_are_read_as_training_data(hub_data, pqal_path, tmp_path):
    handler, endpoint, augmented, train, test = hub_data
    specs = [AUGMENTED, f"{AUGMENTED}@{COMMIT}:train", PARQUET, f"{PARQUET}:test", f"{PARQUET}@v9",
             f"{PARQUET}:validation", "someone/missing"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(pqal_path), *specs],
        cwd=REPO, env=_hub_env(endpoint, tmp_path / "hf"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # The card's config names data.jsonl, so summary.json is not read as data.
    assert out[AUGMENTED] == out[f"{AUGMENTED}@{COMMIT}:train"] == [r["id"] for r in augmented]
    assert out[PARQUET] == [e["id"] for e in train]  # no split named: the train split
    assert out[f"{PARQUET}:test"] == [e["id"] for e in test]
    assert out[f"{PARQUET}@v9"].startswith(f"{PARQUET}@v9: no such file or folder, nor a Hub dataset that loads (")
    assert "Revision" in out[f"{PARQUET}@v9"] and "v9" in out[f"{PARQUET}@v9"]
    assert "validation" in out[f"{PARQUET}:validation"] and "train" in out[f"{PARQUET}:validation"]
    assert out["someone/missing"].startswith("someone/missing: no such file or folder, nor a Hub dataset that loads")
    for spec in specs[4:]:
        assert "\n" not in out[spec]
    assert out["leak"].startswith(f"{PARQUET}:test: 2 training row(s) are, or come from, paper-split test items")
    assert out["augment"] == [r["id"] for r in augmented]
    assert "no training items left to augment" in out["augment_test_split"]
    downloads = {path.split("?")[0] for method, path in handler.reads if method == "GET" and "/resolve/" in path}
    assert f"/datasets/{AUGMENTED}/resolve/{COMMIT}/data.jsonl" in downloads  # read from the fake Hub
    assert not any(path.endswith("summary.json") for path in downloads)


def test_train_on_a_hub_dataset(hub_data, pqal_path, tiny_llama, tmp_path):
    _, endpoint, augmented, _, _ = hub_data
    out = tmp_path / "run"
    command = [sys.executable, "train.py", *train_args(tiny_llama, out, pqal_path, "--train_data", AUGMENTED)]
    result = subprocess.run(
        command, cwd=REPO, env=_hub_env(endpoint, tmp_path / "hf"), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "train_results.json").read_text())["train_examples"] == len(augmented)
    assert f"train_data: {AUGMENTED}" in (out / "run_config.yaml").read_text()
