"""PubMedQA macro-F1: the unweighted mean over decision labels of each label's F1 score.

A local ``evaluate`` metric module: ``evaluate.load("<this folder>")`` reads it from disk,
so it works offline (``evaluate.load("f1")`` would fetch its script from the Hub, and
needs scikit-learn). It computes what the official PubMedQA evaluation script computes
with ``sklearn.metrics.f1_score(truth, preds, average="macro")``:

- the labels averaged over are those occurring in the references or the predictions
  (scikit-learn's default), or ``labels`` when given;
- for each label, with TP/FP/FN its true positives, false positives and false
  negatives, ``F1 = 2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and
  recall); 0 for a label given in ``labels`` that occurs in neither list
  (``2 TP + FP + FN = 0``; scikit-learn's ``zero_division=0``).
"""

import datasets
import evaluate

DECISIONS = ("yes", "no", "maybe")

_DESCRIPTION = """
Macro-averaged F1 of PubMedQA decisions ("yes", "no", "maybe"), as the official PubMedQA evaluation computes it.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted decisions, each "yes", "no" or "maybe".
    references (`list` of `str`): gold decisions, same length and labels.
    labels (`list` of `str`, optional): the labels to average over; default: those occurring in
        the predictions or the references.

Returns:
    macro_f1 (`float`): in [0, 1].
    f1_per_label (`dict`): label -> F1 of that label, for the averaged labels.

Examples:
    >>> metric = evaluate.load("lmcore/metrics/pubmedqa_f1")
    >>> metric.compute(predictions=["no", "no", "no"], references=["yes", "no", "no"])
    {'macro_f1': 0.4, 'f1_per_label': {'no': 0.8, 'yes': 0.0}}
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
class PubmedqaF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=[
                "https://github.com/pubmedqa/pubmedqa/blob/master/evaluation.py",
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html",
            ],
        )

    def _compute(self, predictions, references, labels=None):
        if not references:
            raise ValueError("no predictions given; pass at least one prediction and its reference")
        present = set(predictions) | set(references)
        labels = sorted(present) if labels is None else list(labels)
        unknown = sorted((present | set(labels)) - set(DECISIONS))
        if unknown or not labels:
            raise ValueError(f"PubMedQA decisions and labels must be among {DECISIONS}, got {unknown or labels}")
        f1_per_label = {}
        for label in labels:
            true_positives = sum(p == label and r == label for p, r in zip(predictions, references))
            false_positives = sum(p == label and r != label for p, r in zip(predictions, references))
            false_negatives = sum(p != label and r == label for p, r in zip(predictions, references))
            denominator = 2 * true_positives + false_positives + false_negatives
            f1_per_label[label] = 2 * true_positives / denominator if denominator else 0.0
        return {"macro_f1": sum(f1_per_label.values()) / len(labels), "f1_per_label": f1_per_label}
