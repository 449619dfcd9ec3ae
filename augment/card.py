"""The dataset card written next to the data, and the optional upload to the Hugging Face Hub."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from domainqa.data import LABELS

from .prompts import INSTRUCTIONS, PROMPT_VERSION

logger = logging.getLogger(__name__)
HUB_FILES = ("data.jsonl", "summary.json", "README.md")  # never the cache, rejected outputs or batch state


def render_card(summary: dict, rows: list[dict]) -> str:
    decisions = Counter(r["final_decision"] for r in rows)
    labels = summary.get("labels", LABELS)  # summaries written before label sets had none
    strategies = Counter(r["strategy"] for r in rows)
    models = sorted({str(r["model"]) for r in rows if r.get("model")})
    header = "\n".join(
        [
            "---",
            "license: other",
            "language: [en]",
            "task_categories: [question-answering]",
            "tags: [pubmedqa, biomedical, synthetic, llm-augmented]",
            "configs:",
            "- config_name: default",
            "  data_files: data.jsonl",
            "---",
        ]
    )
    lines = [
        header,
        "",
        f"# PubMedQA augmented: {summary['strategy']} by {', '.join(models) or summary['model']}",
        "",
        f"Training data for PubMedQA ({'/'.join(labels)} questions on PubMed abstracts) written by a large language",
        "model from the training items of PQA-L, following Dr. LLaMA (Guo et al., 2023): *rewrite* rewords",
        "question, context and long answer with the same decision; *new* writes new question/answer pairs from",
        "the same abstracts; *original* rows are the unchanged sources (combined strategy).",
        "",
        f"- Sources: {summary['sources']} items, {summary['source_origin']} of `{Path(summary['dataset']).name}`;",
        "  no test item was used as a source, and outputs overlapping a test question or context were removed",
        f"  ({summary['test_overlap_rejected']} removed).",
        f"- Backend: {summary['backend']}; prompt version `{PROMPT_VERSION}`;",
        f"  sampling `{json.dumps(summary['sampling'])}`.",
        f"- Examples: {len(rows)} ({', '.join(f'{k}: {v}' for k, v in sorted(strategies.items()))}).",
        f"- Decisions: {', '.join(f'{k}: {decisions.get(k, 0)}' for k in labels)}.",
        f"- Rejected outputs: {summary['rejected']} ({json.dumps(summary['rejected_by_reason'])}).",
        f"- Tokens in/out: {summary['tokens_in']}/{summary['tokens_out']}; estimated cost (USD):"
        f" {summary['estimated_cost_usd']}.",
        "",
        "## Fields",
        "",
        f"`id` (unique), `question`, `context`, `long_answer`, `final_decision` ({'/'.join(labels)}), and provenance:",
        "`source_id` (the PubMedQA item it came from), `strategy`, `model`, `prompt_version`.",
        "",
        "## Prompts",
        "",
        *[f"- {kind}: {text}" for kind, text in INSTRUCTIONS.items() if kind != "verify"],
        "",
        "## Licence and caveats",
        "",
        "PubMedQA is MIT-licensed; generated text is also subject to the terms of the model that wrote it.",
        "Generated answers were checked for format, decision and overlap, not for medical correctness:",
        "use for research on training small models, never as medical advice.",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(output_dir: str | os.PathLike, repo_id: str, private: bool = True, api=None) -> list[str]:
    """Upload the data, summary and card (token from $HF_TOKEN); returns the files uploaded."""
    from huggingface_hub import HfApi

    folder = Path(output_dir)
    files = [name for name in HUB_FILES if (folder / name).is_file()]
    api = api or HfApi(token=os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=files,
        commit_message="Add augmented PubMedQA data",
    )
    logger.info("pushed %s to the Hub dataset %s", ", ".join(files), repo_id)
    return files
