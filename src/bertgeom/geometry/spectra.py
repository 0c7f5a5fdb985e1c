"""Entropies, singular values and ranks of batched, masked matrices (science.md §6).

PAD handling: a genome's matrix is its real block (n x n for attention, n x d for token rows).
Zeroing the PAD rows (and, for square matrices, columns) of a padded matrix only adds zero
singular values and zero eigenvalues, so the statistics below are computed on the padded batch
at once and equal the ones of the real block (up to rounding); tolerances use the real sizes.
``spectrum`` on the CPU decomposes each genome's real block on its own instead (its values then
do not depend on the batch).

Textbook measures: row Shannon entropy of attention, von Neumann entropy, singular values,
numerical / effective / stable rank. The research code's variants are kept as ``compat``
functions: ``histogram_entropy`` and ``eigen_entropy_compat``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bertgeom.geometry.masking import check_mask, compact_order, content_mask
from bertgeom.geometry.threads import map_chunks


def _float(m: Tensor) -> Tensor:
    return m.to(torch.promote_types(m.dtype, torch.float32))


def _keep(m: Tensor, mask: Tensor | None, drop_special: bool) -> Tensor:
    """(batch, 1.., rows) bool of the rows kept, broadcastable against m[..., 0]."""
    b, rows = m.shape[0], m.shape[-2]
    keep = content_mask(check_mask(mask, b, rows, m.device), drop_special)
    return keep.view(b, *([1] * (m.dim() - 3)), rows)


def mask_matrix(
    m: Tensor, mask: Tensor | None = None, *, square: bool = False, drop_special: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Zero the rows (and with ``square`` the columns) of PAD positions.

    Parameters
    ----------
    m : (batch, ..., rows, cols), e.g. (batch, head, q_pos, k_pos) or (batch, pos, d_model)
    mask : (batch, rows) bool, True = real token; None = all real
    square : the mask applies to the columns too (attention-like matrices)
    drop_special : also zero [CLS] and [SEP] (first and last real position)

    Returns
    -------
    m : same shape, float, zero outside the real block
    n_rows, n_cols : (batch, 1..) real sizes, broadcastable against ``m[..., 0, 0]``
    """
    m = _float(m)
    keep = _keep(m, mask, drop_special)
    m = m * keep[..., :, None]
    n_rows = keep.sum(-1)
    n_cols = torch.full_like(n_rows, m.shape[-1])
    if square:
        m = m * keep[..., None, :]
        n_cols = n_rows
    return m, n_rows, n_cols


@dataclass(frozen=True)
class RowEntropy:
    """Mean Shannon entropy of attention rows (nats); fields (batch, head).

    Attributes
    ----------
    values : mean_i H(A_i), H(A_i) = -Σ_j A_ij ln A_ij over the real keys
    normalised : values / ln n (1 for uniform rows; n = real keys, 0 when n < 2)
    """

    values: Tensor
    normalised: Tensor


def row_entropy(
    attn: Tensor, mask: Tensor | None = None, *, drop_special: bool = False
) -> RowEntropy:
    """Row Shannon entropy of attention, averaged over the real query rows.

    PAD keys are dropped and each row renormalised over the real keys; ``drop_special`` leaves
    the [CLS]/[SEP] query rows out of the mean (their keys stay).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos)
    mask : (batch, pos) bool, True = real token

    Returns
    -------
    RowEntropy with fields (batch, head)
    """
    a, n, _ = mask_matrix(attn, mask, square=True)
    a = a / torch.where((s := a.sum(-1, keepdim=True)) > 0, s, 1.0)
    h = -torch.special.xlogy(a, a).sum(-1)  # (batch, head, q_pos)
    rows = _keep(a, mask, drop_special).to(a.dtype)
    mean = (h * rows).sum(-1) / rows.sum(-1).clamp(min=1)
    log_n = torch.log(n.to(a.dtype))
    return RowEntropy(
        values=mean, normalised=torch.where(n >= 2, mean / log_n.clamp(min=1e-30), 0.0)
    )


def von_neumann_entropy(
    m: Tensor, mask: Tensor | None = None, *, drop_special: bool = False
) -> Tensor:
    """Von Neumann entropy ``S(ρ) = -Σ_k λ_k ln λ_k`` of ``ρ = M / tr M`` for PSD M (e.g. A Aᵀ).

    Rounding-level negative eigenvalues are clipped to 0. ``ln n`` for M = I_n, 0 for rank one.

    Parameters
    ----------
    m : (batch, ..., pos, pos) symmetric positive semi-definite
    mask : (batch, pos) bool; PAD rows and columns are dropped

    Returns
    -------
    (batch, ...) nats; 0 for a zero matrix
    """
    m, _, _ = mask_matrix(m, mask, square=True, drop_special=drop_special)
    lam = torch.linalg.eigvalsh((m + m.transpose(-1, -2)) / 2).clamp(min=0)
    total = lam.sum(-1, keepdim=True)
    rho = lam / torch.where(total > 0, total, 1.0)
    return -torch.special.xlogy(rho, rho).sum(-1)


def histogram_entropy(
    m: Tensor,
    mask: Tensor | None = None,
    *,
    bins: int = 20,
    square: bool = True,
    drop_special: bool = False,
) -> Tensor:
    """``compat``: entropy of the histogram of a matrix's values (the research code's measure).

    The real entries are binned into ``bins`` equal-width bins between their min and max (the
    max falls in the last bin, as in ``numpy.histogram``); ``H = -Σ_b p_b ln p_b`` with p_b the
    share of entries in bin b. 0 when all entries are equal.

    Parameters
    ----------
    m : (batch, ..., rows, cols)
    mask : (batch, rows) bool; PAD rows (and columns when ``square``) are left out
    bins : number of bins (20 in the research code)

    Returns
    -------
    (batch, ...) nats
    """
    m = _float(m)
    keep = _keep(m, mask, drop_special)[..., :, None]
    if square:
        keep = keep & _keep(m, mask, drop_special)[..., None, :]
    keep = keep.expand(m.shape).flatten(-2)
    x = m.flatten(-2)
    lo = torch.where(keep, x, torch.inf).amin(-1, keepdim=True)
    hi = torch.where(keep, x, -torch.inf).amax(-1, keepdim=True)
    width = torch.where(hi > lo, hi - lo, 1.0)
    idx = ((x - lo) / width * bins).floor().clamp(0, bins - 1).long()
    idx = torch.where(keep, idx, 0)
    counts = torch.zeros((*x.shape[:-1], bins), dtype=x.dtype, device=x.device)
    counts = counts.scatter_add(-1, idx, keep.to(x.dtype))
    p = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    return -torch.special.xlogy(p, p).sum(-1)


def eigen_entropy_compat(
    m: Tensor, mask: Tensor | None = None, *, drop_special: bool = False
) -> Tensor:
    """``compat``: the research code's eigenvalue "entropy" ``-Σ_k p_k ln p_k``, p = |λ| / ||λ||_2.

    λ are the (complex) eigenvalues of the square real block; p is normalised by the Euclidean
    norm, not the sum, so p is not a distribution and this is not an entropy (kept only to
    reproduce the published numbers).

    Parameters
    ----------
    m : (batch, ..., pos, pos)
    mask : (batch, pos) bool

    Returns
    -------
    (batch, ...); 0 for a zero matrix
    """
    m, _, _ = mask_matrix(m, mask, square=True, drop_special=drop_special)
    lam = torch.linalg.eigvals(m).abs()
    norm = torch.linalg.vector_norm(lam, dim=-1, keepdim=True)
    p = lam / torch.where(norm > 0, norm, 1.0)
    return -torch.special.xlogy(p, p).sum(-1)


def _svdvals(m: Tensor, keep: Tensor, square: bool, driver: str | None) -> Tensor:
    """Singular values of each genome's real block, descending, zero-padded to min(rows, cols).

    Without a driver the zero-padded matrices go to ``svdvals`` at once (on the CPU
    ``spectrum`` takes each genome's real block instead: ``_svdvals_blocks``). With a
    cuSOLVER driver, genomes are grouped by their number of real rows and each group's unpadded
    blocks go to that driver (the zeros of padding make a matrix rank-deficient, which
    approximate drivers such as gesvda cannot handle); where the driver fails to converge, the
    group falls back to PyTorch's default driver.

    Parameters
    ----------
    m : (batch, ..., rows, cols) zero outside the real block
    keep : (batch, rows) bool, the real rows (and columns when ``square``)
    """
    if driver is None or not m.is_cuda:
        return torch.linalg.svdvals(m)
    order, n = compact_order(keep)
    idx = order.view(m.shape[0], *([1] * (m.dim() - 3)), -1, 1).expand(m.shape)
    m = m.gather(-2, idx)
    if square:
        m = m.gather(-1, idx.transpose(-1, -2))
    out = torch.zeros((*m.shape[:-2], min(m.shape[-2:])), dtype=m.dtype, device=m.device)
    for rows in n.unique().tolist():
        sel = (n == rows).nonzero()[:, 0]
        block = m[sel][..., :rows, : rows if square else m.shape[-1]]
        if block.shape[-1] * block.shape[-2] == 0:
            continue
        try:
            s = torch.linalg.svdvals(block, driver=driver)
        except torch.linalg.LinAlgError:
            s = torch.linalg.svdvals(block)
        out[sel, ..., : s.shape[-1]] = s
    return out


def _block_svdvals(x: Tensor) -> Tensor:
    """Singular values of one real block (rows x cols) on the CPU, descending.

    A square block (attention) or a float64 one goes to ``svdvals`` (LAPACK gesdd). For a
    non-square float32 one (Z, stream points): the square roots of the eigenvalues of its
    float64 Gram matrix on the smaller side (``syevd``), 1.4x faster for 426 x 768 blocks on one
    core (29 vs 42 ms), no slower for 426 x 64, and closer to the float64 SVD of the float32
    block than float32 gesdd (on random blocks 5e-15 against 7e-7 of s_1). A zero singular
    value comes out near sqrt(eps64) s_1 (1e-8 to 3e-8 s_1 measured), thousands of times
    below the numerical-rank tolerance.
    """
    rows, cols = x.shape
    if rows == cols or x.dtype == torch.float64:  # float64 input: the Gram would lose digits
        return torch.linalg.svdvals(x)
    x64 = x.double()
    gram = x64 @ x64.T if rows < cols else x64.T @ x64
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().flip(-1).to(x.dtype)


def _svdvals_blocks(m: Tensor, keep: Tensor, square: bool) -> Tensor:
    """Singular values of each genome's real block on the CPU, descending, zero-padded to
    min(rows, cols): ``_svdvals`` without the padded copy.

    Each (genome, head) block (the kept rows, and with ``square`` the kept columns; a slice
    when they are contiguous) goes to ``svdvals`` on its own, the blocks split among torch's
    threads (``threads.map_chunks``; LAPACK's own threading gains little on one matrix: 1.7x
    in all for 16 attention maps of 427 x 427 on two cores). So a genome's values depend
    neither on the padding of its batch nor on the genomes beside it (LAPACK's rounding
    depends on a matrix's size and on where it sits in a batched copy).

    Parameters
    ----------
    m : (batch, ..., rows, cols) float
    keep : (batch, rows) bool
    """
    b, rows, cols = m.shape[0], m.shape[-2], m.shape[-1]
    k = min(rows, cols)
    if m.numel() == 0:
        return m.new_zeros((*m.shape[:-2], k))
    flat = m.reshape(b, -1, rows, cols)
    heads = flat.shape[1]
    index = []
    for g in range(b):
        pos = keep[g].nonzero()[:, 0]
        if len(pos) and int(pos[-1] - pos[0]) + 1 == len(pos):
            index.append(slice(int(pos[0]), int(pos[-1]) + 1))
        else:
            index.append(pos)

    def block(g: int, h: int) -> Tensor:
        x = flat[g, h]
        at = index[g]
        if isinstance(at, slice):
            return x[at, at] if square else x[at]
        x = x.index_select(0, at)
        return x.index_select(1, at) if square else x

    def chunk(lo: int, hi: int) -> Tensor:
        out = flat.new_zeros((hi - lo, k))
        for i in range(lo, hi):
            x = block(*divmod(i, heads))
            if x.numel():
                s = _block_svdvals(x)
                out[i - lo, : s.shape[-1]] = s
        return out

    s = torch.cat(map_chunks(chunk, b * heads))
    return s.view(*m.shape[:-2], k)


@dataclass(frozen=True)
class Spectrum:
    """Singular values and ranks; fields (batch, ...) except ``singular_values``.

    Attributes
    ----------
    singular_values : (batch, ..., min(rows, cols)) descending (zeros for the PAD part)
    numerical_rank : int, #{s_k > tolerance}
    effective_rank : exp(-Σ p_k ln p_k), p = s / Σ s (Roy & Vetterli 2007); 0 for M = 0
    stable_rank : ||M||_F² / ||M||_2² = Σ s² / s_1²; 0 for M = 0
    tolerance : the numerical-rank tolerance used
    """

    singular_values: Tensor
    numerical_rank: Tensor
    effective_rank: Tensor
    stable_rank: Tensor
    tolerance: Tensor

    @property
    def gram_entropy(self) -> Tensor:
        """Von Neumann entropy of ρ = M Mᵀ / tr(M Mᵀ), from the singular values: λ_k ∝ s_k²."""
        sq = self.singular_values**2
        total = sq.sum(-1, keepdim=True)
        rho = sq / torch.where(total > 0, total, 1.0)
        return -torch.special.xlogy(rho, rho).sum(-1)


def spectrum(
    m: Tensor,
    mask: Tensor | None = None,
    *,
    square: bool = False,
    drop_special: bool = False,
    rtol: float | None = None,
    driver: str | None = None,
) -> Spectrum:
    """Singular values, numerical, effective and stable rank of each genome's real block.

    Numerical-rank tolerance: ``tol = rtol * s_1`` with default ``rtol = max(n, m) * eps``, n x m
    the real block and eps the machine epsilon of the computation dtype (as numpy.matrix_rank).

    Parameters
    ----------
    m : (batch, ..., rows, cols): attention (batch, head, q_pos, k_pos) with ``square``, per-head
        outputs (batch, head, pos, d_head), stream points (batch, pos, d_model)
    mask : (batch, rows) bool, True = real token
    square : the mask applies to the columns too
    drop_special : drop [CLS] and [SEP] rows (and columns when ``square``)
    rtol : relative tolerance (see above)
    driver : cuSOLVER driver for CUDA tensors (ignored on the CPU), as in
        ``torch.linalg.svdvals``; see ``_svdvals``. None = PyTorch's default; ``"gesvda"`` was
        about 50 times faster for (96, 427, 427) attention batches on an H200 (33 ms instead
        of 1.6 s) and agreed with float64 to 1e-7

    Returns
    -------
    Spectrum
    """
    if m.device.type != "cpu":
        m, n_rows, n_cols = mask_matrix(m, mask, square=square, drop_special=drop_special)
        s = _svdvals(m, _keep(m, mask, drop_special).flatten(1), square, driver)
    else:
        m = _float(m)
        keep = _keep(m, mask, drop_special)
        n_rows = keep.sum(-1)
        n_cols = n_rows if square else torch.full_like(n_rows, m.shape[-1])
        s = _svdvals_blocks(m, keep.flatten(1), square)
    top = s[..., 0]
    if rtol is None:
        eps = torch.finfo(m.dtype).eps
        tol = torch.maximum(n_rows, n_cols).to(m.dtype) * eps * top
    else:
        tol = rtol * top
    total = s.sum(-1, keepdim=True)
    p = s / torch.where(total > 0, total, 1.0)
    erank = torch.where(total[..., 0] > 0, torch.exp(-torch.special.xlogy(p, p).sum(-1)), 0.0)
    stable = torch.where(top > 0, (s**2).sum(-1) / (top**2).clamp(min=1e-300), 0.0)
    return Spectrum(
        singular_values=s,
        numerical_rank=(s > tol[..., None]).sum(-1),
        effective_rank=erank,
        stable_rank=stable,
        tolerance=tol,
    )
