"""Fine-tuning pretrained Hugging Face causal LMs on PubMedQA: data builders and SFT / LoRA / DPO recipes."""

from lmcore.finetune.data import (
    DEFAULT_QA_PROMPT,
    QA_PROMPT_FORMATS,
    build_lm_dataset,
    build_preference_dataset,
    build_qa_dataset,
    qa_completion,
    qa_prompt,
    wrong_decision,
)
from lmcore.finetune.recipes import (
    METHODS,
    MODES,
    FinetuneResult,
    FinetuneSettings,
    default_learning_rate,
    finetune,
    linear_module_names,
)

__all__ = [
    "DEFAULT_QA_PROMPT",
    "METHODS",
    "MODES",
    "QA_PROMPT_FORMATS",
    "FinetuneResult",
    "FinetuneSettings",
    "build_lm_dataset",
    "build_preference_dataset",
    "build_qa_dataset",
    "default_learning_rate",
    "finetune",
    "linear_module_names",
    "qa_completion",
    "qa_prompt",
    "wrong_decision",
]
