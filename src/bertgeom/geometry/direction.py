"""Directionality of subspace selection (science.md §5, bertgeom definitions).

Orientation. HF ``nn.Linear`` stores ``weight: (d_out, d_in)`` and computes ``x @ weight.T + b``,
so the queries of head h are ``q = x @ Wq_hᵀ + b_h`` with ``Wq_h = weight[h*d_head:(h+1)*d_head]``
the head's block of *rows* (d_head x d_model) — in the paper's notation W_Q^h = Wq_hᵀ, the
head's block of columns of the transposed weight. The raw score of a query token x and a key
token y is ``q·k = x Wq_hᵀ Wk_h yᵀ + (bias terms)``, so the bilinear form is

    B_h = W_Q^h (W_K^h)ᵀ = Wq_hᵀ Wk_h          (d_model x d_model, rank <= d_head).

With S = (B + Bᵀ)/2 and N = (B - Bᵀ)/2, ``||B||² = ||S||² + ||N||²`` and the directionality
index ``d_h = ||N||_F / ||B||_F`` is in [0, 1] (0 symmetric, 1 antisymmetric). It is computed
from d_head x d_head products, never forming B:

    ||B||_F² = tr((Wq Wqᵀ)(Wk Wkᵀ)),    <B, Bᵀ> = tr(B B) = tr((Wk Wqᵀ)²),
    ||S||² = (||B||² + <B, Bᵀ>)/2,     ||N||² = (||B||² - <B, Bᵀ>)/2.

All weight functions accept any leading dimensions, e.g. ``(layer, d_model, d_model)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bertgeom.geometry.masking import check_mask, content_mask
from bertgeom.geometry.threads import map_chunks


def head_blocks(weight: Tensor, n_heads: int) -> Tensor:
    """Split an HF projection weight into per-head row blocks.

    Parameters
    ----------
    weight : (..., d_model_out, d_model_in), as in ``nn.Linear.weight`` (``x @ weight.T``)
    n_heads : number of heads; d_model_out must be a multiple of it

    Returns
    -------
    (..., head, d_head, d_model) with block h = ``weight[h*d_head:(h+1)*d_head]``
    """
    d_out = weight.shape[-2]
    if d_out % n_heads:
        raise ValueError(f"{d_out} output features do not split into {n_heads} heads")
    return weight.unflatten(-2, (n_heads, d_out // n_heads))


def bilinear_form(query_weight: Tensor, key_weight: Tensor, n_heads: int) -> Tensor:
    """Dense ``B_h = Wq_hᵀ Wk_h`` (for checks and small models; use the trace forms otherwise).

    Returns
    -------
    (..., head, d_model, d_model), with ``x B_h yᵀ = q_h(x)·k_h(y)`` without biases
    """
    wq, wk = head_blocks(query_weight, n_heads), head_blocks(key_weight, n_heads)
    return wq.transpose(-1, -2) @ wk


@dataclass(frozen=True)
class Directionality:
    """Symmetric/antisymmetric split of the bilinear forms; fields (..., head).

    Attributes
    ----------
    index : d_h = ||N||_F / ||B||_F in [0, 1] (0 when B = 0)
    norm : ||B||_F
    symmetric_norm : ||S||_F
    antisymmetric_norm : ||N||_F
    """

    index: Tensor
    norm: Tensor
    symmetric_norm: Tensor
    antisymmetric_norm: Tensor


def directionality(query_weight: Tensor, key_weight: Tensor, n_heads: int) -> Directionality:
    """Directionality index of every head from d_head x d_head traces (module docstring).

    Parameters
    ----------
    query_weight, key_weight : (..., d_model, d_model) HF ``query.weight``, ``key.weight``
    n_heads : number of heads

    Returns
    -------
    Directionality with fields (..., head)
    """
    wq = head_blocks(query_weight, n_heads).double()
    wk = head_blocks(key_weight, n_heads).double()
    gq, gk = wq @ wq.transpose(-1, -2), wk @ wk.transpose(-1, -2)
    b2 = (gq * gk).sum((-1, -2))  # tr(Gq Gk), both symmetric
    c = wk @ wq.transpose(-1, -2)  # (..., head, d_head, d_head)
    bbt = (c * c.transpose(-1, -2)).sum((-1, -2))  # tr(C C) = <B, Bᵀ>
    s2, n2 = ((b2 + bbt) / 2).clamp(min=0), ((b2 - bbt) / 2).clamp(min=0)
    index = torch.where(b2 > 0, (n2 / b2.clamp(min=1e-300)).sqrt(), 0.0).clamp(max=1.0)
    return Directionality(index=index, norm=b2.sqrt(), symmetric_norm=s2.sqrt(),
                          antisymmetric_norm=n2.sqrt())  # fmt: skip


@dataclass(frozen=True)
class Signature:
    """Eigenvalue signature of the symmetric part S of each head's bilinear form.

    Attributes
    ----------
    eigenvalues : (..., head, r) eigenvalues of S that can be non-zero, descending
        (r = min(d_model, 2 d_head): S has rank <= 2 d_head)
    n_positive, n_negative : (..., head) eigenvalues above ``tolerance`` / below ``-tolerance``
    positive_mass, negative_mass : (..., head) Σ λ₊ / Σ |λ| and Σ |λ₋| / Σ |λ| over the
        eigenvalues beyond the tolerance (both 0 when there are none)
    tolerance : (..., head) rtol * ||B||_F (relative to B, so that a purely antisymmetric B
        has no significant eigenvalues of S)
    """

    eigenvalues: Tensor
    n_positive: Tensor
    n_negative: Tensor
    positive_mass: Tensor
    negative_mass: Tensor
    tolerance: Tensor


def symmetric_signature(
    query_weight: Tensor, key_weight: Tensor, n_heads: int, rtol: float | None = None
) -> Signature:
    """Signature of ``S_h = (B_h + B_hᵀ)/2`` without forming it.

    ``S = U M Uᵀ`` with ``U = [Wqᵀ, Wkᵀ]`` (d_model x 2 d_head) and ``M = [[0, I/2], [I/2, 0]]``;
    with ``U = Q R`` (reduced QR) the non-zero eigenvalues of S are those of ``R M Rᵀ``.

    Parameters
    ----------
    query_weight, key_weight : (..., d_model, d_model) HF weights
    n_heads : number of heads
    rtol : relative tolerance on ||B||_F; default ``d_model * eps(float64)``

    Returns
    -------
    Signature with fields (..., head) and eigenvalues (..., head, r)
    """
    wq = head_blocks(query_weight, n_heads).double()
    wk = head_blocks(key_weight, n_heads).double()
    d_head, d_model = wq.shape[-2], wq.shape[-1]
    if 2 * d_head < d_model:
        _, r = torch.linalg.qr(torch.cat([wq, wk], -2).transpose(-1, -2))  # r: (.., 2dh, 2dh)
        rq, rk = r[..., :d_head], r[..., d_head:]
        core = (rq @ rk.transpose(-1, -2) + rk @ rq.transpose(-1, -2)) / 2
    else:
        b = wq.transpose(-1, -2) @ wk
        core = (b + b.transpose(-1, -2)) / 2
    eig = torch.linalg.eigvalsh(core).flip(-1)
    rtol = d_model * torch.finfo(torch.float64).eps if rtol is None else rtol
    tol = rtol * directionality(query_weight, key_weight, n_heads).norm
    big = torch.where(eig.abs() > tol[..., None], eig, 0.0)
    total = big.abs().sum(-1).clamp(min=1e-300)
    return Signature(
        eigenvalues=eig,
        n_positive=(big > 0).sum(-1),
        n_negative=(big < 0).sum(-1),
        positive_mass=big.clamp(min=0).sum(-1) / total,
        negative_mass=(-big).clamp(min=0).sum(-1) / total,
        tolerance=tol,
    )


def bilinear_eigenvalues(query_weight: Tensor, key_weight: Tensor, n_heads: int) -> Tensor:
    """Eigenvalues of ``B_h = Wq_hᵀ Wk_h`` that can be non-zero: those of ``Wk_h Wq_hᵀ``.

    Returns
    -------
    (..., head, d_head) complex128 (B has d_model - d_head further zero eigenvalues)
    """
    wq = head_blocks(query_weight, n_heads).double()
    wk = head_blocks(key_weight, n_heads).double()
    return torch.linalg.eigvals(wk @ wq.transpose(-1, -2))


def _bases(weight: Tensor, n_heads: int) -> Tensor:
    """Orthonormal bases of the row spaces of the head blocks, (..., head, d_model, d_head)."""
    q, _ = torch.linalg.qr(head_blocks(weight, n_heads).double().transpose(-1, -2))
    return q


def principal_angles(query_weight: Tensor, key_weight: Tensor, n_heads: int) -> Tensor:
    """Principal angles between each head's query and key subspaces of the residual stream.

    The subspaces are the row spaces of Wq_h and Wk_h (the directions of x that the head's
    queries / keys read); with orthonormal bases Qq, Qk, ``cos θ_i = σ_i(Qqᵀ Qk)``. Assumes the
    head blocks have full row rank (d_head).

    Returns
    -------
    (..., head, d_head) angles in radians, ascending (0 = a shared direction)
    """
    qq, qk = _bases(query_weight, n_heads), _bases(key_weight, n_heads)
    cos = torch.linalg.svdvals(qq.transpose(-1, -2) @ qk).clamp(0.0, 1.0)
    return torch.arccos(cos)


def subspace_overlap(weight: Tensor, n_heads: int, other: Tensor | None = None) -> Tensor:
    """Overlap of the heads' row subspaces within a layer.

    ``overlap[h, g] = ||Q_hᵀ P_g||_F² / d_head`` = mean cos² of the principal angles, in [0, 1]
    (1 = the same subspace, 0 = orthogonal), with Q_h, P_g orthonormal bases of the row spaces of
    head h of ``weight`` and head g of ``other`` (``weight`` itself when None).

    Returns
    -------
    (..., head, head)
    """
    q = _bases(weight, n_heads)
    p = q if other is None else _bases(other, n_heads)
    cross = q.transpose(-1, -2).unsqueeze(-3) @ p.unsqueeze(-4)  # (..., head, head, dh, dh)
    return (cross**2).sum((-1, -2)) / q.shape[-1]


def _content(
    mask: Tensor | None, b: int, pos: int, device: torch.device, drop_special: bool
) -> Tensor:
    """(batch, pos) bool: the positions kept (real tokens, less [CLS]/[SEP] with
    ``drop_special``)."""
    return content_mask(check_mask(mask, b, pos, device), drop_special)


def score_directionality(
    q: Tensor, k: Tensor, mask: Tensor | None = None, *, drop_special: bool = False
) -> Tensor:
    """Directionality of the token score matrix ``M = Q Kᵀ`` of each genome and head.

    ``||N||_F / ||M||_F`` with N = (M - Mᵀ)/2, over the kept tokens only (as queries and as
    keys; biases included, as the model scores them; divide by sqrt(d_head) or not, the ratio is
    the same). Computed in float64 from d_head x d_head Gram matrices, never forming M (pos x
    pos): with Q, K the kept rows,

        ||M||_F² = tr((QᵀQ)(KᵀK)),   <M, Mᵀ> = tr(M M) = tr((KᵀQ)(KᵀQ)),
        ||N||_F² = (||M||_F² - <M, Mᵀ>) / 2.

    Parameters
    ----------
    q, k : (batch, head, pos, d_head) projected queries and keys
    mask : (batch, pos) bool, True = real token
    drop_special : leave out [CLS] and [SEP] (as queries and as keys)

    Returns
    -------
    (batch, head) float64 in [0, 1]
    """
    keep = None
    if mask is not None or drop_special:
        keep = _content(mask, q.shape[0], q.shape[-2], q.device, drop_special)
    if q.device.type != "cpu" or not len(q):
        return _directionality(q, k, keep)
    # on the CPU genome by genome (float64 copies of a few hundred KB, reused from the heap
    # where a batch's would be mapped afresh), the genomes split among torch's threads
    return _per_genome(
        lambda i: _directionality(q[i : i + 1], k[i : i + 1], _row(keep, i)), q.shape[0]
    )


def _row(keep: Tensor | None, i: int) -> Tensor | None:
    return None if keep is None else keep[i : i + 1]


def _per_genome(fn: Callable[[int], Tensor], n: int) -> Tensor:
    """``fn(i)`` for every genome i (n >= 1), concatenated, the genomes split among torch's
    threads."""
    return torch.cat(map_chunks(lambda lo, hi: torch.cat([fn(i) for i in range(lo, hi)]), n))


def _directionality(q: Tensor, k: Tensor, keep: Tensor | None) -> Tensor:
    """``score_directionality`` over the ``keep`` (batch, pos) positions (None: all)."""
    if keep is not None:  # the mask is 0/1: applied before the float64 copy, exactly
        w = keep[:, None, :, None].to(q.dtype)
        q, k = q * w, k * w
    q, k = q.double(), k.double()
    gq, gk = q.transpose(-1, -2) @ q, k.transpose(-1, -2) @ k  # (batch, head, d_head, d_head)
    c = k.transpose(-1, -2) @ q
    m2 = (gq * gk).sum((-1, -2))  # ||M||²; Gq, Gk symmetric
    mmt = (c * c.transpose(-1, -2)).sum((-1, -2))  # <M, Mᵀ>
    anti = ((m2 - mmt) / 2).clamp(min=0).sqrt()
    total = m2.clamp(min=0).sqrt()
    return torch.where(total > 0, anti / total.clamp(min=1e-300), 0.0)


def attention_asymmetry(
    attn: Tensor, mask: Tensor | None = None, *, drop_special: bool = False
) -> Tensor:
    """Asymmetry of attention, ``||A - Aᵀ||_F / ||A + Aᵀ||_F`` over the kept tokens.

    In [0, 1] for non-negative A: 0 symmetric, 1 when A_ij A_ji = 0 for all pairs (e.g. purely
    backward attention). The block of kept rows and columns is taken as it is (rows are not
    renormalised after dropping keys). One difference D = A - Aᵀ is formed, in A's dtype (float32
    at least), and ``||A + Aᵀ||² = 4 ||A||² - ||D||²``; the squared norms are summed over rows
    in float64 (row norms in A's dtype: within 1e-7 of float64 throughout, where one float32
    norm of a 427 x 427 map is off by up to 1e-5).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos)
    mask : (batch, pos) bool
    drop_special : leave out [CLS] and [SEP] rows and columns

    Returns
    -------
    (batch, head) float64
    """
    b, pos = attn.shape[0], attn.shape[-1]
    keep = None
    if mask is not None or drop_special:
        keep = _content(mask, b, pos, attn.device, drop_special)
    if attn.device.type != "cpu" or (torch.is_grad_enabled() and attn.requires_grad):
        return _asymmetry(attn, keep)  # (the CPU path writes into a scratch tensor)

    # on the CPU genome by genome (its maps stay in cache: 2x faster than the batch at once),
    # the kept block sliced out (no masked copy) and A - Aᵀ written into one scratch tensor
    # per thread (not mapped afresh per genome: bertgeom.heap), the genomes split among
    # torch's threads
    a = _float(attn)

    def genomes(lo: int, hi: int) -> Tensor:
        scratch = a.new_empty(a.shape[1:])
        out = []
        for i in range(lo, hi):
            block = _kept_block(a[i], None if keep is None else keep[i])
            n = block.shape[-1]
            diff = torch.sub(block, block.transpose(-1, -2), out=scratch[:, :n, :n])
            out.append(_ratio(block, diff))
        return torch.stack(out) if out else a.new_zeros((0, a.shape[1]), dtype=torch.float64)

    return torch.cat(map_chunks(genomes, b))


def _kept_block(x: Tensor, keep: Tensor | None) -> Tensor:
    """(head, n, n): the kept rows and columns of one genome's maps (head, pos, pos), a view
    when they are contiguous."""
    if keep is None:
        return x
    at = keep.nonzero()[:, 0]
    if not len(at):
        return x[:, :0, :0]
    if int(at[-1] - at[0]) + 1 == len(at):
        lo, hi = int(at[0]), int(at[-1]) + 1
        return x[:, lo:hi, lo:hi]
    return x.index_select(1, at).index_select(2, at)


def _asymmetry(attn: Tensor, keep: Tensor | None) -> Tensor:
    """``attention_asymmetry`` of (batch, head, pos, pos) maps over the ``keep`` (batch, pos)
    positions (None: all)."""
    a = _float(attn)
    if keep is not None:
        w = keep.to(a.dtype)
        a = a * (w[:, None, :, None] * w[:, None, None, :])
    return _ratio(a, a - a.transpose(-1, -2))


def _ratio(a: Tensor, diff: Tensor) -> Tensor:
    """``||A - Aᵀ||_F / ||A + Aᵀ||_F`` from A and D = A - Aᵀ, with
    ``||A + Aᵀ||² = 4||A||² - ||D||²``."""
    d2 = _squared_norm(diff)
    s2 = (4 * _squared_norm(a) - d2).clamp(min=0)
    return torch.where(s2 > 0, (d2 / s2.clamp(min=1e-300)).sqrt(), 0.0)


def _float(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _squared_norm(x: Tensor) -> Tensor:
    """||x||_F² over the last two dimensions: float32 row norms, squared and summed in float64."""
    return (torch.linalg.vector_norm(x, dim=-1).double() ** 2).sum(-1)
