"""Fine-tune small language models for closed-label domain QA on LLM-refined data (PubMedQA first).

`predict` scores one question with a trained run; the scripts (train.py, infer.py, evaluate.py) share the rest.
"""


def predict(model: str, question: str, context: str, device: str = "cpu") -> dict:
    """The label scores of one item by a trained run folder or Hub id (domainqa.api.predict)."""
    from .api import predict as predict_one  # torch and transformers load only when a prediction is asked

    return predict_one(model, question, context, device)
