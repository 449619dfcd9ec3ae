"""The interface every model family implements (domainqa/families/__init__.py chooses one per run)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback

    from ..arguments import DataArguments, InferenceArguments, ModelArguments, TrainingArguments
    from ..data import Example

# Predicts a row ({"id", "prediction", and "label_logprobs" or "generation"}) per item, in any order.
Predict = Callable[[list["Example"]], Iterator[dict]]


class ModelFamily(ABC):
    """One kind of model, from its settings to its predictions. An instance serves one run: it checks the
    settings first (one line before anything loads), then builds the training data, the trainer, or the
    predictor."""

    task_type: ClassVar[str]
    truncated: int = 0  # training items whose context was cut to max_length (set by training_data)

    def __init__(self, model_args: ModelArguments, data_args: DataArguments) -> None:
        self.model_args = model_args
        self.data_args = data_args

    @abstractmethod
    def check_training(self, training_args: TrainingArguments) -> None:
        """Refuse settings this family cannot honour, before any data or model loads."""

    @abstractmethod
    def training_data(
        self, training_args: TrainingArguments, labels: Sequence[str], train: list[Example], validation: list[Example]
    ) -> tuple[Dataset, Dataset]:
        """The training and validation datasets, in the form this family's trainer reads."""

    @abstractmethod
    def trainer(
        self, training_args: TrainingArguments, datasets: tuple[Dataset, Dataset], callbacks: list[TrainerCallback],
        resuming: bool,
    ) -> Trainer:  # fmt: skip
        """The model, loaded and set up for training (PEFT or full), inside its Trainer."""

    @abstractmethod
    def check_inference(self, infer_args: InferenceArguments, trained: str | None) -> None:
        """Refuse prediction settings this family cannot honour, before any model loads."""

    @abstractmethod
    def predictor(
        self, trained: str | None, labels: Sequence[str], infer_args: InferenceArguments, device, first: Example
    ) -> Predict:
        """Load the trained model (or the base model for zero-shot) on `device` and return its predict
        function; `first` is an item to check the prompt against before any work."""
