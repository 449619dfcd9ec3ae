"""The argument dataclasses of train.py, infer.py and evaluate.py. A recipe may set any of their
fields; each script reads the ones it uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import SFTConfig

from .config import field_names
from .data import SPLITS
from .modeling import EMBEDDED_MODEL, PEFT_METHODS
from .prompts import ANSWER_STYLES, PROMPT_FORMATS


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": f"Hub id or local folder of a causal LM; {EMBEDDED_MODEL} is the SmolLM2 shipped on PyPI."},
    )
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    peft_method: str = field(default="lora", metadata={"help": f"One of {', '.join(PEFT_METHODS)}."})
    lora_r: int = field(default=4, metadata={"help": "LoRA rank (the paper used 4)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the paper swept 16..512)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt; default: PEFT's choice for the architecture."}
    )
    num_virtual_tokens: int = field(default=16, metadata={"help": "Prefix tuning: virtual tokens (paper: 16..512)."})

    def __post_init__(self):
        if self.peft_method not in PEFT_METHODS:
            raise ValueError(f"peft_method must be one of {', '.join(PEFT_METHODS)}, got {self.peft_method!r}")


@dataclass
class DataArguments:
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "PQA-L file (official ori_pqal.json); default $PUBMEDQA_PATH, else the Hub dataset."},
    )
    split: str = field(default="paper", metadata={"help": f"One of {', '.join(SPLITS)}."})
    fold: int = field(default=0, metadata={"help": "Official split: cross-validation fold 0..9 for train/validation."})
    train_data: str | None = field(
        default=None,
        metadata={"help": "Train on this file or folder (e.g. an augment/ output) instead of the split's train part."},
    )
    prompt_format: str = field(default="chat", metadata={"help": f"One of {', '.join(PROMPT_FORMATS)}."})
    answer_style: str = field(
        default="direct", metadata={"help": f"One of {', '.join(ANSWER_STYLES)} (reasoning: long answer first)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Chat format: system message."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training items."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation items."})

    def __post_init__(self):
        for name, value, choices in (
            ("split", self.split, SPLITS),
            ("prompt_format", self.prompt_format, PROMPT_FORMATS),
            ("answer_style", self.answer_style, ANSWER_STYLES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class InferenceArguments:
    output_dir: str = field(
        default="outputs/run", metadata={"help": "The training output folder; predictions are written here."}
    )
    adapter_path: str | None = field(
        default=None,
        metadata={"help": "Adapter or fine-tuned model (folder or Hub id); default: output_dir if it holds one."},
    )
    mode: str = field(
        default="score",
        metadata={"help": "score: most likely label (fast, never unparseable); generate: the paper's beam search."},
    )
    eval_split: str = field(default="test", metadata={"help": "test or validation."})
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass."})
    num_beams: int = field(default=5, metadata={"help": "Generate mode: beams (paper: 5)."})
    repetition_penalty: float = field(default=2.0, metadata={"help": "Generate mode: repetition penalty (paper: 2.0)."})
    temperature: float = field(
        default=0.8,
        metadata={"help": "Kept for fidelity to the paper (0.8); it has no effect on beam search without sampling."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Generate mode: new tokens (raise for reasoning)."})
    unparsed_fallback: str = field(
        default="maybe",
        metadata={"help": "Label written to the official JSON for an unparseable generation (they are counted)."},
    )
    predictions_name: str | None = field(
        default=None, metadata={"help": "File stem of the predictions; default predictions_<split>_<mode>."}
    )

    def __post_init__(self):
        if self.mode not in ("score", "generate"):
            raise ValueError(f"mode must be score or generate, got {self.mode!r}")
        if self.eval_split not in ("test", "validation"):
            raise ValueError(f"eval_split must be test or validation, got {self.eval_split!r}")


@dataclass
class EvaluationArguments:
    predictions: list[str] = field(
        metadata={"help": "Prediction files: official JSON {PMID: label}, or the JSONL of infer.py. Several: a table."}
    )
    ground_truth_file: str | None = field(
        default=None,
        metadata={"help": "Official-format truth {PMID: label}; default: the test part of --split of the data."},
    )
    output_file: str | None = field(default=None, metadata={"help": "Write the metrics here as JSON."})
    allow_partial: bool = field(
        default=False,
        metadata={"help": "Score only the test PMIDs that were predicted (quick runs on a slice); not comparable."},
    )
    bootstrap_samples: int = field(default=1000, metadata={"help": "Resamples for the 95% intervals (0: none)."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})


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
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "group_by_length (default: batches of similar length, less padding), random, sequential."},
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()
