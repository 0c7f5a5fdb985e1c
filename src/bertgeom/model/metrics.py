"""Classification metrics and calibration measures (pure numpy, plus sklearn's ROC-AUC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    """One class, one-vs-rest."""

    label: str
    support: int
    precision: float
    recall: float
    specificity: float
    f1: float
    roc_auc: float | None  # None when the class is absent (or alone) in y_true


@dataclass(frozen=True)
class Reliability:
    """Reliability diagram bins over the top-class confidence (equal-width bins)."""

    bin_edges: np.ndarray  # (n_bins + 1,)
    confidence: np.ndarray  # (n_bins,) mean confidence, NaN for empty bins
    accuracy: np.ndarray  # (n_bins,) accuracy, NaN for empty bins
    count: np.ndarray  # (n_bins,)
    ece: float  # expected calibration error: sum_b (n_b / n) |acc_b - conf_b|


@dataclass(frozen=True)
class Metrics:
    """Everything ``evaluate`` reports about one set of predictions."""

    labels: tuple[str, ...]
    n: int
    accuracy: float
    macro_f1: float
    micro_f1: float
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray  # (true, predicted) counts
    reliability: Reliability
    nll: float


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def f1_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    pred = cm.sum(axis=0).astype(float)
    true = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    present = cm.sum(axis=1) > 0
    return float(f1_scores(cm)[2][present].mean()) if present.any() else 0.0


def reliability(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> Reliability:
    """Reliability bins and expected calibration error of the top-class probability."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / count, np.nan)
        mean_acc = np.where(count > 0, sum_acc / count, np.nan)
    ece = float(np.nansum(count * np.abs(mean_acc - mean_conf)) / max(len(conf), 1))
    return Reliability(edges, mean_conf, mean_acc, count, ece)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], n_bins: int = 15
) -> Metrics:
    """Accuracy, macro/micro F1, per-class precision/recall/specificity/F1/ROC-AUC,
    confusion matrix, reliability and NLL of predicted probabilities ``probs`` (n, C)."""
    from sklearn.metrics import roc_auc_score

    n_classes = len(labels)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    precision, recall, f1 = f1_scores(cm)
    total = cm.sum()
    per_class = []
    for c in range(n_classes):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        tn = total - tp - fp - fn
        positives = y_true == c
        auc = None
        if 0 < positives.sum() < len(y_true):
            auc = float(roc_auc_score(positives, probs[:, c]))
        per_class.append(
            ClassMetrics(
                label=labels[c],
                support=int(cm[c].sum()),
                precision=float(precision[c]),
                recall=float(recall[c]),
                specificity=float(tn / (tn + fp)) if tn + fp else 0.0,
                f1=float(f1[c]),
                roc_auc=auc,
            )
        )
    present = cm.sum(axis=1) > 0
    eps = 1e-12
    nll = float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], eps, 1)).mean())
    return Metrics(
        labels=tuple(labels),
        n=len(y_true),
        accuracy=float(np.diag(cm).sum() / max(total, 1)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        micro_f1=float(np.diag(cm).sum() / max(total, 1)),  # = accuracy for single-label
        per_class=tuple(per_class),
        confusion=cm,
        reliability=reliability(probs, y_true, n_bins),
        nll=nll,
    )


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of ``logits / temperature`` (stable)."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
