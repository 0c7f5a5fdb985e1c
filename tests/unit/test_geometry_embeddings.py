"""Per-layer embedding distribution measures (science.md §6)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from bertgeom.errors import InputError
from bertgeom.geometry.embeddings import (
    MIN_MAP_GENOMES,
    anisotropy,
    import_umap,
    kmeans_ari,
    knn_accuracy,
    nonlinear_maps,
    normality_pvalues,
    one_vs_all_accuracy,
    pca_summary,
    probe_accuracy,
    silhouette_by_layer,
    summed_output_histogram,
    tsne_perplexity,
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


def test_tsne_keeps_separated_clusters_apart():
    """Three Gaussian clusters in 64-D (layer 1) stay three clusters in the 2-D t-SNE map;
    pure noise (layer 0) does not turn into classes."""
    x, y = data(per_class=31, d=64)  # 93 genomes: the perplexity 30 is used unclipped
    maps = nonlinear_maps(x, "tsne", seed=1)
    assert maps.method == "tsne" and maps.note == "" and maps.parameter == 30.0
    assert maps.coordinates.shape == (2, 93, 2)  # (layer, genome, 2)
    flat = maps.coordinates.transpose(1, 0, 2)  # (genome, layer, 2)
    assert np.isfinite(flat).all()
    knn, sil = knn_accuracy(flat, y), silhouette_by_layer(flat, y)
    assert knn[1] == 1.0 and sil[1] > 0.7
    assert knn[0] < 0.7 and sil[0] < 0.2


def test_nonlinear_maps_are_seeded():
    x, _ = data(per_class=10, d=16)
    a, b = nonlinear_maps(x, "tsne", seed=3), nonlinear_maps(x, "tsne", seed=3)
    assert np.array_equal(a.coordinates, b.coordinates)


def test_perplexity_is_clipped_for_small_samples():
    assert tsne_perplexity(30.0, 91) == 30.0
    assert tsne_perplexity(30.0, 12) == pytest.approx(11 / 3)
    assert tsne_perplexity(3.0, 12) == 3.0
    x, _ = data(per_class=4, d=8)  # 12 genomes: perplexity 30 would be refused by t-SNE
    maps = nonlinear_maps(x, "tsne", seed=0, perplexity=30.0)
    assert maps.coordinates.shape == (2, 12, 2)
    assert maps.parameter == pytest.approx(11 / 3)
    assert maps.note == "tsne: perplexity 30 clipped to 3.67 for 12 genomes"


def test_too_few_genomes_are_skipped_with_a_note():
    x, _ = data(per_class=1, d=8)  # 3 genomes
    maps = nonlinear_maps(x, "tsne")
    assert maps.coordinates is None
    assert maps.note == f"tsne: skipped, 3 genomes (a map needs at least {MIN_MAP_GENOMES})"
    five = np.random.default_rng(0).normal(size=(MIN_MAP_GENOMES, 1, 4))
    assert nonlinear_maps(five, "tsne").coordinates.shape == (1, MIN_MAP_GENOMES, 2)


def test_a_layer_without_spread_maps_to_the_origin():
    x, _ = data(per_class=3, d=8)
    x[:, 0] = 1.5  # every genome the same vector (the [CLS] embedding)
    maps = nonlinear_maps(x, "tsne")
    assert (maps.coordinates[0] == 0).all() and maps.coordinates[1].std() > 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        nonlinear_maps(np.zeros((6, 1, 2)), "isomap")


def test_umap_absent_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    assert import_umap() is None
    x, _ = data(per_class=4, d=8)
    maps = nonlinear_maps(x, "umap")
    assert maps.coordinates is None
    assert "umap-learn is not installed" in maps.note and "bertgeom[maps]" in maps.note


def test_umap_when_installed_separates_and_is_seeded():
    if import_umap() is None:
        pytest.skip("umap-learn is not installed (optional extra bertgeom[maps])")
    x, y = data(per_class=30, d=64)
    a, b = nonlinear_maps(x, "umap", seed=2), nonlinear_maps(x, "umap", seed=2)
    assert a.coordinates.shape == (2, 90, 2) and np.array_equal(a.coordinates, b.coordinates)
    assert knn_accuracy(a.coordinates.transpose(1, 0, 2), y)[1] == 1.0
    small = nonlinear_maps(x[:6], "umap", n_neighbors=15)
    assert small.parameter == 5 and "n_neighbors 15 clipped to 5" in small.note
    # groups of near-identical genomes: UMAP's graph falls apart; its warning becomes a note
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 40, size=10)
    groups = np.repeat(rng.normal(size=(10, 1, 16)) * 5, sizes, 0)
    groups += rng.normal(size=groups.shape) * 1e-3
    apart = nonlinear_maps(groups, "umap")
    assert apart.note == (
        "umap: Graph is not fully connected, spectral embedding may not work as expected "
        "(1 of 1 layers)"
    )
    assert np.isfinite(apart.coordinates).all()
