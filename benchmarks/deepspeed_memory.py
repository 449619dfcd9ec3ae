"""Memory per GPU for fine-tuning LLaMA-7b on 8x V100 32 GB, from DeepSpeed's own estimators.

    python -m benchmarks.deepspeed_memory

No model is built: the parameter count and the largest layer come from LLaMA-7b's configuration. The ZeRO
stage and offload settings are read from the shipped DeepSpeed files in accelerate_configs/. DeepSpeed's
estimators cover model states only (parameters, gradients, optimizer states); activations and buffers are
a separate, rough estimate below, labelled as such.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "accelerate_configs"
GIB = 2**30

# LLaMA-7b (huggyllama/llama-7b config.json): untied input and output embeddings.
LLAMA_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "tie_word_embeddings": False,
}
V100_GIB = 32.0
NUM_GPUS = 8
LORA_R = 4
LORA_TARGETS = ("q_proj", "v_proj")
TOKENS_PER_MICRO_BATCH = 1024  # the paper's ~1,024-token batches (2 sequences of ~512)


def llama_param_counts(cfg: dict = LLAMA_7B) -> tuple[int, int]:
    """(total parameters, parameters of the largest single module) for a LLaMA configuration."""
    h, v, i, n = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    attention = 4 * h * h  # q, k, v, o projections, no biases
    mlp = 3 * h * i  # gate, up, down
    norms = 2 * h  # two RMSNorm weights per layer
    embeddings = v * h * (1 if cfg["tie_word_embeddings"] else 2)
    total = n * (attention + mlp + norms) + embeddings + h  # + final norm
    largest = max(v * h, h * i)  # the embedding (or lm_head) matrix; DeepSpeed counts per module
    return total, largest


def lora_trainable_params(cfg: dict = LLAMA_7B, r: int = LORA_R, targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """Exact LoRA parameter count: A (r x in) + B (out x r) for each targeted square projection in each layer."""
    h = cfg["hidden_size"]
    shapes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h)}
    per_layer = sum(r * shapes[t][0] + shapes[t][1] * r for t in targets)
    return cfg["num_hidden_layers"] * per_layer


@dataclass
class ZeroSettings:
    stage: int
    offload_optimizer: bool
    offload_param: bool


def zero_settings(json_name: str) -> ZeroSettings:
    """ZeRO stage and offload devices from a shipped DeepSpeed config file."""
    zero = json.loads((CONFIGS / json_name).read_text(encoding="utf-8"))["zero_optimization"]

    def offloaded(key: str) -> bool:
        return zero.get(key, {}).get("device", "none") not in ("none", None)

    return ZeroSettings(zero["stage"], offloaded("offload_optimizer"), offloaded("offload_param"))


def deepspeed_config_file(accelerate_yaml: str) -> str:
    """The DeepSpeed JSON an accelerate config points to (a path relative to the repository root)."""
    import yaml

    cfg = yaml.safe_load((CONFIGS / accelerate_yaml).read_text(encoding="utf-8"))
    return Path(cfg["deepspeed_config"]["deepspeed_config_file"]).name


def _quiet_deepspeed():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # estimators are arithmetic; no GPU needed
    import logging

    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)


def model_states(settings: ZeroSettings, total: int, largest: int, gpus: int = NUM_GPUS) -> tuple[float, float]:
    """DeepSpeed's estimate (GiB per GPU, GiB of CPU RAM per node) for full fine-tuning, zero_init on."""
    _quiet_deepspeed()
    if settings.stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=total,
            largest_layer_params=largest,
            num_gpus_per_node=gpus,
            num_nodes=1,
            cpu_offload=settings.offload_optimizer,
            cpu_offload_params=settings.offload_param,
            zero_init=True,
        )
    else:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params=total, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=settings.offload_optimizer
        )
    return gpu / GIB, cpu / GIB


def lora_model_states(settings: ZeroSettings, total: int, trainable: int, gpus: int = NUM_GPUS) -> float:
    """GiB per GPU for LoRA: DeepSpeed's estimator applied to the trainable parameters, plus the frozen base
    in fp16 (2 bytes each), which ZeRO-3 shards over the GPUs and ZeRO-2 replicates."""
    gpu_trainable, _ = model_states(ZeroSettings(2, settings.offload_optimizer, False), trainable, trainable, gpus)
    frozen = 2 * (total - trainable) / (gpus if settings.stage == 3 else 1)
    return gpu_trainable + frozen / GIB


def ddp_lora_states(total: int, trainable: int) -> float:
    """GiB per GPU for LoRA under plain DDP (multi_gpu.yaml): fp16 frozen base + fp32 adapter, grads, Adam m, v."""
    return (2 * (total - trainable) + 16 * trainable) / GIB


def activation_estimate(cfg: dict = LLAMA_7B, tokens: int = TOKENS_PER_MICRO_BATCH, seq: int = 512) -> dict:
    """A rough fp16 activation estimate (GiB) with gradient checkpointing, for one micro-batch of `tokens` tokens.

    Stored: one hidden state per layer boundary. Recomputed at a time: one layer's activations, taken as
    34*tokens*hidden + 5*heads*seq*tokens bytes (Korthikanti et al. 2022, fp16, attention scores materialised).
    Logits: fp16 output, fp32 copy for the loss and its gradient (10 bytes per vocabulary entry)."""
    h, n, a, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["vocab_size"]
    checkpoints = 2 * tokens * h * n
    one_layer = 34 * tokens * h + 5 * a * seq * tokens
    logits = 10 * tokens * v
    parts = {"checkpoints": checkpoints, "one layer recomputed": one_layer, "logits and loss": logits}
    parts = {k: b / GIB for k, b in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


ZERO3_LIVE_PARAMS_GIB = 2 * 1e9 / GIB  # stage3_max_live_parameters 1e9 in fp16: gathered parameters at most
CUDA_CONTEXT_GIB = 1.0  # CUDA context and allocator slack, a round guess


def rows() -> list[dict]:
    """The table: one row per case, figures in GiB."""
    total, largest = llama_param_counts()
    trainable = lora_trainable_params()
    acts = activation_estimate()["total"]

    def row(case, config, settings, gpu, cpu=None):
        extra = acts + CUDA_CONTEXT_GIB + (ZERO3_LIVE_PARAMS_GIB if settings and settings.stage == 3 else 0.0)
        return dict(case=case, config=config, settings=settings, gpu=gpu, cpu=cpu, extra=extra, total=gpu + extra)

    out = []
    for config in ("deepspeed_zero3.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3_offload.yaml"):
        settings = zero_settings(deepspeed_config_file(config))
        out.append(row("full fine-tuning", config, settings, *model_states(settings, total, largest)))
    for config in ("deepspeed_zero2.yaml", "deepspeed_zero3.yaml"):
        settings = zero_settings(deepspeed_config_file(config))
        out.append(row("LoRA r=4 q,v", config, settings, lora_model_states(settings, total, trainable)))
    out.append(row("LoRA r=4 q,v", "multi_gpu.yaml", None, ddp_lora_states(total, trainable)))
    return out


def render() -> str:
    total, largest = llama_param_counts()
    trainable = lora_trainable_params()
    lines = [
        f"LLaMA-7b: {total:,} parameters, largest module {largest:,} (embedding / lm_head); "
        f"LoRA r={LORA_R} on {', '.join(LORA_TARGETS)}: {trainable:,} trainable.",
        f"{NUM_GPUS}x V100 {V100_GIB:.0f} GB, fp16, ZeRO zero_init on. GiB per GPU.",
        "",
        "| case | accelerate config | ZeRO | offload opt/param | model states (DeepSpeed) | "
        "+ activations etc. (rough) | total (rough) | CPU RAM per node (DeepSpeed) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows():
        s = r["settings"]
        zero = str(s.stage) if s else "DDP"
        offload = f"{'cpu' if s.offload_optimizer else 'none'}/{'cpu' if s.offload_param else 'none'}" if s else "-"
        cpu = f"{r['cpu']:.1f}" if r["cpu"] is not None else "-"
        lines.append(
            f"| {r['case']} | {r['config']} | {zero} | {offload} | {r['gpu']:.2f} | {r['extra']:.2f} | "
            f"{r['total']:.2f} | {cpu} |"
        )
    acts = activation_estimate()
    lines += [
        "",
        f"Activations (rough, fp16, gradient checkpointing, {TOKENS_PER_MICRO_BATCH} tokens per micro-batch): "
        + ", ".join(f"{k} {v:.2f}" for k, v in acts.items())
        + f" GiB; plus {CUDA_CONTEXT_GIB:.1f} GiB CUDA context, plus {ZERO3_LIVE_PARAMS_GIB:.2f} GiB of gathered "
        "parameters under ZeRO-3 (stage3_max_live_parameters 1e9).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
