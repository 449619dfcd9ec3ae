"""The arguments of `python -m augment` (a recipe may set any of them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from domainqa.config import UsageError
from domainqa.data_spec import ALL_SPLITS, DataSpec
from domainqa.embedded import EMBEDDED_MODEL

from .prompts import LOCAL_PROMPT_VERSION, MAX_CHARS, PROMPT_VERSION, PROMPT_VERSIONS

STRATEGIES = ("rewrite", "new", "combined")
BACKENDS = ("openai", "transformers")
JSON_MODES = ("auto", "on", "off")
DEFAULT_OPENAI_MODEL = "gpt-3.5-turbo"
# The defaults that differ by backend: (openai, transformers). The local ones are the best settings measured for
# SmolLM2-135M-Instruct (results/smollm2-135m-augment/local-run.md): prompt v3 with a repetition penalty of 1.2
# took the requests passing every check from 33% to 62% of 128, and 700 tokens leave room for the longest
# answer the bounded schema allows (2,600 characters, about 640 SmolLM2 tokens).
BACKEND_DEFAULTS = {
    "prompt_version": (PROMPT_VERSION, LOCAL_PROMPT_VERSION),
    "max_tokens": (1024, 700),
    "repetition_penalty": (1.0, 1.2),
}
DEFAULT_MIN_CONTEXT_RATIO = 0.6
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_LIKE = re.compile(r"[A-Za-z0-9]{16,}")


def looks_like_a_key(name: str) -> bool:
    """Whether `api_key_env` holds what looks like a key rather than a variable's name: anything that is no
    variable name (sk-..., with dashes), or a run of 16+ letters and digits mixing cases and digits (hf_..., a
    bare token), which variable names do not have."""
    if not _ENV_NAME.fullmatch(name):
        return True
    return any(
        any(c.isdigit() for c in run) and any(c.islower() for c in run) and any(c.isupper() for c in run)
        for run in _KEY_LIKE.findall(name)
    )


class AugmentError(UsageError):
    """Bad input or set-up, found before any generation request is sent."""


@dataclass
class AugmentArguments(DataSpec):
    """An augmentation run; the data set is PQA-L or your own (DataSpec: split custom, its columns and labels)."""

    strategy: str = field(default="rewrite", metadata={"help": f"One of {', '.join(STRATEGIES)}."})
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "PQA-L file (split by --split), or any dataset the training script reads (all of it is training "
            "data), or with split custom your own data set. Default: $PUBMEDQA_PATH."
        },
    )
    split: str = field(
        default="paper",
        metadata={"help": f"Split of PQA-L, or custom: your data set: {', '.join(ALL_SPLITS)}. Only train is used."},
    )
    fold: int = field(default=0, metadata={"help": "Official split: cross-validation fold."})
    pubmedqa_path: str | None = field(
        default=None,
        metadata={
            "help": "PQA-L file for the test-leak check when --dataset_path is not PQA-L (default $PUBMEDQA_PATH)."
        },
    )
    output_dir: str = field(default="outputs/augment/run", metadata={"help": "Where data.jsonl etc. are written."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the output of another run (another strategy, model, prompt version, label set, columns "
            "or sampling) in --output_dir; without it such a folder is refused."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Answer cache; default <output_dir>/cache."})
    backend: str = field(default="openai", metadata={"help": f"One of {', '.join(BACKENDS)}."})
    model: str | None = field(
        default=None, metadata={"help": f"Model name; default {DEFAULT_OPENAI_MODEL} (openai) or {EMBEDDED_MODEL}."}
    )
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server, e.g. http://host:8000/v1."})
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "The name of the environment variable holding the API key (never the key itself)."},
    )
    prompt_version: str | None = field(
        default=None,
        metadata={
            "help": f"Prompt wording, one of {', '.join(PROMPT_VERSIONS)} (augment/prompts.py says how they differ); "
            f"default {PROMPT_VERSION} (openai) or {LOCAL_PROMPT_VERSION} (transformers)."
        },
    )
    num_variants: int = field(default=1, metadata={"help": "Outputs per source item and strategy."})
    max_sources: int | None = field(default=None, metadata={"help": "Use only the first N training items."})
    max_concurrency: int = field(default=8, metadata={"help": "Requests in flight at once (openai backend)."})
    requests_per_minute: float | None = field(default=None, metadata={"help": "Request rate limit (none: unlimited)."})
    tokens_per_minute: float | None = field(default=None, metadata={"help": "Token rate limit (none: unlimited)."})
    max_retries: int = field(default=6, metadata={"help": "Retries on 429, 5xx, timeouts and dropped connections."})
    request_timeout: float = field(default=120.0, metadata={"help": "Seconds before a request counts as timed out."})
    backoff_base: float = field(default=1.0, metadata={"help": "First retry delay in seconds (doubles, with jitter)."})
    backoff_max: float = field(default=60.0, metadata={"help": "Longest retry delay in seconds."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    max_tokens: int | None = field(
        default=None, metadata={"help": "Longest answer in tokens; default 1024 (openai) or 700 (transformers)."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling seed; variant i uses seed + i."})
    repetition_penalty: float | None = field(
        default=None,
        metadata={
            "help": "transformers backend: divide the scores of tokens the answer already holds by this (the "
            "prompt is not counted, so quoting the source is not penalised); 1.0 is off, 1.2 (the default of the "
            "transformers backend) curbs the loops small models write."
        },
    )
    json_mode: str = field(
        default="auto",
        metadata={"help": "Ask for structured JSON output: auto (on, off if the server refuses it), on or off."},
    )
    teacher_probs: bool = field(
        default=True,
        metadata={
            "help": "Request the writer's token log-probabilities for the decision and record the label "
            "distribution in each accepted item's teacher_probs (openai backend: logprobs, dropped if the server "
            "refuses them; transformers backend: the model's own scores). The Batch API records none."
        },
    )
    verify: bool = field(
        default=False, metadata={"help": "Ask the LLM to answer each rewrite; reject those whose decision flips."}
    )
    overlap_threshold: float = field(
        default=0.5, metadata={"help": "Reject outputs sharing more than this share of n-grams with a test item."}
    )
    copy_threshold: float = field(
        default=0.9, metadata={"help": "An output this similar (n-gram Jaccard) to its source is a copy."}
    )
    check_numbers: bool = field(
        default=True, metadata={"help": "Reject outputs stating numbers (above 10) that their source item does not."}
    )
    max_repeat_share: float = field(
        default=0.25,
        metadata={
            "help": "Reject outputs where more than this share of the word 4-grams (question, context and long "
            "answer together) repeat an earlier one; no PubMedQA labelled item exceeds 0.19. 1 turns it off."
        },
    )
    min_words: int = field(default=3, metadata={"help": "Fewest words in a question, context or long answer."})
    max_question_words: int = field(default=80, metadata={"help": "Longest question in words."})
    max_context_words: int | None = field(
        default=None,
        metadata={
            "help": "Longest context in words; default 800 (PubMedQA), or for your own data set its longest "
            "training context plus 25% (at least 800)."
        },
    )
    max_context_chars: int | None = field(
        default=None,
        metadata={
            "help": f"The answer schema's bound on the context in characters; default {MAX_CHARS['context']:,} "
            "(PubMedQA), or for your own data set its longest training context plus 25%, rounded up to 100."
        },
    )
    min_context_ratio: float = field(
        default=DEFAULT_MIN_CONTEXT_RATIO,
        metadata={
            "help": "Reject a rewrite whose context has fewer words than this share of its source's (it dropped "
            "the passage's substance); 0 turns it off."
        },
    )
    max_answer_words: int = field(default=300, metadata={"help": "Longest long answer in words."})
    batch_size: int = field(default=4, metadata={"help": "transformers backend: prompts per generate call."})
    dtype: str = field(default="float32", metadata={"help": "transformers backend: auto, float32, bfloat16, float16."})
    use_batch_api: bool = field(default=False, metadata={"help": "openai backend: OpenAI's Batch API (half price)."})
    batch_poll_interval: float = field(default=30.0, metadata={"help": "Batch API: seconds between status checks."})
    batch_wait_timeout: float = field(
        default=86400.0, metadata={"help": "Batch API: stop waiting after this many seconds (rerun to collect)."}
    )
    price_table: str | None = field(
        default=None,
        metadata={"help": "JSON/YAML {model: {input: $/1M tokens, output: $/1M tokens}} added to the built-in table."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload data.jsonl, summary.json and the card."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repo (token from $HF_TOKEN)."})
    hub_private: bool = field(default=True, metadata={"help": "Create the Hub dataset as private."})
    log_level: str = field(default="INFO", metadata={"help": "Logging level."})

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("strategy", self.strategy, STRATEGIES),
            ("backend", self.backend, BACKENDS),
            ("split", self.split, ALL_SPLITS),
            ("json_mode", self.json_mode, JSON_MODES),
        ):
            if value not in choices:
                raise AugmentError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if not self.api_key_env:
            raise AugmentError("api_key_env must name the environment variable that holds the API key")
        if looks_like_a_key(self.api_key_env):  # never repeat the value: it is most likely a pasted key
            raise AugmentError(
                "api_key_env must name the environment variable that holds the API key (such as OPENAI_API_KEY); "
                "the value given looks like a key itself, so it is not shown: put the key in a variable and name that"
            )
        local = self.backend == "transformers"
        for name, defaults in BACKEND_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, defaults[local])
        if self.prompt_version not in PROMPT_VERSIONS:
            raise AugmentError(
                f"prompt_version must be one of {', '.join(PROMPT_VERSIONS)}, got {self.prompt_version!r}"
            )
        for name in ("num_variants", "max_concurrency", "batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise AugmentError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_context_words", "max_context_chars"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AugmentError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise AugmentError(f"{name} must be positive, got {value}")
        for name in ("overlap_threshold", "copy_threshold", "max_repeat_share", "min_context_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise AugmentError(f"{name} is a share: it must be between 0 and 1, got {getattr(self, name)}")
        if self.repetition_penalty <= 0:
            raise AugmentError(f"repetition_penalty must be positive (1.0 is off), got {self.repetition_penalty}")
        if self.repetition_penalty != 1.0 and self.backend != "transformers":
            raise AugmentError(
                "repetition_penalty applies to the transformers backend; set a server's own penalty on the server"
            )
        if self.max_retries < 0:
            raise AugmentError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.use_batch_api and self.backend != "openai":
            raise AugmentError("use_batch_api needs backend openai")
        if self.push_to_hub and not self.hub_dataset_id:
            raise AugmentError("push_to_hub needs hub_dataset_id")
        if self.model is None:
            self.model = DEFAULT_OPENAI_MODEL if self.backend == "openai" else EMBEDDED_MODEL
        super().__post_init__()
