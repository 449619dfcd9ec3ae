"""Export label scoring as an lm-evaluation-harness task, so that the harness scores the same items with the same
prompt and label set, and compare its per-item results with infer.py's.

    python -m domainqa.lm_eval_task outputs/run                      # a trained run folder (its run_config.yaml)
    python -m domainqa.lm_eval_task recipes/smollm2-135m/lora/original.yaml --zero_shot true
    python -m domainqa.lm_eval_task --model_name_or_path HF_ID --dataset_path data.jsonl --split custom
    python -m domainqa.lm_eval_task compare SAMPLES.jsonl outputs/run/predictions_paper_test_score.jsonl

Export writes <output_dir>/<task_name>.yaml and <task_name>.jsonl and prints the `lm_eval` command. Each data row
holds the item's scoring context already rendered (`PromptFormat.scoring_context`: the prompt, chat template
included, and the lead-in), so the task YAML needs no Python of ours: a `multiple_choice` task whose choices are the
label texts (" yes.", " no.", " maybe.") scores each choice by the summed log-probability of its tokens after the
context and takes the most likely one, which is what `score_labels` does. Settings, items (eval_split,
max_eval_samples, contexts cut to max_length) and the tokenizer are chosen as infer.py chooses them.

`compare` reads the harness's --log_samples file and infer.py's rows (<stem>.jsonl) and reports the accuracy of
both on the same items, the items where the chosen label differs and the largest log-likelihood difference.
docs/lm-eval.md says how to run both.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml

from . import config
from .arguments import DataArguments, ModelArguments, align_with_training, pipeline_keys
from .config import UsageError, load_recipe, run_cli
from .data import Example
from .data_spec import load_parts
from .embedded import resolve_model_path
from .families import task_type_of
from .inference import _label_token_ids
from .io import atomic_write_text
from .modeling import adapter_config, has_tokenizer, load_tokenizer
from .prompts import PromptFormat
from .run_folder import check_recorded_split, holds_trained_model, load_run_config

logger = logging.getLogger(__name__)


@dataclass
class ExportArguments:
    """Where the task goes and which items it holds; the model and data settings are infer.py's."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the task's YAML and data (the harness's --include_path); default: <run>/lm_eval, "
                          "or outputs/lm_eval for an untouched model. Keep other YAML files out of it."},
    )  # fmt: skip
    task_name: str | None = field(
        default=None, metadata={"help": "The harness's task name; default domainqa_<split>_<eval_split>."}
    )
    eval_split: str = field(default="test", metadata={"help": "test, validation or train, as infer.py's."})
    zero_shot: bool = field(
        default=False, metadata={"help": "With a recipe whose output_dir holds a trained model: the base model."}
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Cut contexts as infer.py does (unset: the run's max_length, else the model's limit)."},
    )

    def __post_init__(self):
        if self.eval_split not in ("test", "validation", "train"):
            raise ValueError(f"eval_split must be test, validation or train, got {self.eval_split!r}")
        if self.task_name is not None and not re.fullmatch(r"[A-Za-z][\w.-]*", self.task_name):
            raise ValueError(f"task_name must be a word such as my_task, got {self.task_name!r}")


# ------------------------------------------------------------------------------------------- settings


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, ExportArguments, str | None]:
    """(model, data and export settings, the trained run or None). The first argument may be a run folder or a
    recipe; a recipe's output_dir is the run it names (as for infer.py), not the task's folder."""
    argv, run, settings = list(argv), None, None
    if argv and not argv[0].startswith("-"):
        source = argv.pop(0)
        if source.endswith((".yaml", ".yml")):
            settings = load_recipe(source)
            adapter, folder = settings.pop("adapter_path", None), settings.pop("output_dir", None)
            named = adapter or folder
            run = named if named and holds_trained_model(named) else None
        elif holds_trained_model(source):
            run = source
        else:
            raise UsageError(f"{source}: neither a recipe (.yaml) nor a folder holding a trained model")
    model_args, data_args, export_args = config.parse_args(
        ModelArguments, DataArguments, ExportArguments, args=argv, settings=settings, shared_keys=pipeline_keys()
    )
    if export_args.zero_shot:
        run = None
    if run:
        align_with_training(model_args, data_args, load_run_config(run), run, export_args)
    if task_type_of(model_args.task_type, model_args.model_name_or_path, run) != "causal_lm":
        raise UsageError("a sequence classifier has no answer to score: the harness compares a causal LM's answers")
    return model_args, data_args, export_args, run


# ------------------------------------------------------------------------------------------- the task


def harness_encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The tokens lm-evaluation-harness's HF model scores (lm_eval/api/model.py `_encode_pair` with
    HFLM.tok_encode, add_bos_token unset): the whole text, cut at the length of the context's own encoding. A text
    that starts with the harness's prefix token (BOS, else EOS; a chat template that writes it) gets no special
    tokens, where label scoring lets the tokenizer add them: a tokenizer that adds BOS then differs by one token."""
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix_text = tokenizer.decode(prefix_id) if prefix_id is not None else None

    def encode(text: str) -> list[int]:
        plain = {"add_special_tokens": False} if prefix_text and text.startswith(prefix_text) else {}
        return tokenizer(text, **plain)["input_ids"]

    whole, prefix = encode(context + continuation), encode(context)
    return prefix, whole[len(prefix) :]


def same_tokens(tokenizer, fmt: PromptFormat, example: Example) -> bool:
    """Whether the harness scores exactly the tokens label scoring scores, for every label of this item: the same
    whole sequence, and the same continuation tokens counted in the label's log-likelihood."""
    context = fmt.scoring_context(example)
    shared, continuations = _label_token_ids(tokenizer, fmt, example)
    for label, continuation in zip(fmt.labels, continuations, strict=True):
        prefix, theirs = harness_encode_pair(tokenizer, context, fmt.label_text(label))
        if prefix + theirs != shared + continuation or theirs != continuation:
            return False
    return True


def task_config(task_name: str, data_file: Path, labels: tuple[str, ...]) -> dict:
    """The harness's task: our rendered text as the context, our label texts as the choices."""
    return {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{text}}",
        # The label text carries its own leading space (" yes."): no delimiter between context and choice.
        "doc_to_choice": [PromptFormat.label_text(label) for label in labels],
        "target_delimiter": "",
        "doc_to_target": "gold",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def lm_eval_command(model_args: ModelArguments, run: str | None, base: str, task_dir: Path, task_name: str) -> str:
    """The harness's command for this model: a full fine-tune is `pretrained=RUN`, an adapter `peft=RUN` on its
    base; the tokenizer is the run's where it saved one (as infer.py loads it)."""
    is_adapter = run is not None and adapter_config(run) is not None
    parts = {"pretrained": run if run and not is_adapter else base}
    if is_adapter:
        parts["peft"] = run
    if run and has_tokenizer(run):
        parts["tokenizer"] = run
    # Label scoring takes the log-softmax in float32 whatever the model's dtype; the harness's default is the dtype.
    parts.update(dtype=model_args.dtype, softmax_dtype="float32")
    model_arg = ",".join(f"{key}={value}" for key, value in parts.items())
    return shlex.join(["lm_eval", "--model", "hf", "--model_args", model_arg, "--include_path", str(task_dir),
                       "--tasks", task_name, "--batch_size", "1", "--log_samples",
                       "--output_path", str(task_dir / "results")])  # fmt: skip


def export_task(model_args: ModelArguments, data_args: DataArguments, export_args: ExportArguments, run: str | None):
    """Write the task's YAML and data; returns the YAML's path, the `lm_eval` command and the items that the harness
    would tokenize differently from label scoring (none where the comparison is exact)."""
    # Imported here: the CLI's argument errors come before torch loads.
    from transformers import AutoConfig

    from .families.causal_lm import _tokens, fit_to_length, model_limit

    base = resolve_model_path(model_args.model_name_or_path)
    full_model = run if run and adapter_config(run) is None else None
    tokenizer = load_tokenizer(run if run and has_tokenizer(run) else base)
    data = load_parts(data_args)
    check_recorded_split(run, data)
    items = data[export_args.eval_split][: data_args.max_eval_samples]
    fmt = PromptFormat(data_args.prompt_format, tokenizer, data_args.answer_style, data_args.system_prompt, data.labels)
    fmt.scoring_context(items[0])  # answer_style reasoning cannot be scored: one line now

    # The contexts infer.py scores: cut, as there, to the run's max_length or the model's own limit.
    model_config = SimpleNamespace(config=AutoConfig.from_pretrained(full_model or base))
    limit = export_args.max_length or model_limit(model_config, tokenizer)
    answer = max(_tokens(tokenizer, fmt.label_text(label)) for label in fmt.labels)
    items = fit_to_length(items, tokenizer, limit, lambda e: _tokens(tokenizer, fmt.scoring_context(e)) + answer)

    task_name = export_args.task_name or f"domainqa_{data_args.split}_{export_args.eval_split}"
    task_dir = Path(export_args.output_dir or (Path(run) / "lm_eval" if run else "outputs/lm_eval"))
    data_file = task_dir / f"{task_name}.jsonl"
    rows = [
        {"id": e["id"], "text": fmt.scoring_context(e), "gold": fmt.labels.index(e["final_decision"]),
         "label": e["final_decision"]}
        for e in items
    ]  # fmt: skip
    atomic_write_text(data_file, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    task_file = task_dir / f"{task_name}.yaml"
    header = (f"# Label scoring of domainqa as an lm-evaluation-harness task: {len(rows)} {export_args.eval_split} "
              f"items of split {data_args.split}, prompt_format {data_args.prompt_format}, labels "
              f"{', '.join(fmt.labels)}.\n# Run without --apply_chat_template, --system_instruction or few-shot "
              "examples: the text already holds the rendered prompt.\n")  # fmt: skip
    body = yaml.safe_dump(task_config(task_name, data_file, fmt.labels), sort_keys=False, allow_unicode=True)
    atomic_write_text(task_file, header + body)
    differing = [e["id"] for e in items if not same_tokens(tokenizer, fmt, e)]
    return task_file, lm_eval_command(model_args, run, base, task_dir, task_name), differing


def main(argv: list[str]) -> None:
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    config.setup_logging()
    model_args, data_args, export_args, run = parse_args(argv)
    task_file, command, differing = export_task(model_args, data_args, export_args, run)
    if differing:
        logger.warning("%d item(s) would be tokenized differently by the harness (e.g. %s): their scores may differ "
                       "(docs/lm-eval.md)", len(differing), ", ".join(differing[:3]))  # fmt: skip
    print(f"Wrote {task_file} and its data. Score it with:\n\n{command}\n")


# -------------------------------------------------------------------------------------------- compare


def harness_rows(samples: list[dict]) -> dict[str, dict]:
    """{id: the chosen choice's index, the gold index and each choice's log-likelihood} from the harness's logged
    samples of an exported task. Each response is a (log-likelihood, is_greedy) pair; the samples file writes
    them as strings, simple_evaluate's results hold them as numbers."""
    rows = {}
    for sample in samples:
        scores = [float(resp[0]) for resp in sample["filtered_resps"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        rows[str(sample["doc"]["id"])] = {"index": best, "gold": int(sample["doc"]["gold"]), "loglikelihoods": scores}
    return rows


def compare(samples: list[dict], predictions: list[dict]) -> dict:
    """The harness's and label scoring's results on the items both scored: accuracy of each, the ids whose chosen
    label differs, and the largest difference between the two log-likelihoods of a label."""
    theirs = harness_rows(samples)
    ours = {str(row["id"]): row for row in predictions}
    if any("label_logprobs" not in row for row in ours.values()):
        raise UsageError("the predictions hold no label scores: compare the rows of infer.py --mode score")
    common = [item for item in ours if item in theirs]
    if not common:
        raise UsageError("the harness's samples and the predictions share no item id")
    differ, largest = [], 0.0
    for item in common:
        labels = list(ours[item]["label_logprobs"])
        if labels[theirs[item]["index"]] != ours[item]["prediction"]:
            differ.append(item)
        gaps = [abs(a - b) for a, b in zip(ours[item]["label_logprobs"].values(), theirs[item]["loglikelihoods"],
                                           strict=True)]  # fmt: skip
        largest = max(largest, *gaps)
    return {
        "items": len(common),
        "harness_only": len(theirs) - len(common),
        "predictions_only": len(ours) - len(common),
        "harness_accuracy": sum(theirs[i]["index"] == theirs[i]["gold"] for i in common) / len(common),
        "accuracy": sum(ours[i]["prediction"] == ours[i]["label"] for i in common) / len(common),
        "different_choice": differ,
        "max_loglikelihood_difference": largest,
    }


def _read_jsonl(path: str) -> list[dict]:
    try:
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None


def compare_main(argv: list[str]) -> None:
    parser = config.ArgumentParser(prog="python -m domainqa.lm_eval_task compare", description=compare.__doc__)
    parser.add_argument("samples", help="the harness's samples_<task>_<time>.jsonl (lm_eval --log_samples)")
    parser.add_argument("predictions", help="infer.py's rows in score mode: <output_dir>/<stem>.jsonl")
    args = parser.parse_args(argv)
    result = compare(_read_jsonl(args.samples), _read_jsonl(args.predictions))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    run_cli(main, prog="python -m domainqa.lm_eval_task")
