"""Cone index of sets of vectors (science.md §3).

For a set S of vectors, with the zero vectors excluded (and counted),

    I_cone(S) = || Σ_{x ∈ S} x / ||x|| ||_2,    0 <= I_cone <= |S|,

and I_cone / |S| in [0, 1] is the mean resultant length of directional statistics:
``I_cone² = |S| + Σ_{i≠j} cos(x_i, x_j)``; I_cone = |S| iff all vectors point one way; it is
invariant to rotations of the whole set and to positive rescaling of any vector.

Two uses: (a) per genome over the token rows of a stream point, ``cone_index``; (b) per class over
one vector per genome (e.g. the [CLS] vector of every layer), streamed with ``cone_sums`` and
``ConeSums.combine``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bertgeom.geometry.masking import check_labels, check_mask, content_mask


@dataclass(frozen=True)
class ConeIndex:
    """Cone index of one or more sets of vectors; every field has the same shape ``(...)``.

    Attributes
    ----------
    index : I_cone = ||Σ x/||x|| ||_2 over the non-zero vectors of each set
    count : |S|, the number of non-zero vectors used
    n_zero : zero vectors excluded from the set
    """

    index: Tensor
    count: Tensor
    n_zero: Tensor

    @property
    def normalised(self) -> Tensor:
        """I_cone / |S| in [0, 1]; 0 for an empty set (never NaN)."""
        return torch.where(self.count > 0, self.index / self.count.clamp(min=1), 0.0)


def unit_vectors(x: Tensor, atol: float = 0.0) -> tuple[Tensor, Tensor]:
    """Rows scaled to unit norm; rows with norm <= ``atol`` become zero.

    Parameters
    ----------
    x : (..., d_model)
    atol : a row is a zero vector when its Euclidean norm is <= atol

    Returns
    -------
    unit : (..., d_model) float32 or wider, x/||x|| or 0
    nonzero : (..., ) bool, ||x|| > atol
    """
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    norm = torch.linalg.vector_norm(x, dim=-1)
    nonzero = norm > atol
    unit = x / torch.where(nonzero, norm, 1.0).unsqueeze(-1)
    return unit * nonzero.unsqueeze(-1), nonzero


def cone_index(
    x: Tensor,
    mask: Tensor | None = None,
    *,
    drop_special: bool = False,
    atol: float = 0.0,
) -> ConeIndex:
    """Cone index per genome over its token rows, PAD excluded.

    ``I_cone = ||Σ_{pos real, x ≠ 0} x_pos / ||x_pos|| ||_2``, one value per genome (and head).

    Parameters
    ----------
    x : (batch, pos, d_model) token rows, or (batch, head, pos, d_head) head-split rows
        (any number of dimensions between ``batch`` and ``pos`` is allowed)
    mask : (batch, pos) bool, True = real token; None = all real
    drop_special : leave out [CLS] and [SEP] (the first and last real position)
    atol : rows with norm <= atol are zero vectors, excluded and counted in ``n_zero``

    Returns
    -------
    ConeIndex with fields of shape (batch,) or (batch, head)
    """
    if x.dim() < 3:
        raise ValueError(f"x must be (batch, ..., pos, d), got shape {tuple(x.shape)}")
    batch, pos = x.shape[0], x.shape[-2]
    keep = content_mask(check_mask(mask, batch, pos, x.device), drop_special)
    keep = keep.view(batch, *([1] * (x.dim() - 3)), pos)  # (batch, 1.., pos)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    norm = torch.linalg.vector_norm(x, dim=-1)
    nonzero = norm > atol
    # Σ x/||x|| over the kept non-zero rows as one weighted sum (a matrix-vector product: two
    # reads of x, where scaling every row first would write and read x three more times)
    weight = torch.where(nonzero & keep, 1.0 / torch.where(nonzero, norm, 1.0), 0.0)
    if x.device.type == "cpu":
        total = (weight.unsqueeze(-2) @ x).squeeze(-2)
    else:  # elementwise: a GPU matmul may run in TF32 or lower precision when the user enabled it
        total = (x * weight.unsqueeze(-1)).sum(-2)
    index = torch.linalg.vector_norm(total, dim=-1)
    count = (nonzero & keep).sum(-1)
    n_zero = (~nonzero & keep).sum(-1)
    return ConeIndex(index=index, count=count, n_zero=n_zero)


def set_cone_index(x: Tensor, atol: float = 0.0) -> ConeIndex:
    """Cone index of one set of vectors (no mask).

    Parameters
    ----------
    x : (n, d_model) the vectors of the set
    atol : rows with norm <= atol are zero vectors, excluded and counted

    Returns
    -------
    ConeIndex with 0-dimensional fields
    """
    unit, nonzero = unit_vectors(x, atol)
    index = torch.linalg.vector_norm(unit.sum(0))
    return ConeIndex(index=index, count=nonzero.sum(), n_zero=(~nonzero).sum())


@dataclass(frozen=True)
class ConeSums:
    """Sufficient statistics of per-class cone indices, streamed over batches of genomes.

    Attributes
    ----------
    unit_sum : (class, ..., d_model) float64, Σ x/||x|| over the non-zero vectors of the class
    count : (class, ...) int64, non-zero vectors summed
    n_zero : (class, ...) int64, zero vectors excluded
    """

    unit_sum: Tensor
    count: Tensor
    n_zero: Tensor

    def combine(self, other: ConeSums) -> ConeSums:
        """The statistics of both batches together (sums add)."""
        if self.unit_sum.shape != other.unit_sum.shape:
            raise ValueError(
                f"cannot combine ConeSums of shapes {tuple(self.unit_sum.shape)} and "
                f"{tuple(other.unit_sum.shape)}"
            )
        other_sum = other.unit_sum.to(self.unit_sum.device)
        return ConeSums(
            unit_sum=self.unit_sum + other_sum,
            count=self.count + other.count.to(self.count.device),
            n_zero=self.n_zero + other.n_zero.to(self.n_zero.device),
        )

    def index(self) -> ConeIndex:
        """Per-class cone index, fields (class, ...)."""
        norm = torch.linalg.vector_norm(self.unit_sum, dim=-1)
        return ConeIndex(index=norm, count=self.count, n_zero=self.n_zero)


def cone_sums(x: Tensor, labels: Tensor, n_classes: int, atol: float = 0.0) -> ConeSums:
    """Per-class sums of unit vectors, e.g. of the [CLS] vector of every layer.

    ``unit_sum[c] = Σ_{genome: label = c, x ≠ 0} x_genome / ||x_genome||``; the class cone index
    is ``||unit_sum[c]||_2`` (``ConeSums.index``).

    Parameters
    ----------
    x : (batch, ..., d_model), e.g. (batch, layer, d_model) [CLS] vectors
    labels : (batch,) int class ids in ``0 .. n_classes - 1``
    n_classes : number of classes
    atol : vectors with norm <= atol are zero vectors, excluded and counted

    Returns
    -------
    ConeSums with ``unit_sum: (class, ..., d_model)``, ``count, n_zero: (class, ...)``
    """
    labels = check_labels(labels, x.shape[0], n_classes, x.device)
    unit, nonzero = unit_vectors(x, atol)
    rest = tuple(x.shape[1:])
    unit_sum = torch.zeros((n_classes, *rest), dtype=torch.float64, device=x.device)
    count = torch.zeros((n_classes, *rest[:-1]), dtype=torch.int64, device=x.device)
    return ConeSums(
        unit_sum=unit_sum.index_add(0, labels, unit.double()),
        count=count.index_add(0, labels, nonzero.long()),
        n_zero=count.index_add(0, labels, (~nonzero).long()),
    )
