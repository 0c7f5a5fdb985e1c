"""Per-genome, per-head measures of attention matrices, the raw material of the gate scores.

All functions take attention already compacted (``masking.compact_square``: real positions
first, [CLS] at 0, [SEP] at n - 1, PAD rows and columns zero) and return one value per
(batch, head) or per query row. Row means run over the chosen query rows only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def row_mean(x: Tensor, rows: Tensor) -> Tensor:
    """Mean of a per-row quantity over the chosen query rows.

    Parameters
    ----------
    x : (batch, head, q_pos)
    rows : (batch, q_pos) bool

    Returns
    -------
    (batch, head), 0 where no row is chosen
    """
    w = rows[:, None, :].to(x.dtype)
    return (x * w).sum(-1) / w.sum(-1).clamp(min=1)


def row_entropy(attn: Tensor) -> Tensor:
    """Shannon entropy of each row, ``H_i = -Σ_j A_ij ln A_ij`` (nats, 0 ln 0 = 0).

    Parameters
    ----------
    attn : (..., q_pos, k_pos), rows summing to 1 (or 0 for PAD rows)

    Returns
    -------
    (..., q_pos)
    """
    return -torch.special.xlogy(attn, attn).sum(-1)


def contextual_mass(attn: Tensor, window: int, forward: bool) -> Tensor:
    """Mass each query gives to its ``window`` neighbours on one side.

    backward: ``Σ_{w=1..window} A_{i, i-w}``; forward: ``Σ_{w=1..window} A_{i, i+w}``
    (positions in compacted order, keys outside the matrix contribute nothing).

    Parameters
    ----------
    attn : (batch, head, pos, pos)
    window : w >= 1
    forward : read i+1..i+w instead of i-w..i-1

    Returns
    -------
    (batch, head, q_pos)
    """
    out = torch.zeros(attn.shape[:-1], dtype=attn.dtype, device=attn.device)
    p = attn.shape[-1]
    for w in range(1, min(window, p - 1) + 1):
        if forward:  # A[i, i+w] for i = 0..p-w-1
            out[..., : p - w] += attn.diagonal(offset=w, dim1=-2, dim2=-1)
        else:  # A[i+w, i] for i = 0..p-w-1, belongs to row i+w
            out[..., w:] += attn.diagonal(offset=-w, dim1=-2, dim2=-1)
    return out


def mean_distance(attn: Tensor) -> Tensor:
    """Attention distance of each row, ``Σ_j A_ij |i - j|`` (in tokens, compacted order).

    Parameters
    ----------
    attn : (batch, head, pos, pos)

    Returns
    -------
    (batch, head, q_pos)
    """
    idx = torch.arange(attn.shape[-1], device=attn.device, dtype=attn.dtype)
    return (attn * (idx[:, None] - idx[None, :]).abs()).sum(-1)


def metastable_k(attn: Tensor, coverage: float = 0.9, tol: float = 1e-6) -> Tensor:
    """Metastable-state size per row: the fewest keys whose mass reaches ``coverage``.

    ``k_i = min { k : sum of the k largest A_ij >= coverage - tol }`` (Ramsauer et al. 2020);
    ``tol`` absorbs rounding. Rows of zeros (PAD) give 0.

    Parameters
    ----------
    attn : (..., q_pos, k_pos)
    coverage : mass to reach, in (0, 1]
    tol : rounding tolerance

    Returns
    -------
    (..., q_pos) float
    """
    cum = attn.sort(-1, descending=True).values.cumsum(-1)
    k = (cum < coverage - tol).sum(-1) + 1
    nonzero = (attn > 0).sum(-1)
    return torch.minimum(k, nonzero).to(attn.dtype)


def top_singular_share(m: Tensor, iterations: int = 50, rtol: float = 1e-7) -> Tensor:
    """Share of the largest singular value, ``s_1² / Σ_k s_k² = ||M||_2² / ||M||_F²``.

    ``||M||_2²`` is the top eigenvalue of MᵀM, found by at most ``iterations`` steps of power
    iteration started from the all-ones vector: for non-negative matrices such as attention the
    top singular vector is non-negative (Perron-Frobenius), so the start is never orthogonal to
    it. The estimate is a lower bound that converges geometrically in s_2²/s_1²; iteration stops
    early (checked every 10 steps) once no estimate moves by more than ``rtol`` relatively.

    Parameters
    ----------
    m : (..., rows, cols), non-negative
    iterations : maximal power-iteration steps
    rtol : relative change of the estimate that ends the iteration

    Returns
    -------
    (...,) in [0, 1], 0 for a zero matrix
    """
    mt = m.transpose(-1, -2).contiguous()
    v = torch.ones(m.shape[:-2] + m.shape[-1:], dtype=m.dtype, device=m.device)
    v = (v / math.sqrt(m.shape[-1]))[..., None]  # (..., cols, 1)
    top = torch.zeros(m.shape[:-2], dtype=m.dtype, device=m.device)
    for step in range(1, iterations + 1):
        u = m @ v
        w = mt @ u
        norm = torch.linalg.vector_norm(w, dim=(-2, -1), keepdim=True)
        v = w / norm.clamp(min=1e-30)
        if step % 10 == 0 or step == iterations:
            new = (u * u).sum((-2, -1))  # ||M v_prev||², v_prev of unit norm
            done = bool(((new - top).abs() <= rtol * new.abs()).all())
            top = new
            if done:
                break
    top = (m @ v).square().sum((-2, -1))
    fro = (m * m).sum((-2, -1))
    return torch.where(fro > 0, top / fro.clamp(min=1e-30), 0.0).clamp(0.0, 1.0)


def key_profile(attn: Tensor, rows: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """Key profile: the attention mass each key receives from the chosen rows, normalised.

    ``p_j = Σ_{i ∈ rows} A_ij / Σ_{i ∈ rows, j' ∈ keys} A_ij'`` for j in ``keys``.

    Parameters
    ----------
    attn : (batch, head, pos, pos)
    rows, keys : (batch, pos) bool

    Returns
    -------
    profile : (batch, head, k_pos), sums to 1 (or is all 0 when no mass reaches ``keys``)
    has_profile : (batch, head) bool, some mass reaches ``keys``
    """
    mass = (attn * rows[:, None, :, None]).sum(-2) * keys[:, None, :]
    total = mass.sum(-1, keepdim=True)
    return mass / torch.where(total > 0, total, 1.0), total[..., 0] > 0


def focus(attn: Tensor, rows: Tensor, keys: Tensor, iterations: int = 50) -> Tensor:
    """How much all chosen rows read the same few ``keys``: ``s1_share * concentration``.

    With A' the attention restricted to ``rows`` x ``keys``: ``s1_share = s_1²/Σ s²`` of A'
    (1 when every row reads the keys the same way) and ``concentration = 1 - exp(H(p))/n_keys``
    of its key profile p (0 for a uniform profile, close to 1 for a few keys); exp(H) is the
    effective number of keys read.

    Parameters
    ----------
    attn : (batch, head, pos, pos)
    rows, keys : (batch, pos) bool
    iterations : power-iteration steps for s_1

    Returns
    -------
    (batch, head) in [0, 1]
    """
    sub = attn * rows[:, None, :, None] * keys[:, None, None, :]
    share = top_singular_share(sub, iterations)
    profile, _ = key_profile(attn, rows, keys)
    n_keys = keys.sum(-1).to(attn.dtype)[:, None]  # (batch, 1)
    effective = torch.exp(row_entropy(profile[..., None, :])[..., 0])
    concentration = torch.where(n_keys > 0, 1 - effective / n_keys.clamp(min=1), 0.0)
    return share * concentration.clamp(min=0.0)
