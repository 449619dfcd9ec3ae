"""LLM-generated training data for PubMedQA, or any closed-label QA data set of one's own (split custom): rewriteQA,
newQA and combinedQA (Dr. LLaMA, Guo et al. 2023).

`python -m augment RECIPE.yaml [--flag value ...]` runs one augmentation; `python -m augment.merge` joins
several runs (for example two LLMs) into one training set. See docs/augment.md.
"""

from .prompts import PROMPT_VERSION

__all__ = ["PROMPT_VERSION"]
