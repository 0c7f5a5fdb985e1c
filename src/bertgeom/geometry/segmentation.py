"""Block structure of attention: the cluster-head score (science.md §4, bertgeom definition).

bertgeom's operational definition (B). Tokens of a cluster read each other, so the attention
A_c among the content tokens (real tokens other than [CLS]/[SEP]) is symmetrised by the geometric
mean, R_ij = sqrt(A_ij A_ji) (reciprocal attention): one-way reading, as in contextual or
directional heads, gives little reciprocal mass, while blocks and uniform reading keep theirs.
The reciprocity ``r = Σ_ij R_ij / n_rows`` is in [0, 1] (Cauchy-Schwarz). Let S = R / Σ R, total
mass 1. The null model
is the banded (Toeplitz) matrix T with the same distance profile: every diagonal of T holds the
mean of the same diagonal of S, so T keeps the bandwidth (how far tokens read) but has no
blocks. A contiguous segmentation of the n content positions into blocks B_1..B_m is found by
dynamic programming to maximise

    gain = Σ_b [ S(B_b × B_b) - T(B_b × B_b) ]    (mass inside blocks above the banded null),

and the score is ``r * gain / (1 - T(inside))`` in [0, 1]: 1 when all attention is reciprocal and
sits in blocks, 0 for a banded or uniform matrix (a single block or n singletons always give
gain 0, since T has the same total and the same diagonal as S).

Computation (``solve_reciprocal``): no (pos+1)² block tables. T's block masses depend on the
block length only (from the diagonal sums of S), S's grow row by row in float64 running sums,
one row of S read per sequential step; per head only R itself (the attention's size) is held.
``best_blocks`` / ``solve_blocks`` keep the general programme on tables of any two matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor


def toeplitz_null(s: Tensor, pair: Tensor) -> Tensor:
    """The banded null: each diagonal of ``s`` replaced by its mean over valid pairs.

    ``T_ij = mean_{(a, b) valid, b - a = j - i} S_ab`` for valid (i, j), else 0.

    Parameters
    ----------
    s : (batch, head, pos, pos)
    pair : (batch, pos, pos) bool, the valid (content x content) pairs

    Returns
    -------
    (batch, head, pos, pos)
    """
    b, h, p, _ = s.shape
    idx = torch.arange(p, device=s.device)
    diag = (idx[None, :] - idx[:, None] + p - 1).expand(b, p, p).reshape(b, p * p)
    count = torch.zeros(b, 2 * p - 1, dtype=s.dtype, device=s.device)
    count = count.scatter_add(1, diag, pair.reshape(b, p * p).to(s.dtype))  # (batch, 2p-1)
    total = torch.zeros(b, h, 2 * p - 1, dtype=s.dtype, device=s.device)
    total = total.scatter_add(2, diag[:, None].expand(b, h, p * p), s.reshape(b, h, p * p))
    mean = total / count.clamp(min=1)[:, None]
    return mean.gather(2, diag[:, None].expand(b, h, p * p)).view(b, h, p, p) * pair[:, None]


def _prefix(m: Tensor) -> Tensor:
    """2-D prefix sums P[a, b] = Σ_{i<a, j<b} m_ij, shape (..., pos+1, pos+1)."""
    out = torch.nn.functional.pad(m, (1, 0, 1, 0))
    return out.cumsum(-1).cumsum(-2)


@dataclass(frozen=True)
class BlockTables:
    """Block masses of the matrices a segmentation is scored on (see ``block_tables``).

    ``block_d[..., j, i] = d([i, j) x [i, j))`` for i < j (entries with i >= j are not used),
    likewise ``block_t``. The dynamic programme only reads these, so tables of several batches
    of matrices with the same ``pos`` (e.g. all layers of one batch of genomes) can be
    concatenated along a leading dimension (``cat``) and solved in one pass of ``pos``
    sequential steps.
    """

    block_d: Tensor  # (..., pos+1, pos+1)
    block_t: Tensor  # (..., pos+1, pos+1)

    @staticmethod
    def cat(tables: Sequence[BlockTables], dim: int) -> BlockTables:
        """The tables concatenated along ``dim`` (a leading dimension)."""
        return BlockTables(
            *(torch.cat([getattr(t, f.name) for t in tables], dim) for f in fields(BlockTables))
        )


def _block_mass(m: Tensor) -> Tensor:
    """``B[..., j, i] = m([i, j) x [i, j))`` for all i, j (meaningful for i <= j).

    From the 2-D prefix sums P: ``P[j, j] - P[i, j] - P[j, i] + P[i, i]``; row j is contiguous,
    so each step of the dynamic programme reads one row.
    """
    pm = _prefix(m)
    diag = pm.diagonal(dim1=-2, dim2=-1)  # (..., pos+1)
    out = pm + pm.transpose(-1, -2)  # P[j, i] + P[i, j], a new tensor
    return out.neg_().add_(diag[..., :, None]).add_(diag[..., None, :])


def block_tables(d: Tensor, t: Tensor) -> BlockTables:
    """The tables ``best_blocks`` needs for matrices ``d`` and ``t`` of shape (..., pos, pos)."""
    return BlockTables(block_d=_block_mass(d), block_t=_block_mass(t))


def best_blocks(d: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Maximum of Σ_blocks d(block x block) over contiguous segmentations, by dynamic programming.

    ``f[j] = max_{i<j} f[i] + d([i, j) x [i, j))``, f[0] = 0; also the mass of ``t`` inside the
    blocks of the maximising segmentation. O(pos²) work per matrix, ``pos`` vectorised steps.

    Parameters
    ----------
    d : (..., pos, pos) the matrix whose in-block mass is maximised (S - T)
    t : (..., pos, pos) a second matrix whose in-block mass is reported (T)

    Returns
    -------
    gain : (...,) the maximal in-block mass of ``d``
    inside : (...,) the in-block mass of ``t`` for the maximising segmentation
    """
    return solve_blocks(block_tables(d, t))


def _fused_max(device: torch.device) -> bool:
    """Whether the programme's steps take values and indices from one ``max`` (CUDA) or from
    argmax + gather (elsewhere: values-and-indices max is ~50x slower on multi-threaded CPUs)."""
    return device.type == "cuda"


def solve_blocks(tables: BlockTables) -> tuple[Tensor, Tensor]:
    """``best_blocks`` on precomputed tables: (gain, inside), each of the tables' batch shape.

    Each of the ``pos`` sequential steps is one add, one max and two writes (on a GPU the
    steps are launch-bound, so their kernel count is the cost). The maximising segmentation is
    a chain of block starts ``j -> start[j]`` from ``pos`` to 0; the mass of ``t`` along it is
    summed afterwards by pointer jumping, in ceil(log2 pos) vectorised rounds.
    """
    block_d, block_t = tables.block_d, tables.block_t
    p = block_d.shape[-1] - 1
    lead = block_d.shape[:-2]
    f = block_d.new_zeros((*lead, p + 1))
    start = torch.zeros((*lead, p + 1), dtype=torch.long, device=block_d.device)
    fused = _fused_max(block_d.device)
    for j in range(1, p + 1):
        cand = f[..., :j] + block_d[..., j, :j]  # (..., j)
        if fused:
            torch.max(cand, -1, out=(f[..., j], start[..., j]))
        else:
            arg = cand.argmax(-1, keepdim=True)
            f[..., j] = cand.gather(-1, arg)[..., 0]
            start[..., j] = arg[..., 0]
    return f[..., p], chain_sum(block_t, start)[..., p]


def chain_sum(table: Tensor, parent: Tensor) -> Tensor:
    """``out[j] = Σ table[k, parent[k]]`` over the chain k = j, parent[j], ... down to 0.

    ``parent[k] < k`` for k > 0 and ``parent[0] = 0``; ``table`` (..., pos+1, pos+1), ``parent``
    (..., pos+1). Pointer jumping: after round r each position holds the sum of its first 2^r
    links and points 2^r links down the chain.
    """
    val = table.gather(-1, parent[..., None])[..., 0]  # (..., pos+1): table[k, parent[k]]
    val[..., 0] = 0  # position 0 ends every chain: no link
    par = parent
    for _ in range(max(1, math.ceil(math.log2(max(parent.shape[-1], 2))))):
        val = val + val.gather(-1, par)
        par = par.gather(-1, par)
    return val


@dataclass(frozen=True)
class ClusterParts:
    """What the cluster score needs before the dynamic programme, for (batch, head) matrices:
    the reciprocal attention R in content order (content positions first, [0, m); zero
    elsewhere), the content size m, the reciprocity r and the total reciprocal mass Σ R.

    One matrix of the attention's size per head: the banded null and the block masses are
    never tabulated (``solve_reciprocal``).
    """

    recip: Tensor  # (batch, head, pos, pos) R, unnormalised
    n_content: Tensor  # (batch, head) int64 m
    reciprocity: Tensor  # (batch, head)
    total: Tensor  # (batch, head) Σ R

    @property
    def nbytes(self) -> int:
        """Memory held by the parts."""
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    @staticmethod
    def cat(parts: Sequence[ClusterParts]) -> ClusterParts:
        """Parts of the same genomes concatenated along the head dimension (e.g. all layers)."""
        return ClusterParts(
            *(torch.cat([getattr(x, f.name) for x in parts], 1) for f in fields(ClusterParts))
        )


def reciprocal_parts(
    x: Tensor, n_content: Tensor, content_rows: Tensor, out: Tensor | None = None
) -> ClusterParts:
    """``ClusterParts`` of attention already in content order.

    Parameters
    ----------
    x : (batch, head, pos, pos) attention (a view is fine) whose content positions are
        [0, m) of each genome; rows and columns past m must be zero except row and column m
        itself (the [SEP] of compacted attention, dropped here)
    n_content : (batch,) int64 m
    content_rows : (batch, head) content rows that give content keys any mass
    out : (batch, head, pos, pos) where R is written (e.g. a slice of a buffer holding several
        layers for one dynamic programme); None = a new tensor

    Returns
    -------
    ClusterParts
    """
    b, h, p, _ = x.shape
    s = torch.mul(x, x.transpose(-1, -2), out=out)  # A_ij A_ji
    if p:  # zero row and column m where m < pos
        genome = torch.arange(b, device=x.device)
        sep = n_content.clamp(max=p - 1)
        keep = (n_content >= p).to(s.dtype)[:, None, None]
        s[genome, :, sep, :] *= keep
        s[genome, :, :, sep] *= keep
    s = s.sqrt_()  # reciprocal attention R
    total = s.sum((-1, -2))
    reciprocity = (total / content_rows.clamp(min=1)).clamp(max=1.0)
    return ClusterParts(s, n_content[:, None].expand(b, h).contiguous(), reciprocity, total)


def cluster_parts(attn: Tensor, content: Tensor) -> ClusterParts:
    """Everything of ``cluster_score`` up to the dynamic programme (arguments as there).

    The content positions are moved first (``compact_square`` with the content mask): for a
    contiguous content mask (the real tokens less [CLS]/[SEP]) that is a shift, which changes
    nothing; a mask with gaps is read with the gaps closed.
    """
    from bertgeom.geometry.masking import compact_square

    a, m = compact_square(attn.clamp(min=0), content)  # content first, the rest zero
    rows = a.sum(-1).gt(0).sum(-1)  # (batch, head) content rows that read content keys
    return reciprocal_parts(a, m, rows)


def solve_reciprocal(recip: Tensor, n_content: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Best segmentation of reciprocal attention against its banded null, by dynamic programming.

    With S = R (symmetric, content [0, m)) and T the banded null of S (``toeplitz_null``: the
    mean ``t_k`` of each diagonal over its m - k pairs), ``f[j] = max_{i<j} f[i] + D([i, j)²)``
    with D = S - T, as ``best_blocks(S - T, T)`` but without its two (pos+1)² tables:

    - the block masses of T depend on the block's length only: ``G(L) = Σ_{|k|<L} (L - |k|)
      t_k``, from the diagonal sums of S (one sweep over the rows of S);
    - the block masses of S grow row by row: adding row r to the blocks [i, r) adds
      ``2 Σ_{i<=q<r} S_rq + S_rr``, the part of which that depends on i is a cumulative sum of
      row r of S; the parts that depend on r alone are added to every candidate and do not move
      the maximum, so they are kept out of the running candidates and added back at the end
      (they sum to the mass of S plus m t_0).

    Each of the ``pos`` sequential steps reads one row of S (its first r entries) and updates
    the float64 running candidates (``h``); the mass of T inside the maximising blocks is then
    summed along the chain of block starts (``chain_sum``).

    Parameters
    ----------
    recip : (..., pos, pos) S, symmetric, zero outside [0, m)²
    n_content : (...) int64 m

    Returns
    -------
    gain : (...) float64, the maximal in-block mass of S - T (in units of S)
    inside : (...) float64, the in-block mass of T for the maximising segmentation
    total : (...) float64, the mass of S (from its diagonal sums)
    """
    lead = recip.shape[:-2]
    p = recip.shape[-1]
    s = recip.reshape(-1, p, p)
    m = n_content.reshape(-1).to(s.device)
    n = s.shape[0]
    wide = torch.float64
    # diagonal sums: row r adds S[r, r-k] to diagonal k = r - i, stored reversed (index p-1-k)
    rev = s.new_zeros((n, p))
    for r in range(p):
        rev[:, p - 1 - r :] += s[:, r, : r + 1]
    diag = rev.flip(-1).to(wide)  # (n, p): Σ_r S[r, r+k]
    k = torch.arange(p, device=s.device, dtype=wide)
    inside_m = k < m[:, None]
    t = torch.where(inside_m, diag / (m[:, None] - k).clamp(min=1), 0.0)  # (n, p) t_k
    total = diag[:, 0] + 2 * diag[:, 1:].sum(-1)
    tcum = t.cumsum(-1)  # Σ_{u<=x} t_u
    tcum_rev = tcum.flip(-1)  # tcum_rev[p-1-x] = tcum[x]
    h = s.new_zeros((n, p + 1), dtype=wide)  # running candidates, then g at j
    g = s.new_zeros((n, p + 1), dtype=wide)  # ĝ[j] = f[j] - (terms of the steps < j)
    start = torch.zeros((n, p + 1), dtype=torch.long, device=s.device)
    fused = _fused_max(s.device)
    for r in range(p):  # block end j = r + 1
        if r:
            h[:, 1 : r + 1].sub_(s[:, r, :r].cumsum(-1), alpha=2)  # Σ_{q<i} S[r, q], i >= 1
        h[:, : r + 1].sub_(tcum_rev[:, p - 1 - r :], alpha=2)  # tcum[r - i]
        if fused:
            torch.max(h[:, : r + 1], -1, out=(g[:, r + 1], start[:, r + 1]))
        else:
            arg = h[:, : r + 1].argmax(-1, keepdim=True)
            g[:, r + 1] = h[:, : r + 1].gather(-1, arg)[:, 0]
            start[:, r + 1] = arg[:, 0]
        h[:, r + 1] = g[:, r + 1]
    at = m.clamp(max=p)[:, None]
    gain = g.gather(-1, at)[:, 0] + total + m.to(wide) * t[:, 0]
    # T mass of a block of length L: G(L) = 2 Σ_{x<L} tcum[x] - L t_0 (G(0) = 0)
    length = torch.arange(p + 1, device=s.device)
    tt = torch.nn.functional.pad(tcum.cumsum(-1), (1, 0))  # (n, p+1): Σ_{x<L} tcum[x]
    block_t = 2 * tt - length.to(wide) * t[:, :1]
    val = block_t.gather(-1, length - start)  # T mass of the block ending at j
    inside = _chain_from(val, start, at)
    return gain.view(lead), inside.view(lead), total.view(lead)


def _chain_from(val: Tensor, parent: Tensor, at: Tensor) -> Tensor:
    """``chain_sum`` of per-link values ``val[k]`` (the link k -> parent[k]) read at ``at``."""
    val = val.clone()
    val[..., 0] = 0
    par = parent
    for _ in range(max(1, math.ceil(math.log2(max(parent.shape[-1], 2))))):
        val = val + val.gather(-1, par)
        par = par.gather(-1, par)
    return val.gather(-1, at)[..., 0]


def cluster_from_parts(parts: ClusterParts) -> Tensor:
    """The cluster score (batch, head) from ``cluster_parts`` (one dynamic programme)."""
    gain, inside, total = solve_reciprocal(parts.recip, parts.n_content)
    scale = torch.where(total > 0, total, 1.0)
    gain, room = gain / scale, 1.0 - inside / scale
    score = torch.where(room > 1e-6, gain / room.clamp(min=1e-6), 0.0)
    return (score.clamp(0.0, 1.0) * parts.reciprocity).to(parts.reciprocity.dtype)


def cluster_score(attn: Tensor, content: Tensor) -> Tensor:
    """Cluster-head score: reciprocal in-block mass above the banded null, in [0, 1].

    ``score = r * gain / (1 - T(inside))`` with r, S, T and gain as in the module docstring; 0
    when the denominator vanishes or the head gives no reciprocal mass to content tokens.

    Parameters
    ----------
    attn : (batch, head, pos, pos) attention (compacted or not; rows and keys outside
        ``content`` are ignored)
    content : (batch, pos) bool, the content positions (real, not [CLS]/[SEP]), taken in
        order (a mask with gaps is read with the gaps closed)

    Returns
    -------
    (batch, head) score in [0, 1]
    """
    return cluster_from_parts(cluster_parts(attn, content))
