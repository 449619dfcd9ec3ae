"""Shared fixtures: the real PubMedQA file from ../shared, tiny randomly initialised models, a fake Hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from domainqa.embedded import embedded_model_path
from tests.fake_hub import serve_fake_hub
from tests.helpers import REPO

SHARED = Path(os.environ.get("DOMAINQA_SHARED", REPO.parent / "shared"))
PQAL = SHARED / "pubmedqa" / "ori_pqal.json"
GROUND_TRUTH = SHARED / "pubmedqa" / "test_ground_truth.json"


@pytest.fixture(scope="session")
def pqal_path() -> Path:
    if not PQAL.is_file():
        pytest.fail(f"PubMedQA file not found at {PQAL}; set DOMAINQA_SHARED to the folder holding pubmedqa/")
    return PQAL


@pytest.fixture(scope="session")
def ground_truth_path() -> Path:
    return GROUND_TRUTH


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real embedded SmolLM2-135M-Instruct, converted once into the cache."""
    return embedded_model_path()


def make_tiny_tokenizer(chat_template_source: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a 2,000-token vocabulary trained on the PubMedQA text, with
    SmolLM2's ChatML template. A small vocabulary keeps tiny models' output layer, and so the
    tests, fast."""
    texts = [
        f"{item['QUESTION']} {' '.join(item['CONTEXTS'])} {item['LONG_ANSWER']}"
        for item in json.loads(PQAL.read_text(encoding="utf-8")).values()
    ]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts + ["the answer to the question given the context is yes. no. maybe."],
        trainers.BpeTrainer(
            vocab_size=2000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    template = AutoTokenizer.from_pretrained(chat_template_source).chat_template
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=template,
    )


def make_tiny_model(kind: str, folder: Path, chat_template_source: Path) -> Path:
    """Save a randomly initialised tiny causal LM (`llama` or `gpt2`) with a small tokenizer."""
    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer(chat_template_source)
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if kind == "llama":
        config = LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=2048, tie_word_embeddings=True, **common,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=2048, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm2_path) -> Path:
    return make_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"), smollm2_path)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, smollm2_path) -> Path:
    """A GPT-2/BioGPT-style model (learned positions, fused attention) for the plain-text format."""
    return make_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2"), smollm2_path)


def make_tiny_bert(folder: Path) -> Path:
    """Save a randomly initialised tiny BERT encoder (no classification head, like a pretrained checkpoint)
    with a 2,000-token WordPiece vocabulary trained on the PubMedQA text and BERT's pair layout
    ([CLS] question [SEP] context [SEP])."""
    torch.manual_seed(0)
    texts = [f"{item['QUESTION']} {' '.join(item['CONTEXTS'])}" for item in json.loads(PQAL.read_text()).values()]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=128,
    )  # fmt: skip
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """An encoder for the sequence-classification path; inputs are cut at 128 tokens to keep tests fast."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def fake_hub(monkeypatch):
    """A fake Hub on 127.0.0.1 that huggingface_hub's client talks to; yields its handler (requests, repos)."""
    with serve_fake_hub() as (handler, endpoint):
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield handler
