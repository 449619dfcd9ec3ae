"""Loading models and tokenizers (Hub id, local folder, or an embedded model) for every model family, and the
PEFT settings they share."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .config import UsageError
from .embedded import resolve_model_path
from .precision import cpu_dtype_warning, resolve_dtype

if TYPE_CHECKING:
    from peft import PeftConfig

logger = logging.getLogger(__name__)

PEFT_METHODS = ("lora", "prefix", "full")

# Architectures missing from PEFT's own table of default LoRA targets.
EXTRA_LORA_TARGETS = {"biogpt": ["q_proj", "v_proj"]}


def load_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compute_device() -> str:
    """Where the scripts compute: the GPU when there is one (the Trainer and infer.py pick it the same way)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> torch.dtype | str:
    """The torch dtype of a `dtype` setting (checked where it was parsed) on this machine: auto is the
    checkpoint's own on a GPU and float32 on a CPU (precision.resolve_dtype says why)."""
    device = compute_device()
    dtype = resolve_dtype(name, device)
    warning = cpu_dtype_warning(dtype) if device == "cpu" else None
    if warning:
        logger.warning("dtype %s: %s", name, warning)
    return dtype


def dtype_name(name: str) -> str:
    """The precision a `dtype` setting computes in here, as recorded with predictions ("auto" on a GPU)."""
    dtype = resolve_dtype(name, compute_device())
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def load_model(name_or_path: str, dtype: str = "auto", **kwargs) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=torch_dtype(dtype), **kwargs)


def default_lora_targets(model_type: str) -> list[str]:
    """PEFT's default LoRA target modules for an architecture; one line where it has none."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type) or EXTRA_LORA_TARGETS.get(model_type)
    if not targets:
        raise UsageError(f"no default LoRA target modules for model type {model_type!r}; set lora_target_modules")
    return list(targets)


def top_layers(count: int | None, num_layers: int | None) -> list[int] | None:
    if count is None:
        return None
    if not num_layers or not 1 <= count <= num_layers:
        raise UsageError(f"lora_top_layers must be between 1 and the model's {num_layers} layers, got {count}")
    return list(range(num_layers - count, num_layers))


def adapter_config(trained: str) -> PeftConfig | None:
    """The PEFT config of a trained adapter (folder or Hub id), or None for a full fine-tuned model."""
    from peft import PeftConfig

    try:
        return PeftConfig.from_pretrained(trained)
    except Exception:  # noqa: BLE001 - not an adapter: a full fine-tuned model folder or Hub id
        return None


def non_finite_parameter(model: torch.nn.Module, trainable_only: bool = False) -> str | None:
    """The name of the first parameter holding a NaN or an infinity, or None: a diverged run or a damaged
    weight file gives such a model, which would still answer every item (with its first label)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if (parameter.requires_grad or not trainable_only) and not torch.isfinite(parameter).all():
                return name
    return None


def refuse_non_finite(model: torch.nn.Module, where: str) -> None:
    name = non_finite_parameter(model)
    if name is not None:
        raise UsageError(f"{where}: the weight {name} holds NaN or infinite values; the model cannot be used")


def has_tokenizer(path: str) -> bool:
    folder = Path(path)
    return not folder.is_dir() or any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json"))
