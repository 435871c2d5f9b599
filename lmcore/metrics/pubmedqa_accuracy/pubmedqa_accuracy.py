"""PubMedQA accuracy: the share of questions whose predicted decision (yes/no/maybe) equals the gold one.

A local ``evaluate`` metric module: ``evaluate.load("<this folder>")`` reads it from disk,
so it works offline (``evaluate.load("accuracy")`` would fetch its script from the Hub).
It computes what the official PubMedQA evaluation script computes with
``sklearn.metrics.accuracy_score(truth, preds)``, on the decision strings themselves.
"""

import datasets
import evaluate

DECISIONS = ("yes", "no", "maybe")

_DESCRIPTION = """
Accuracy of PubMedQA decisions: (number of predictions equal to their reference) / (number of questions).
Predictions and references are the strings "yes", "no" or "maybe".
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted decisions, each "yes", "no" or "maybe".
    references (`list` of `str`): gold decisions, same length and labels.

Returns:
    accuracy (`float`): in [0, 1].

Examples:
    >>> metric = evaluate.load("lmcore/metrics/pubmedqa_accuracy")
    >>> metric.compute(predictions=["yes", "no", "no"], references=["yes", "maybe", "no"])
    {'accuracy': 0.6666666666666666}
"""

_CITATION = """
@inproceedings{jin2019pubmedqa,
  title={PubMedQA: A Dataset for Biomedical Research Question Answering},
  author={Jin, Qiao and Dhingra, Bhuwan and Liu, Zhengping and Cohen, William and Lu, Xinghua},
  booktitle={EMNLP-IJCNLP},
  pages={2567--2577},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PubmedqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/pubmedqa/pubmedqa/blob/master/evaluation.py"],
        )

    def _compute(self, predictions, references):
        _check_labels(predictions, references)
        correct = sum(prediction == reference for prediction, reference in zip(predictions, references))
        return {"accuracy": correct / len(references)}


def _check_labels(predictions, references):
    if not references:
        raise ValueError("no predictions given; pass at least one prediction and its reference")
    unknown = sorted((set(predictions) | set(references)) - set(DECISIONS))
    if unknown:
        raise ValueError(f"PubMedQA decisions must be one of {DECISIONS}, got {unknown}")
