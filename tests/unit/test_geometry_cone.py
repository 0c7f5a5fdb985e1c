"""Cone index invariants (science.md §3)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.geometry.cone import ConeIndex, cone_index, cone_sums, set_cone_index


def rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def test_identical_rows_give_n():
    x = torch.tensor([1.0, 2.0, -3.0]).repeat(7, 1)
    c = set_cone_index(x)
    assert float(c.index) == pytest.approx(7, rel=1e-6)
    assert float(c.normalised) == pytest.approx(1.0, rel=1e-6)
    assert int(c.count) == 7 and int(c.n_zero) == 0


def test_orthonormal_rows_give_sqrt_n():
    x = rotation(6, 0)[:5]
    assert float(set_cone_index(x).index) == pytest.approx(math.sqrt(5), rel=1e-6)


def test_opposite_vectors_give_zero():
    x = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    assert float(set_cone_index(x).index) == pytest.approx(0.0, abs=1e-7)


def test_rotation_and_positive_scale_invariance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 8, generator=g, dtype=torch.float64)
    scale = torch.rand(20, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    base = float(set_cone_index(x).index)
    assert float(set_cone_index(x @ rotation(8, 2)).index) == pytest.approx(base, rel=1e-9)
    assert float(set_cone_index(x * scale).index) == pytest.approx(base, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 10_000))
def test_squared_index_equals_n_plus_pairwise_cosines(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = x / x.norm(dim=-1, keepdim=True)
    cos = u @ u.T
    expected = n + float(cos.sum() - cos.diagonal().sum())
    c = set_cone_index(x)
    assert float(c.index) ** 2 == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= float(c.index) <= n + 1e-9


def test_zero_rows_are_excluded_and_counted_never_nan():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    c = set_cone_index(x)
    assert (float(c.index), int(c.count), int(c.n_zero)) == (pytest.approx(2.0), 2, 1)
    empty = set_cone_index(torch.zeros(3, 4))
    assert float(empty.index) == 0.0 and int(empty.n_zero) == 3
    assert float(empty.normalised) == 0.0 and not torch.isnan(empty.normalised)


def test_per_genome_mask_and_special_tokens():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 10, 4, generator=g)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 4:] = False
    x[2, 2] = 0.0  # a zero row among the real ones
    c = cone_index(x, mask)
    for b in range(3):
        one = set_cone_index(x[b, mask[b]])
        assert float(c.index[b]) == pytest.approx(float(one.index), rel=1e-5)
    assert c.count.tolist() == [10, 7, 3] and c.n_zero.tolist() == [0, 0, 1]
    inner = cone_index(x, mask, drop_special=True)
    assert inner.count.tolist() == [8, 5, 1]
    assert float(inner.index[1]) == pytest.approx(float(set_cone_index(x[1, 1:6]).index), rel=1e-5)


def test_head_split_input():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 3, 6, 5, generator=g)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    c = cone_index(z, mask)
    assert c.index.shape == (2, 3)
    assert float(c.index[1, 2]) == pytest.approx(float(set_cone_index(z[1, 2, :4]).index))


def test_class_sums_streamed_equal_all_at_once():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 3, 8, generator=g)  # (batch, layer, d_model)
    x[4, 1] = 0.0
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 1, 2, 2])
    whole = cone_sums(x, labels, 3)
    halves = cone_sums(x[:5], labels[:5], 3).combine(cone_sums(x[5:], labels[5:], 3))
    assert torch.allclose(whole.unit_sum, halves.unit_sum)
    assert torch.equal(whole.count, halves.count) and torch.equal(whole.n_zero, halves.n_zero)
    idx = whole.index()
    assert isinstance(idx, ConeIndex) and idx.index.shape == (3, 3)
    one = set_cone_index(x[labels == 1, 1])
    assert float(idx.index[1, 1]) == pytest.approx(float(one.index), rel=1e-5)
    assert int(idx.n_zero[1, 1]) == 1 and int(idx.count[1, 1]) == 3


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="mask"):
        cone_index(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        cone_sums(torch.zeros(2, 4), torch.tensor([0, 3]), 3)
