"""Prompt formats: how an example becomes a prompt, and what the model should answer.

Training sees `prompt + completion`; the loss covers the completion only. Label scoring compares
`prompt + answer_lead(...) + label_text(label)` across the three labels; generation reads the
label back with `parse_answer`.
"""

from __future__ import annotations

import re

from .config import UsageError
from .data import LABELS, Example

PROMPT_FORMATS = ("biogpt", "chat")
ANSWER_STYLES = ("direct", "reasoning")

# The target sentence of BioGPT's PubMedQA fine-tuning, used by the paper.
BIOGPT_LEAD = "the answer to the question given the context is"
CHAT_LEAD = "The answer is"
CHAT_INSTRUCTION = "Answer the research question from the abstract with yes, no or maybe."


class PromptFormat:
    """`biogpt`: the paper's plain-text source/target; `chat`: the tokenizer's chat template."""

    def __init__(self, name: str, tokenizer=None, answer_style: str = "direct", system_prompt: str | None = None):
        if name not in PROMPT_FORMATS:
            raise UsageError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {name!r}")
        if answer_style not in ANSWER_STYLES:
            raise UsageError(f"answer_style must be one of {', '.join(ANSWER_STYLES)}, got {answer_style!r}")
        if name == "chat" and getattr(tokenizer, "chat_template", None) is None:
            raise UsageError("prompt_format 'chat' needs a tokenizer with a chat template; use 'biogpt' for this model")
        self.name = name
        self.tokenizer = tokenizer
        self.answer_style = answer_style
        self.system_prompt = system_prompt
        self.lead = BIOGPT_LEAD if name == "biogpt" else CHAT_LEAD

    def _messages(self, example: Example) -> list[dict]:
        user = f"{CHAT_INSTRUCTION}\n\nContext: {example['context']}\n\nQuestion: {example['question']}"
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": user}]

    def prompt(self, example: Example) -> str:
        if self.name == "biogpt":
            return f"question: {example['question']} context: {example['context']} target:"
        return self.tokenizer.apply_chat_template(self._messages(example), tokenize=False, add_generation_prompt=True)

    def answer(self, example: Example) -> str:
        """The answer text the model is trained to produce (without the turn's end)."""
        reasoning = f"{example['long_answer']} " if self.answer_style == "reasoning" and example["long_answer"] else ""
        answer = f"{reasoning}{self.lead} {example['final_decision']}."
        return answer[0].upper() + answer[1:] if self.name == "chat" else answer

    def completion(self, example: Example) -> str:
        if self.name == "biogpt":
            return " " + self.answer(example)
        prompt = self.prompt(example)
        messages = self._messages(example) + [{"role": "assistant", "content": self.answer(example)}]
        full = self.tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise UsageError("the chat template renders the prompt differently inside a full conversation")
        return full[len(prompt) :].rstrip()

    def scoring_context(self, example: Example) -> str:
        """Text after which the label is scored: the prompt plus the fixed lead-in."""
        if self.answer_style == "reasoning":
            raise UsageError("score mode needs answer_style 'direct'; use mode 'generate' for reasoning answers")
        return self.prompt(example) + (" " if self.name == "biogpt" else "") + self.lead

    @staticmethod
    def label_text(label: str) -> str:
        return f" {label}."

    def training_pair(self, example: Example, loss_on: str = "answer") -> dict[str, str]:
        """The prompt and the completion that carries the loss: the whole answer, or (`loss_on="label"`)
        only what follows the lead-in, the decision and its period, exactly the text label scoring compares
        (the trainer appends the end of turn; a completion without the period would teach the model that no
        period follows a label, and the scores of the three labels' periods would then decide)."""
        if loss_on == "label":
            return {"prompt": self.scoring_context(example), "completion": self.label_text(example["final_decision"])}
        return {"prompt": self.prompt(example), "completion": self.completion(example)}


_LABEL = r"(yes|no|maybe)"
_AFTER_LEAD = re.compile(rf"answer\b[^.?!\n]*?\bis\b\W*{_LABEL}\b", re.IGNORECASE)
_LABEL_WORD = re.compile(rf"\b{_LABEL}\b", re.IGNORECASE)


def parse_answer(text: str) -> str | None:
    """The yes/no/maybe decision in a generated answer, matching whole words only ("not" and
    "know" are not "no"); None if the text states no single decision."""
    stated = _AFTER_LEAD.findall(text)
    if stated:
        return stated[-1].lower()
    words = [w.lower() for w in _LABEL_WORD.findall(text)]
    if not words:
        return None
    first_word = re.match(r"\W*(\w+)", text)
    if first_word and first_word.group(1).lower() in LABELS:
        return first_word.group(1).lower()
    return words[0] if len(set(words)) == 1 else None
