"""Every recipe in recipes/encoders parses through the real argument dataclasses of train.py and infer.py and
selects the sequence-classification path with settings that path accepts."""

from __future__ import annotations

import pytest

from domainqa.arguments import DataArguments, InferenceArguments, ModelArguments, TrainingArguments, pipeline_keys
from domainqa.config import parse_args
from domainqa.embedded import EMBEDDED_ENCODER
from domainqa.families import family_for
from domainqa.families.classifier import SequenceClassifier
from tests.helpers import REPO

RECIPES = sorted((REPO / "recipes" / "encoders").glob("*.yaml"))
ANCHORS = {
    "biolinkbert-base": "michiyasunaga/BioLinkBERT-base",
    "biolinkbert-large": "michiyasunaga/BioLinkBERT-large",
    "biomedbert-base": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
}


def test_the_encoder_recipes_are_all_there():
    assert {p.stem for p in RECIPES} == {"all-minilm-l6-v2", *ANCHORS}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_encoder_recipe_parses_for_train_and_infer(recipe):
    model, data, training = parse_args(ModelArguments, DataArguments, TrainingArguments, args=[str(recipe)],
                                       shared_keys=pipeline_keys())  # fmt: skip
    _, _, inference = parse_args(ModelArguments, DataArguments, InferenceArguments, args=[str(recipe)],
                                 shared_keys=pipeline_keys())  # fmt: skip
    family = family_for(model, data)
    assert isinstance(family, SequenceClassifier)
    family.check_training(training)
    family.check_inference(inference, trained=training.output_dir)
    assert model.model_name_or_path == ANCHORS.get(recipe.stem, EMBEDDED_ENCODER)
    assert training.output_dir == inference.output_dir == f"outputs/encoders/{recipe.stem}"
    assert training.max_length <= 512  # the encoders' position tables
    if recipe.stem in ANCHORS:  # the BLURB setting: the official split's 500 test items
        assert data.split == "official" and training.num_train_epochs >= 20
