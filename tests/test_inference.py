import pytest
import torch
from peft import get_peft_model

from domainqa.data import load_pubmedqa, paper_split
from domainqa.families.causal_lm import build_peft_config
from domainqa.inference import _label_token_ids, _score_batch_full, generate_answers, longest_first, score_labels
from domainqa.modeling import load_model, load_tokenizer
from domainqa.prompts import PromptFormat


@pytest.fixture(scope="module")
def items(pqal_path):
    return paper_split(load_pubmedqa(str(pqal_path)))["test"][:5]


def reference_scores(model, tokenizer, fmt, items):
    encoded = [_label_token_ids(tokenizer, fmt, e) for e in items]
    return torch.cat([_score_batch_full(model, [p], [c], tokenizer.pad_token_id) for p, c in encoded])


@pytest.mark.parametrize("model_fixture, fmt_name", [("tiny_llama", "chat"), ("tiny_gpt2", "biogpt")])
def test_cached_scoring_equals_scoring_each_full_sequence(request, items, model_fixture, fmt_name):
    path = str(request.getfixturevalue(model_fixture))
    model, tokenizer = load_model(path).eval(), load_tokenizer(path)
    fmt = PromptFormat(fmt_name, tokenizer)
    expected = reference_scores(model, tokenizer, fmt, items)
    for batch_size in (1, 3):  # left padding inside a batch must not change a score
        rows = list(score_labels(model, tokenizer, fmt, items, batch_size=batch_size))
        got = torch.tensor([list(r["label_logprobs"].values()) for r in rows])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        assert [r["prediction"] for r in rows] == [("yes", "no", "maybe")[i] for i in expected.argmax(-1).tolist()]
        assert [r["id"] for r in rows] == [e["id"] for e in items]


def test_scoring_longest_first_in_batches_gives_each_item_its_own_scores(tiny_llama, items):
    path = str(tiny_llama)
    model, tokenizer = load_model(path).eval(), load_tokenizer(path)
    fmt = PromptFormat("chat", tokenizer)
    ordered = longest_first(items)
    lengths = [len(e["question"]) + len(e["context"]) for e in ordered]
    assert lengths == sorted(lengths, reverse=True) and ordered != items  # the order differs from the file's
    alone = {r["id"]: r["label_logprobs"] for r in score_labels(model, tokenizer, fmt, items, batch_size=1)}
    batched = {r["id"]: r["label_logprobs"] for r in score_labels(model, tokenizer, fmt, ordered, batch_size=2)}
    assert batched.keys() == alone.keys()
    for item_id, scores in alone.items():
        torch.testing.assert_close(batched[item_id], scores, atol=1e-4, rtol=1e-4)


def test_prefix_tuned_model_scores_through_the_full_path(tiny_llama, items):
    path = str(tiny_llama)
    tokenizer = load_tokenizer(path)
    model = get_peft_model(load_model(path), build_peft_config("prefix", "llama", num_virtual_tokens=4)).eval()
    fmt = PromptFormat("chat", tokenizer)
    with torch.no_grad():  # a random prefix, so that it visibly changes the scores
        for p in model.prompt_encoder.parameters():
            p.normal_(0, 1)

    def scores(m, batch_size):
        rows = list(score_labels(m, tokenizer, fmt, items, batch_size=batch_size))
        return torch.tensor([list(r["label_logprobs"].values()) for r in rows])

    batched = scores(model, 2)
    torch.testing.assert_close(batched, scores(model, 1), atol=1e-4, rtol=1e-4)  # right padding is harmless
    assert not torch.allclose(batched, scores(load_model(path).eval(), 2), atol=1e-3)  # the prefix is used


def test_generation_uses_beam_search_and_parses(tiny_llama, items):
    path = str(tiny_llama)
    model, tokenizer = load_model(path).eval(), load_tokenizer(path)
    rows = list(generate_answers(model, tokenizer, PromptFormat("chat", tokenizer), items[:2], batch_size=2,
                                 max_new_tokens=5))  # fmt: skip
    assert [r["id"] for r in rows] == [e["id"] for e in items[:2]]
    for row in rows:
        assert isinstance(row["generation"], str)
        assert row["prediction"] in ("yes", "no", "maybe", None)
