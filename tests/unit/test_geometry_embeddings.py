"""Per-layer embedding distribution measures (science.md §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from bertgeom.errors import InputError
from bertgeom.geometry.embeddings import (
    anisotropy,
    kmeans_ari,
    knn_accuracy,
    normality_pvalues,
    one_vs_all_accuracy,
    pca_summary,
    probe_accuracy,
    silhouette_by_layer,
    summed_output_histogram,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """One BLAS/OpenMP thread: the tiny fits here only lose time to thread start-up."""
    with threadpool_limits(1):
        yield


def data(seed=0, per_class=20, d=6):
    """Layer 0: noise; layer 1: three well-separated class clusters."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    noise = rng.normal(size=(len(labels), d))
    centres = np.eye(3, d) * 10
    separated = centres[labels] + rng.normal(size=(len(labels), d))
    return np.stack([noise, separated], axis=1), labels  # (genome, layer, d_model)


def test_separated_layer_scores_high_and_noise_layer_low():
    x, y = data()
    sil = silhouette_by_layer(x, y)
    assert sil[1] > 0.6 and abs(sil[0]) < 0.2
    knn, probe = knn_accuracy(x, y), probe_accuracy(x, y)
    assert knn[1] == 1.0 and probe[1] == 1.0
    assert knn[0] < 0.7 and probe[0] < 0.7
    ari = kmeans_ari(x, y)
    assert ari[1] == pytest.approx(1.0) and ari[0] < 0.3
    ova = one_vs_all_accuracy(x, y)
    assert ova.classes.tolist() == [0, 1, 2] and ova.accuracy.shape == (2, 3)
    assert (ova.balanced_accuracy[1] == 1.0).all() and (ova.balanced_accuracy[0] < 0.8).all()


def test_results_are_seeded():
    x, y = data()
    assert np.array_equal(knn_accuracy(x, y, seed=3), knn_accuracy(x, y, seed=3))
    assert np.array_equal(anisotropy(x, seed=3), anisotropy(x, seed=3))


def test_pca_summary():
    x, _ = data()
    pca = pca_summary(x, n_components=4)
    assert pca.explained_variance_ratio.shape == (2, 4) and pca.coordinates.shape == (2, 60, 2)
    assert (np.diff(pca.explained_variance_ratio, axis=1) <= 1e-12).all()
    assert pca.explained_variance_ratio[1, :2].sum() > 0.8  # three clusters span two directions


def test_anisotropy():
    one_way = np.ones((10, 1, 4)) * np.arange(1, 11)[:, None, None]
    assert anisotropy(one_way)[0] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert abs(anisotropy(rng.normal(size=(500, 1, 50)))[0]) < 0.02


def test_normality():
    rng = np.random.default_rng(1)
    gauss = rng.normal(size=(400, 1, 3))
    skewed = rng.exponential(size=(400, 1, 3)) ** 3
    assert normality_pvalues(gauss).min() > 0.001
    assert normality_pvalues(skewed).max() < 1e-6
    assert normality_pvalues(gauss[:10]) is None


def test_cross_validation_needs_two_genomes_per_class():
    x, y = data()
    y = y.copy()
    y[0] = 7
    with pytest.raises(InputError, match="class 7"):
        probe_accuracy(x, y)


def test_summed_output_histogram_streams():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(6, 5, 4, generator=g)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[2, 3:] = False
    edges = torch.linspace(-3, 3, 7)
    whole = summed_output_histogram(y, mask, edges)
    halves = summed_output_histogram(y[:3], mask[:3], edges).combine(
        summed_output_histogram(y[3:], mask[3:], edges)
    )
    assert torch.equal(whole.counts, halves.counts)
    assert int(whole.counts.sum() + whole.below + whole.above) == 24
    total = (y * mask[..., None]).sum(1).flatten().numpy()
    expected, _ = np.histogram(total[(total >= -3) & (total <= 3)], bins=edges.numpy())
    assert whole.counts.tolist() == expected.tolist()
