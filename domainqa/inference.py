"""Label scoring and the paper's beam-search generation, batched. Both yield one row per example
as soon as its batch is done, so callers can save progress as they go."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import torch

from .data import Example
from .prompts import PromptFormat, parse_answer


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def longest_first(examples: list[Example]) -> list[Example]:
    """The examples by input length, longest first: consecutive batches then hold items of similar length, so
    little of each is padding, and a batch too large for the device fails at the start rather than the end."""
    return sorted(examples, key=lambda e: len(e["question"]) + len(e["context"]), reverse=True)


def _common_prefix_length(sequences: list[list[int]]) -> int:
    length = 0
    for column in zip(*sequences, strict=False):
        if any(token != column[0] for token in column):
            break
        length += 1
    return length


def _label_token_ids(tokenizer, fmt: PromptFormat, example: Example) -> tuple[list[int], list[list[int]]]:
    """Token ids of the context shared by the labels' answers, and of each answer's continuation.

    Tokenizing each full text and cutting at the longest common prefix gives exactly the tokens
    the model saw in training, whatever the tokenizer does at the boundary."""
    context = fmt.scoring_context(example)
    full = [tokenizer(context + fmt.label_text(label))["input_ids"] for label in fmt.labels]
    shared = min(_common_prefix_length(full), min(len(ids) for ids in full) - 1)
    return full[0][:shared], [ids[shared:] for ids in full]


def label_token_ids(tokenizer, fmt: PromptFormat, example: Example) -> dict[str, int]:
    """The first token of each label's answer after the lead-in: the token that carries the decision."""
    _, continuations = _label_token_ids(tokenizer, fmt, example)
    first = {label: ids[0] for label, ids in zip(fmt.labels, continuations, strict=True)}
    if len(set(first.values())) < len(fmt.labels):
        raise ValueError(f"the labels' answers start with the same token for this tokenizer: {first}")
    return first


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _positions(mask: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0) + (offset if isinstance(offset, int) else offset[:, None])


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward can skip the vocabulary head at positions nobody reads (most causal LMs
    in transformers can; a PEFT wrapper passes the argument on to its base model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.inference_mode()
def _score_batch_with_shared_cache(model, prefixes: list[list[int]], continuations: list[list[list[int]]], pad_id: int):
    """Log-likelihood of each continuation: one forward over the shared contexts, then one small
    forward over all continuations on top of the context cache repeated per label."""
    device = model.device
    num_labels = len(continuations[0])
    ids, mask = _pad(prefixes, pad_id, left=True)
    ids, mask = ids.to(device), mask.to(device)
    # Only the last position's logits are read: computing the vocabulary head at every prompt position
    # (8 x 400 x 49k for SmolLM2) would cost a large share of the forward and ~600 MB of memory.
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True, **keep)
    first_logprobs = out.logits[:, -1].float().log_softmax(-1)  # predicts each continuation's first token
    cache = out.cache
    cache.batch_repeat_interleave(num_labels)

    flat = [c for per_example in continuations for c in per_example]  # example-major, label-minor
    scores = torch.stack([first_logprobs[i // num_labels, c[0]] for i, c in enumerate(flat)])
    tails = [c[:-1] for c in flat]  # inputs whose logits predict tokens 1.. of each continuation
    if max(len(t) for t in flat) > 1:
        tail_ids, tail_mask = _pad([t if t else [pad_id] for t in tails], pad_id, left=False)
        tail_ids, tail_mask = tail_ids.to(device), tail_mask.to(device)
        full_mask = torch.cat([mask.repeat_interleave(num_labels, 0), tail_mask], dim=1)
        offset = mask.sum(-1).repeat_interleave(num_labels)
        logits = model(
            input_ids=tail_ids,
            attention_mask=full_mask,
            position_ids=_positions(tail_mask, offset),
            cache=cache,
            use_cache=True,
        ).logits.float()
        logprobs = logits.log_softmax(-1)
        for i, c in enumerate(flat):
            for j in range(1, len(c)):
                scores[i] += logprobs[i, j - 1, c[j]]
    return scores.view(len(prefixes), num_labels)


@torch.inference_mode()
def _score_batch_full(model, prefixes: list[list[int]], continuations: list[list[list[int]]], pad_id: int):
    """Same scores from one forward over every context+answer (for prefix tuning, whose virtual
    tokens own the cache)."""
    device = model.device
    num_labels = len(continuations[0])
    rows = [p + c for p, per_example in zip(prefixes, continuations, strict=True) for c in per_example]
    ids, mask = _pad(rows, pad_id, left=False)
    logprobs = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
    scores = torch.zeros(len(rows), device=device)
    for i, (row, cont) in enumerate(zip(rows, (c for pe in continuations for c in pe), strict=True)):
        start = len(row) - len(cont)
        for j, token in enumerate(cont):
            scores[i] += logprobs[i, start + j - 1, token]
    return scores.view(len(prefixes), num_labels)


def _uses_virtual_tokens(model) -> bool:
    config = getattr(model, "peft_config", None)
    return bool(config) and any(c.is_prompt_learning for c in config.values())


def score_labels(model, tokenizer, fmt: PromptFormat, examples: list[Example], batch_size: int = 8) -> Iterator[dict]:
    """For each example, the log-likelihood of each label's answer (the labels of `fmt`) and the most likely
    label."""
    pad_id = tokenizer.pad_token_id
    score_batch = _score_batch_full if _uses_virtual_tokens(model) else _score_batch_with_shared_cache
    for batch in batches(examples, batch_size):
        encoded = [_label_token_ids(tokenizer, fmt, ex) for ex in batch]
        scores = score_batch(model, [p for p, _ in encoded], [c for _, c in encoded], pad_id)
        for example, row in zip(batch, scores.tolist(), strict=True):
            best = fmt.labels[max(range(len(fmt.labels)), key=row.__getitem__)]
            yield {"id": example["id"], "prediction": best, "label_logprobs": dict(zip(fmt.labels, row, strict=True))}


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    fmt: PromptFormat,
    examples: list[Example],
    batch_size: int = 8,
    num_beams: int = 5,
    repetition_penalty: float = 2.0,
    max_new_tokens: int = 32,
) -> Iterator[dict]:
    """The paper's decoding: beam search (5 beams) with repetition penalty 2.0, no sampling. The paper also
    reports a temperature of 0.8, which beam search without sampling never reads, so there is no such setting."""
    tokenizer.padding_side = "left"  # generation continues from the last real token
    for batch in batches(examples, batch_size):
        encoded = tokenizer([fmt.prompt(ex) for ex in batch], return_tensors="pt", padding=True).to(model.device)
        output = model.generate(
            **encoded,
            num_beams=num_beams,
            do_sample=False,
            repetition_penalty=repetition_penalty,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        for example, text in zip(batch, texts, strict=True):
            yield {"id": example["id"], "generation": text, "prediction": parse_answer(text, fmt.labels)}
