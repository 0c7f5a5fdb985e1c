"""Open-set scores: nearest training spike, AUROC, per-class Mahalanobis, energy; storage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bertgeom.model.openset import (
    METHODS,
    Detector,
    auroc,
    fit_arrays,
    load_detectors,
    method_scores,
    nearest_spike_distances,
    save_detectors,
    spike_index,
)

REF = "ACGTACGTACGTACGTACGT"


def _edit(seq: str, **at: str) -> str:
    s = list(seq)
    for pos, base in at.items():
        s[int(pos[1:])] = base
    return "".join(s)


def test_nearest_spike_counts_differences_over_read_columns():
    train = [_edit(REF, p2="T", p5="-"), _edit(REF, p10="C")]
    index = spike_index(train + train[:1], REF)  # duplicates are indexed once
    assert len(index["spike_indptr"]) == 3
    queries = [
        train[0],  # itself: 0
        _edit(REF, p2="T", p5="-", p7="A"),  # one more change: 1
        _edit(REF, p2="T", p5="N"),  # the deleted column not read: 0
        REF,  # the reference: 1 from the second training spike
        _edit(REF, p10="N", p11="G"),  # 10 unread; 11 differs: 1
        "N" * len(REF),  # nothing read: 0
    ]
    assert nearest_spike_distances(queries, index).tolist() == [0, 1, 0, 1, 1, 0]


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(1, 7, 60).astype(float)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(expected)
    assert auroc(np.array([2.0]), np.array([1.0])) == 1.0 and np.isnan(auroc(a[:0], b))


def test_class_mahalanobis_and_energy_score_far_points_higher(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    centres = np.array([[0.0, 0, 0, 0], [8, 0, 0, 0], [0, 8, 0, 0]])
    emb = centres[y] + rng.normal(0, 1, (600, 4))
    logits = np.eye(3)[y] * 6.0
    spikes = [REF] * 600
    detectors = {}
    for method in METHODS:
        arrays = fit_arrays(method, emb, y, 3, spikes, REF)
        near = method_scores(method, arrays, logits[:50], emb[:50], spikes[:50])
        far_logits = np.full((2, 3), 0.3)
        far = method_scores(method, arrays, far_logits, np.array([[4.0, 4, 9, -9]] * 2), [
            _edit(REF, p1="G", p3="A")] * 2)  # fmt: skip
        assert far.min() > np.quantile(near, 0.9), method
        detectors[method] = Detector(method, float(np.quantile(near, 0.99)), 0.5, arrays)
    save_detectors(detectors, "energy", str(tmp_path / "ood.npz"))
    again, default = load_detectors(str(tmp_path / "ood.npz"))
    assert default == "energy" and set(again) == set(METHODS)
    for method in METHODS:
        a = again[method].scores(logits[:5], emb[:5], spikes[:5])
        assert np.allclose(a, detectors[method].scores(logits[:5], emb[:5], spikes[:5]))
        assert again[method].threshold == detectors[method].threshold
