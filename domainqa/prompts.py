"""Prompt formats: how an example becomes a prompt, and what the model should answer.

Training sees `prompt + completion`; the loss covers the completion only. Label scoring compares
`prompt + answer_lead(...) + label_text(label)` across the labels of the task's label set (PubMedQA's
yes/no/maybe unless a data set declares its own); generation reads the label back with `parse_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .config import UsageError
from .data import LABELS, Example

# The target sentence of BioGPT's PubMedQA fine-tuning, used by the paper.
BIOGPT_LEAD = "the answer to the question given the context is"
CHAT_LEAD = "The answer is"
CHAT_INSTRUCTION = "Answer the research question from the abstract with yes, no or maybe."


def either(labels: Sequence[str], quote: str = "") -> str:
    """'yes, no or maybe': the labels as a sentence names them."""
    shown = [f"{quote}{label}{quote}" for label in labels]
    return f"{', '.join(shown[:-1])} or {shown[-1]}" if len(shown) > 1 else "".join(shown)


def chat_instruction(labels: Sequence[str]) -> str:
    """PubMedQA's instruction, or for another label set the same request in general words."""
    if tuple(labels) == LABELS:
        return CHAT_INSTRUCTION
    return f"Answer the question from the context with {either(labels)}."


class PromptFormat:
    """`biogpt`: the paper's plain-text source/target; `chat`: the tokenizer's chat template."""

    def __init__(
        self,
        name: str,
        tokenizer=None,
        answer_style: str = "direct",
        system_prompt: str | None = None,
        labels: Sequence[str] = LABELS,
    ):
        if name == "chat" and getattr(tokenizer, "chat_template", None) is None:
            raise UsageError("prompt_format 'chat' needs a tokenizer with a chat template; use 'biogpt' for this model")
        self.name = name
        self.tokenizer = tokenizer
        self.answer_style = answer_style
        self.system_prompt = system_prompt
        self.lead = BIOGPT_LEAD if name == "biogpt" else CHAT_LEAD
        self.labels = tuple(labels)  # what label scoring compares and generation parses

    def _messages(self, example: Example) -> list[dict]:
        user = f"{chat_instruction(self.labels)}\n\nContext: {example['context']}\n\nQuestion: {example['question']}"
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


def _label_patterns(labels: Sequence[str]) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    """(label after the lead-in, any label as whole words, a label as the first word)."""
    # Longest first, so that a label that starts another ("no" and "no effect") matches whole.
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    label = rf"(?<!\w)({alternatives})(?!\w)"
    after_lead = rf"answer\b[^.?!\n]*?\bis\b\W*?{label}"
    return tuple(re.compile(p, re.IGNORECASE) for p in (after_lead, label, rf"\W*{label}"))


def parse_answer(text: str, labels: Sequence[str] = LABELS) -> str | None:
    """The decision in a generated answer, one of `labels` as spelled there, matching whole words only
    ("not" and "know" are not "no"); None if the text states no single decision."""
    spelled = {label.lower(): label for label in labels}
    after_lead, label_word, leading = _label_patterns(labels)
    stated = after_lead.findall(text)
    if stated:
        return spelled[stated[-1].lower()]
    words = [spelled[w.lower()] for w in label_word.findall(text)]
    if not words:
        return None
    first = leading.match(text)
    if first:
        return spelled[first.group(1).lower()]
    return words[0] if len(set(words)) == 1 else None
