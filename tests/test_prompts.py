import pytest
from transformers import AutoTokenizer

from domainqa.arguments import DataArguments
from domainqa.prompts import PromptFormat, parse_answer

EXAMPLE = {"id": "1", "question": "Does X cause Y?", "context": "We studied X.", "long_answer": "X causes Y.",
           "final_decision": "yes"}  # fmt: skip


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the answer to the question given the context is yes.", "yes"),
        ("the answer to the question given the context is no.", "no"),
        ("The answer is Maybe.", "maybe"),
        ("Yes, body mass index influences survival.", "yes"),
        ("No.", "no"),
        ("maybe", "maybe"),
        # The original analysis matched substrings: "not", "know", "nothing", "noted" held a "no".
        ("We do not know whether it is effective; yes.", "yes"),
        ("It is not known. Nothing noted.", None),
        ("There was no difference in outcome, so the answer to the question given the context is yes.", "yes"),
        ("No significant association; no benefit.", "no"),
        ("Yes and no.", "yes"),  # a leading decision word wins
        ("The data suggest a yes for men and a no for women.", None),  # two decisions, none stated
        ("", None),
        ("yesterday, the nominee knows", None),
    ],
)
def test_parse_answer_matches_whole_words(text, expected):
    assert parse_answer(text) == expected


def test_biogpt_format_is_the_papers_target():
    fmt = PromptFormat("biogpt")
    assert fmt.prompt(EXAMPLE) == "question: Does X cause Y? context: We studied X. target:"
    assert fmt.completion(EXAMPLE) == " the answer to the question given the context is yes."
    assert fmt.scoring_context(EXAMPLE) == fmt.prompt(EXAMPLE) + " the answer to the question given the context is"
    assert fmt.scoring_context(EXAMPLE) + fmt.label_text("yes") == fmt.prompt(EXAMPLE) + fmt.completion(EXAMPLE)
    reasoning = PromptFormat("biogpt", answer_style="reasoning")
    assert reasoning.completion(EXAMPLE) == " X causes Y. the answer to the question given the context is yes."
    with pytest.raises(ValueError, match="score mode needs answer_style 'direct'"):
        reasoning.scoring_context(EXAMPLE)


def test_chat_format_uses_the_template_and_ends_the_turn(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    fmt = PromptFormat("chat", tokenizer, system_prompt="You are a biomedical expert.")
    prompt = fmt.prompt(EXAMPLE)
    assert prompt.startswith("<|im_start|>system\nYou are a biomedical expert.<|im_end|>")
    assert "Question: Does X cause Y?" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert fmt.completion(EXAMPLE) == "The answer is yes.<|im_end|>"
    assert (fmt.scoring_context(EXAMPLE) + fmt.label_text("yes")) + "<|im_end|>" == prompt + fmt.completion(EXAMPLE)


def test_chat_format_needs_a_chat_template():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        PromptFormat("chat", NoTemplate())


def test_unknown_prompt_format_is_refused_where_the_arguments_are_made():
    # Checked once, from the field's Literal choices, before any tokenizer or prompt exists.
    with pytest.raises(ValueError, match="prompt_format must be one of chat, biogpt, got 'alpaca'"):
        DataArguments(prompt_format="alpaca")
