"""Metrics, temperature scaling and the OOD detector on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.model.calibrate import fit_temperature
from bertgeom.model.metrics import classification_metrics, macro_f1, reliability, softmax
from bertgeom.model.openset import (
    Detector,
    fit_arrays,
    fit_threshold,
    load_detectors,
    save_detectors,
)


def test_perfect_predictions():
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m.accuracy == 1.0 and m.macro_f1 == 1.0 and m.micro_f1 == 1.0
    assert (m.confusion == np.diag([2, 2, 2])).all()
    assert all(c.roc_auc == 1.0 and c.specificity == 1.0 for c in m.per_class)


def test_known_confusion():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    probs = np.eye(3)[y_pred]
    m = classification_metrics(y_true, probs, ["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6)
    a, b, c = m.per_class
    assert (a.precision, a.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (b.precision, b.recall) == (pytest.approx(2 / 3), 1.0)
    assert c.f1 == 0.0 and c.recall == 0.0
    assert a.specificity == pytest.approx(2 / 3)  # tn 2 of (tn 2 + fp 1)
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(m.macro_f1)


def test_ece_is_zero_when_confidence_equals_accuracy():
    rng = np.random.default_rng(0)
    n = 20000
    conf = 0.8
    y = rng.integers(0, 2, n)
    correct = rng.random(n) < conf
    pred = np.where(correct, y, 1 - y)
    probs = np.where(np.eye(2)[pred] == 1, conf, 1 - conf)
    assert reliability(probs, y).ece < 0.01
    overconfident = np.where(np.eye(2)[pred] == 1, 0.99, 0.01)
    assert reliability(overconfident, y).ece == pytest.approx(0.19, abs=0.01)


def test_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(20000, 4))
    p_true = softmax(logits, 2.5)
    y = np.array([rng.choice(4, p=p) for p in p_true])
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.05)
    # calibration never changes the argmax
    assert (softmax(logits, 2.5).argmax(1) == logits.argmax(1)).all()


def test_temperature_is_one_when_validation_is_perfect():
    logits = np.array([[3.0, 0.0], [0.0, 2.0]])
    assert fit_temperature(logits, np.array([0, 1])) == 1.0


def test_ood_flags_far_points_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0, 0], [10, 0, 0]])
    y = rng.integers(0, 2, 2000)
    emb = centres[y] + rng.normal(0, 1, (2000, 3))
    logits = np.eye(2)[y] * 5.0
    arrays = fit_arrays("mahalanobis", emb, y, 2, [], "ACGT")
    ood = Detector("mahalanobis", 0.0, 0.5, arrays)
    scores = ood.scores(logits, emb, [])
    ood = Detector("mahalanobis", fit_threshold(scores, np.ones(len(y), bool), 0.999), 0.5, arrays)
    assert ood.flag(scores, np.ones(len(emb))).mean() < 0.01
    far = np.array([[5.0, 30, 0], [0, 0, -40]])
    far_scores = ood.scores(np.zeros((2, 2)), far, [])
    assert ood.flag(far_scores, np.ones(2)).all()
    near = ood.scores(np.zeros((2, 2)), centres, [])
    assert ood.flag(near, np.array([0.4, 0.9])).tolist() == [True, False]  # low confidence
    save_detectors({"mahalanobis": ood}, "mahalanobis", str(tmp_path / "ood.npz"))
    detectors, default = load_detectors(str(tmp_path / "ood.npz"))
    assert default == "mahalanobis" and detectors[default].threshold == ood.threshold
    assert np.allclose(detectors[default].scores(np.zeros((2, 2)), far, []), far_scores)
