import pytest
import torch
from trl import SFTTrainer

from domainqa.arguments import TrainingArguments
from domainqa.data import load_task_data
from domainqa.families.causal_lm import AnswerLossSFTTrainer, build_peft_config, training_dataset
from domainqa.modeling import load_model, load_tokenizer
from domainqa.prompts import PromptFormat


@pytest.mark.parametrize(
    "model_fixture, fmt_name, peft", [("tiny_llama", "chat", "lora"), ("tiny_gpt2", "biogpt", "prefix")]
)
def test_answer_only_loss_equals_trls_loss(request, tmp_path, pqal_path, model_fixture, fmt_name, peft):
    path = str(request.getfixturevalue(model_fixture))
    tokenizer = load_tokenizer(path)
    dataset = training_dataset(load_task_data(str(pqal_path))["train"], PromptFormat(fmt_name, tokenizer), 4)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none")
    model_type = "llama" if fmt_name == "chat" else "gpt2"
    peft_config = build_peft_config(peft, model_type, num_virtual_tokens=4)
    trl_trainer = SFTTrainer(model=load_model(path), args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)  # fmt: skip
    ours = AnswerLossSFTTrainer(model=trl_trainer.model, args=args, train_dataset=dataset, processing_class=tokenizer)
    batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(4)])
    batch = {k: v.to(trl_trainer.args.device) for k, v in batch.items()}  # the Trainer moved the model there
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        expected = trl_trainer.compute_loss(trl_trainer.model, dict(batch))
        got = ours.compute_loss(ours.model, dict(batch))
        # With gradient accumulation the Trainer passes the label count of the whole accumulated batch.
        scaled = ours.compute_loss(ours.model, dict(batch), num_items_in_batch=torch.tensor(2 * answer_tokens))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled, expected / 2, atol=1e-5, rtol=1e-5)
