"""`domainqa.predict`: the label scores of one question by a trained run (a run folder or its Hub id), computed
exactly as infer.py computes them, for use from Python and in model cards.

    from domainqa import predict
    predict("user/name", question="Does X cause Y?", context="...")
    # {"prediction": "yes", "label_logprobs": {"yes": -0.4, "no": -1.6, "maybe": -2.9}}
"""

from __future__ import annotations

import dataclasses
import functools

from .arguments import DataArguments, InferenceArguments, ModelArguments
from .data import LABELS
from .families import family_for
from .families.base import Predict
from .hub_access import model_folder
from .run_folder import HUB_MODEL_PATTERNS, load_run_config


def _recorded(cls: type, config: dict) -> dict:
    return {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config}


@functools.cache
def _predictor(model: str, device: str) -> tuple[Predict, tuple[str, ...]]:
    folder = model_folder(model, HUB_MODEL_PATTERNS).folder
    config = load_run_config(folder)
    model_args = ModelArguments(**_recorded(ModelArguments, config))
    # The data set's spec is not needed to score one item: only its label set and prompt settings are.
    prompt = {k: config[k] for k in ("prompt_format", "answer_style", "system_prompt") if k in config}
    data_args = DataArguments(**prompt)
    labels = tuple(config.get("labels") or LABELS)
    infer_args = InferenceArguments(batch_size=1, max_length=config.get("max_length"))
    family = family_for(model_args, data_args, folder)
    family.check_inference(infer_args, folder)
    first = {"id": "first", "question": "", "context": "", "long_answer": "", "final_decision": labels[0]}
    return family.predictor(folder, labels, infer_args, device, first), labels


def predict(model: str, question: str, context: str, device: str = "cpu") -> dict:
    """The most likely label and every label's log-probability for one item, by the trained model `model` (a
    run folder or a Hub id user/name[@revision]); loaded once per model and device."""
    predict_rows, _ = _predictor(model, device)
    item = {"id": "item", "question": question, "context": context, "long_answer": "", "final_decision": ""}
    row = next(iter(predict_rows([item])))
    return {"prediction": row["prediction"], "label_logprobs": row["label_logprobs"]}
