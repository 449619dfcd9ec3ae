"""Shared logic of train.py, infer.py, evaluate.py and augment/: data, prompts, models, metrics."""
