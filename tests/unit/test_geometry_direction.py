"""Directionality of the query-key bilinear forms and of the data (science.md §5)."""

from __future__ import annotations

import math

import pytest
import torch

from bertgeom.geometry.direction import (
    attention_asymmetry,
    bilinear_eigenvalues,
    bilinear_form,
    directionality,
    head_blocks,
    principal_angles,
    score_directionality,
    subspace_overlap,
    symmetric_signature,
)


def weights(d_model=12, seed=0, layers=None):
    g = torch.Generator().manual_seed(seed)
    shape = (d_model, d_model) if layers is None else (layers, d_model, d_model)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(
        shape, generator=g, dtype=torch.float64
    )


def test_bilinear_form_matches_hf_linear_orientation():
    torch.manual_seed(0)
    q_lin, k_lin = torch.nn.Linear(12, 12, bias=False), torch.nn.Linear(12, 12, bias=False)
    x, y = torch.randn(5, 12), torch.randn(7, 12)
    qh = q_lin(x).view(5, 3, 4).transpose(0, 1)  # (head, pos, d_head)
    kh = k_lin(y).view(7, 3, 4).transpose(0, 1)
    b = bilinear_form(q_lin.weight, k_lin.weight, 3)  # (head, d_model, d_model)
    assert torch.allclose(x @ b @ y.T, qh @ kh.transpose(-1, -2), atol=1e-5)
    assert torch.equal(head_blocks(q_lin.weight, 3)[1], q_lin.weight[4:8])


@pytest.mark.parametrize("n_heads", [1, 3])
def test_directionality_matches_dense_computation(n_heads):
    wq, wk = weights(layers=2)
    d = directionality(wq, wk, n_heads)
    b = bilinear_form(wq, wk, n_heads)
    s, n = (b + b.transpose(-1, -2)) / 2, (b - b.transpose(-1, -2)) / 2
    fro = torch.linalg.matrix_norm
    assert d.index.shape == (2, n_heads)
    assert torch.allclose(d.norm, fro(b), rtol=1e-10)
    assert torch.allclose(d.symmetric_norm, fro(s), rtol=1e-10)
    assert torch.allclose(d.index, fro(n) / fro(b), rtol=1e-10)
    assert torch.allclose(d.norm**2, d.symmetric_norm**2 + d.antisymmetric_norm**2)


def test_symmetric_form_gives_zero_and_antisymmetric_gives_one():
    wq, _ = weights()
    assert float(directionality(wq, wq, 3).index.max()) < 1e-6
    # head block Wq = [I, 0], Wk = [K, 0] with K antisymmetric: B = [[K, 0], [0, 0]]
    g = torch.Generator().manual_seed(1)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)
    k = k - k.T
    rot, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    wq_h = torch.cat([torch.eye(4), torch.zeros(4, 8)], 1).double() @ rot
    wk_h = torch.cat([k, torch.zeros(4, 8)], 1).double() @ rot
    d = directionality(wq_h.repeat(3, 1), wk_h.repeat(3, 1), 3)
    assert torch.allclose(d.index, torch.ones(3, dtype=torch.float64), atol=1e-10)
    sig = symmetric_signature(wq_h.repeat(3, 1), wk_h.repeat(3, 1), 3)
    assert (sig.n_positive == 0).all() and (sig.n_negative == 0).all()


@pytest.mark.parametrize("n_heads", [1, 3])
def test_signature_matches_dense_eigenvalues(n_heads):
    wq, wk = weights(seed=2)
    sig = symmetric_signature(wq, wk, n_heads)
    b = bilinear_form(wq, wk, n_heads)
    dense = torch.linalg.eigvalsh((b + b.transpose(-1, -2)) / 2).flip(-1)
    r = sig.eigenvalues.shape[-1]
    top = torch.cat([dense[..., : r // 2], dense[..., -(r - r // 2) :]], -1)
    assert torch.allclose(sig.eigenvalues.sort(-1).values, top.sort(-1).values, atol=1e-9)
    tol = sig.tolerance[..., None]
    assert torch.equal(sig.n_positive, (dense > tol).sum(-1))
    assert torch.equal(sig.n_negative, (dense < -tol).sum(-1))
    assert torch.allclose(sig.positive_mass + sig.negative_mass, torch.ones(n_heads).double())
    assert (sig.positive_mass > 0).all() and (sig.negative_mass > 0).all()
    # a Gram form WᵀW is positive semi-definite: d_head positive eigenvalues, no negative ones
    gram = symmetric_signature(wq, wq, n_heads)
    assert (gram.n_negative == 0).all() and (gram.n_positive == 12 // n_heads).all()


def test_bilinear_eigenvalues_match_dense():
    wq, wk = weights(seed=3)
    eig = bilinear_eigenvalues(wq, wk, 3)  # (head, d_head)
    dense = torch.linalg.eigvals(bilinear_form(wq, wk, 3))
    for h in range(3):
        big = dense[h][dense[h].abs().argsort(descending=True)[:4]]
        assert torch.allclose(eig[h].abs().sort().values, big.abs().sort().values, atol=1e-9)


def test_principal_angles():
    wq, wk = weights(seed=4)
    assert torch.allclose(
        principal_angles(wq, wq, 3), torch.zeros(3, 4, dtype=torch.float64), atol=1e-6
    )
    mixed = torch.randn(4, 4, dtype=torch.float64) @ head_blocks(wq, 3)[0]  # same row space
    assert float(principal_angles(mixed, head_blocks(wq, 3)[0], 1).max()) < 1e-6
    eye = torch.eye(8, dtype=torch.float64)
    ang = principal_angles(eye[:4], eye[4:], 1)  # orthogonal subspaces
    assert torch.allclose(ang, torch.full((1, 4), math.pi / 2, dtype=torch.float64))
    angles = principal_angles(wq, wk, 3)
    assert (angles[..., 1:] >= angles[..., :-1] - 1e-12).all()


def test_subspace_overlap():
    wq, wk = weights(seed=5)
    o = subspace_overlap(wq, 3)
    assert o.shape == (3, 3)
    assert torch.allclose(o.diagonal(), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(o, o.T)
    assert ((o >= 0) & (o <= 1 + 1e-12)).all()
    eye = torch.eye(8, dtype=torch.float64)
    assert torch.allclose(subspace_overlap(eye, 2), torch.eye(2, dtype=torch.float64))
    assert subspace_overlap(wq, 3, wk).shape == (3, 3)


def test_data_directionality_and_masks():
    g = torch.Generator().manual_seed(6)
    q = torch.randn(2, 3, 9, 4, generator=g)
    k = torch.randn(2, 3, 9, 4, generator=g)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    assert torch.allclose(score_directionality(q, q, mask), torch.zeros(2, 3).double(), atol=1e-7)
    d = score_directionality(q, k, mask)
    alone = score_directionality(q[1:, :, :6], k[1:, :, :6])
    assert torch.allclose(d[1:], alone)
    m = q[1, 0, :6].double() @ k[1, 0, :6].double().T
    expected = torch.linalg.matrix_norm(m - m.T) / 2 / torch.linalg.matrix_norm(m)
    assert float(d[1, 0]) == pytest.approx(float(expected))


def test_attention_asymmetry():
    n = 8
    sym = torch.rand(n, n)
    sym = (sym + sym.T)[None, None]
    assert float(attention_asymmetry(sym)) == pytest.approx(0.0, abs=1e-7)
    lower = torch.tril(torch.ones(n, n), -1)
    lower[0, 0] = 0
    assert float(attention_asymmetry(lower[None, None])) == pytest.approx(1.0)
    padded = torch.zeros(1, 1, n + 3, n + 3)
    padded[..., :n, :n] = sym
    padded[..., n:, :] = 5.0  # PAD rows are ignored
    mask = (torch.arange(n + 3) < n)[None]
    assert float(attention_asymmetry(padded, mask)) == pytest.approx(0.0, abs=1e-7)
