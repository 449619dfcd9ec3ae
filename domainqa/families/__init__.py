"""Model families: how a kind of model trains and predicts. Each family implements `ModelFamily`, and the
scripts call only that, so train.py and infer.py read as one pipeline whatever the model; the family is
chosen once, here, from the recipe's `task_type` or from the model and the trained folder.

- `causal_lm`: a causal LM answers a prompt; the loss is on the answer, and it predicts by label scoring or
  the paper's beam search (domainqa/families/causal_lm.py).
- `sequence_classification`: a label head on the question and context read as a text pair; BERT-class
  encoders by default, any model with a sequence-classification head (domainqa/families/classifier.py).

A new family (an encoder-decoder, a reward-style head) is one more module implementing the same methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..embedded import EMBEDDED_ENCODER
from ..run_folder import load_run_config
from .base import ModelFamily
from .causal_lm import CausalLM
from .classifier import SequenceClassifier

if TYPE_CHECKING:
    from ..arguments import DataArguments, ModelArguments

FAMILIES: dict[str, type[ModelFamily]] = {family.task_type: family for family in (CausalLM, SequenceClassifier)}
TASK_TYPES = tuple(FAMILIES)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


# Architectures of encoder checkpoints (the base model or a head that is not a causal LM).
_ENCODER_SUFFIXES = ("ForSequenceClassification", "ForMaskedLM", "ForPreTraining")
_ENCODER_BASES = {"BertModel", "RobertaModel", "DebertaModel", "DebertaV2Model", "ElectraModel", "XLMRobertaModel"}


def is_encoder_folder(path: str | None) -> bool:
    """A local model folder whose config names an encoder architecture, or a sequence-classification adapter."""
    if not path:
        return False
    if _json(Path(path) / "adapter_config.json").get("task_type") == "SEQ_CLS":
        return True
    architectures = _json(Path(path) / "config.json").get("architectures") or []
    return any(a.endswith(_ENCODER_SUFFIXES) or a in _ENCODER_BASES for a in architectures)


def task_type_of(task_type: str | None, model_name_or_path: str, trained: str | None = None) -> str:
    """The family a run belongs to: as `task_type` says, else detected without the network (the embedded
    encoder, an encoder folder, or a trained classifier's run folder are sequence classifiers)."""
    if task_type is not None:
        return task_type
    if model_name_or_path == EMBEDDED_ENCODER:
        return "sequence_classification"
    if trained and Path(trained).is_dir() and load_run_config(trained).get("task_type") == "sequence_classification":
        return "sequence_classification"
    if is_encoder_folder(trained) or is_encoder_folder(model_name_or_path):
        return "sequence_classification"
    return "causal_lm"


def family_for(model_args: ModelArguments, data_args: DataArguments, trained: str | None = None) -> ModelFamily:
    """The family of this run, from the settings and (for prediction) the trained model's local folder."""
    return FAMILIES[task_type_of(model_args.task_type, model_args.model_name_or_path, trained)](model_args, data_args)
