"""Entropies, singular values and ranks (science.md §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bertgeom.geometry.spectra import (
    eigen_entropy_compat,
    histogram_entropy,
    row_entropy,
    spectrum,
    von_neumann_entropy,
)


def padded(blocks, p):
    """Stack (..., n, n) or (..., n, d) blocks into a zero-padded batch and a row mask."""
    first = blocks[0]
    cols = p if first.shape[-1] == first.shape[-2] else first.shape[-1]
    out = torch.zeros((len(blocks), *first.shape[:-2], p, cols), dtype=first.dtype)
    mask = torch.zeros(len(blocks), p, dtype=torch.bool)
    for b, x in enumerate(blocks):
        n = x.shape[-2]
        out[b, ..., :n, : x.shape[-1]] = x
        mask[b, :n] = True
    return out, mask


def test_uniform_rows_have_entropy_ln_n_and_padding_is_ignored():
    n, p = 7, 10
    attn = torch.zeros(2, 3, p, p)
    attn[0] = 1.0 / p
    attn[1, :, :n, :n] = 1.0 / n
    attn[1, :, n:, :] = 0.3  # junk in PAD rows
    mask = torch.ones(2, p, dtype=torch.bool)
    mask[1, n:] = False
    e = row_entropy(attn, mask)
    assert torch.allclose(e.values[0], torch.full((3,), math.log(p)))
    assert torch.allclose(e.values[1], torch.full((3,), math.log(n)))
    assert torch.allclose(e.normalised, torch.ones(2, 3))
    one_hot = torch.eye(5)[None, None]
    assert float(row_entropy(one_hot).values) == pytest.approx(0.0, abs=1e-7)


def test_von_neumann_entropy():
    n = 6
    assert float(von_neumann_entropy(torch.eye(n)[None])) == pytest.approx(math.log(n), rel=1e-6)
    v = torch.randn(n, 1, dtype=torch.float64)
    assert float(von_neumann_entropy((v @ v.T)[None])) == pytest.approx(0.0, abs=1e-7)
    # A Aᵀ for uniform attention is rank one; for the identity it is I
    uniform = torch.full((1, n, n), 1.0 / n)
    assert float(von_neumann_entropy(uniform @ uniform.transpose(-1, -2))) < 1e-5
    eye, mask = padded([torch.eye(4), torch.eye(6)], 9)
    assert torch.allclose(von_neumann_entropy(eye, mask), torch.tensor([math.log(4), math.log(6)]))


def test_histogram_entropy_matches_numpy():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(2, 8, 8, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    got = histogram_entropy(m, mask)
    for b, n in enumerate([8, 5]):
        counts, _ = np.histogram(m[b, :n, :n].numpy().ravel(), bins=20)
        p = counts[counts > 0] / counts.sum()
        assert float(got[b]) == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-9)
    assert float(histogram_entropy(torch.ones(1, 4, 4))) == 0.0


def test_eigen_entropy_compat():
    lam = torch.tensor([3.0, -4.0, 0.0], dtype=torch.float64)
    p = lam.abs() / 5.0
    expected = -float(torch.special.xlogy(p, p).sum())
    assert float(eigen_entropy_compat(torch.diag(lam)[None])) == pytest.approx(expected)


def test_ranks_of_known_matrices():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(10, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, 8, generator=g, dtype=torch.float64)
    s = spectrum((u @ w)[None])
    assert int(s.numerical_rank) == 3
    assert 1.0 <= float(s.effective_rank) <= 3.0 + 1e-9
    eye = spectrum(torch.eye(5, dtype=torch.float64)[None])
    assert float(eye.gram_entropy) == pytest.approx(math.log(5))
    assert int(eye.numerical_rank) == 5
    assert float(eye.effective_rank) == pytest.approx(5.0)
    assert float(eye.stable_rank) == pytest.approx(5.0)
    one = spectrum(torch.ones(1, 4, 6))
    assert int(one.numerical_rank) == 1 and float(one.stable_rank) == pytest.approx(1.0)
    assert float(one.effective_rank) == pytest.approx(1.0, abs=1e-6)
    zero = spectrum(torch.zeros(1, 3, 3))
    assert int(zero.numerical_rank) == 0
    assert float(zero.effective_rank) == 0.0 and float(zero.stable_rank) == 0.0
    s_max = float(torch.linalg.matrix_norm(u @ w, 2))
    assert float(s.tolerance) == pytest.approx(float(torch.finfo(torch.float64).eps) * 10 * s_max)


def test_batched_equals_one_by_one():
    g = torch.Generator().manual_seed(2)
    lengths = [5, 9, 7]
    rows = [torch.randn(2, n, 4, generator=g, dtype=torch.float64) for n in lengths]
    squares = [torch.randn(2, n, n, generator=g, dtype=torch.float64).softmax(-1) for n in lengths]
    x, mask = padded(rows, 9)
    a, _ = padded(squares, 9)
    batch_rows, batch_sq = spectrum(x, mask), spectrum(a, mask, square=True)
    ent = row_entropy(a, mask, drop_special=True)
    for b, n in enumerate(lengths):
        one = spectrum(rows[b][None])
        assert torch.allclose(batch_rows.effective_rank[b], one.effective_rank[0])
        assert torch.equal(batch_rows.numerical_rank[b], one.numerical_rank[0])
        sq = spectrum(squares[b][None])
        assert torch.allclose(batch_sq.singular_values[b, :, :n], sq.singular_values[0])
        assert torch.allclose(batch_sq.stable_rank[b], sq.stable_rank[0])
        assert torch.allclose(
            ent.values[b], row_entropy(squares[b][None], drop_special=True).values[0]
        )
        assert torch.allclose(histogram_entropy(a, mask)[b], histogram_entropy(squares[b][None])[0])
        assert torch.allclose(
            eigen_entropy_compat(a, mask)[b], eigen_entropy_compat(squares[b][None])[0], atol=1e-9
        )


def test_gram_entropy_equals_von_neumann_of_gram():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64).softmax(-1)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 6:] = False
    via_svd = spectrum(a, mask, square=True).gram_entropy
    masked = a * mask[:, None, :, None] * mask[:, None, None, :]
    direct = von_neumann_entropy(masked @ masked.transpose(-1, -2), mask)
    assert torch.allclose(via_svd, direct, atol=1e-9)
