"""LLaMA-7b full fine-tuning fits 8x V100 32 GB under the shipped ZeRO-3 config, by DeepSpeed's estimators."""

from __future__ import annotations

import pytest

from benchmarks import deepspeed_memory as dm
from tests.helpers import REPO


def test_llama_7b_counts_match_a_real_model_on_the_meta_device():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dm.LLAMA_7B
    config = LlamaConfig(**cfg, num_key_value_heads=cfg["num_attention_heads"])
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    total, largest = dm.llama_param_counts()
    # as DeepSpeed's model_to_params counts (it dedupes by data_ptr, which is 0 for every meta tensor)
    assert total == sum(p.numel() for p in model.parameters())
    assert largest == max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert total == 6_738_415_616  # LLaMA-7B's published size, 6.7B
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == dm.lora_trainable_params() == 2_097_152


def test_estimator_inputs_are_the_shipped_offload_settings():
    assert dm.deepspeed_config_file("deepspeed_zero3.yaml") == "ds_zero3.json"
    assert dm.zero_settings("ds_zero3.json") == dm.ZeroSettings(3, offload_optimizer=False, offload_param=False)
    assert dm.zero_settings("ds_zero3_offload.json") == dm.ZeroSettings(3, offload_optimizer=True, offload_param=True)
    assert dm.zero_settings("ds_zero2.json") == dm.ZeroSettings(2, offload_optimizer=False, offload_param=False)


def test_full_fine_tuning_fits_8_v100_under_zero3():
    total, largest = dm.llama_param_counts()
    gpu, cpu = dm.model_states(dm.zero_settings("ds_zero3.json"), total, largest)
    # DeepSpeed: 4 B x largest layer + 18 B x params / 8 GPUs
    assert gpu == pytest.approx((4 * largest + int(18 * total / 8)) / dm.GIB)
    assert 14 < gpu < 15
    rows = {(r["case"], r["config"]): r for r in dm.rows()}
    zero3 = rows[("full fine-tuning", "deepspeed_zero3.yaml")]
    assert zero3["gpu"] == gpu
    # model states plus the rough activation, gathered-parameter and context allowance, with headroom
    assert zero3["total"] < dm.V100_GIB - 8
    # ZeRO-2 keeps a full fp16 copy on every GPU: its model states alone leave little of 32 GB
    zero2 = rows[("full fine-tuning", "deepspeed_zero2.yaml")]
    assert 26 < zero2["gpu"] < dm.V100_GIB
    # offloading both leaves about one layer on the GPU and moves ~170 GiB to CPU RAM
    offload = rows[("full fine-tuning", "deepspeed_zero3_offload.yaml")]
    assert offload["gpu"] < 1 and 150 < offload["cpu"] < 200


def test_lora_fits_one_v100():
    rows = {(r["case"], r["config"]): r for r in dm.rows()}
    ddp = rows[("LoRA r=4 q,v", "multi_gpu.yaml")]
    assert ddp["total"] < dm.V100_GIB - 8


def test_docs_hold_the_current_table():
    doc = (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")
    assert dm.render() in doc, "docs/scaling.md is stale: rerun python -m benchmarks.deepspeed_memory"
    assert "python -m benchmarks.deepspeed_memory" in doc
