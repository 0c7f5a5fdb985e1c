"""Which positions a statistic runs over: PAD, [CLS] and [SEP] handling shared by the measures.

Every measure takes an explicit boolean ``mask: (batch, pos)`` (True = real token, i.e. [CLS],
the k-mer tokens and [SEP]; False = PAD). [CLS] and [SEP] are the first and the last real
position of each row, wherever the PAD positions are. "Content" positions are the real positions
other than [CLS] and [SEP].
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_mask(mask: Tensor | None, batch: int, pos: int, device: torch.device) -> Tensor:
    """The mask as a bool tensor on ``device``, all True when ``None``.

    Parameters
    ----------
    mask : (batch, pos) bool or 0/1 tensor, or None
    batch, pos : the expected shape
    device : where the tensor it is combined with lives

    Raises
    ------
    ValueError
        If the shape is not ``(batch, pos)``.
    """
    if mask is None:
        return torch.ones(batch, pos, dtype=torch.bool, device=device)
    if tuple(mask.shape) != (batch, pos):
        raise ValueError(
            f"mask must have shape (batch, pos) = {(batch, pos)}, got {tuple(mask.shape)}"
        )
    return mask.to(device=device, dtype=torch.bool)


def check_labels(labels: Tensor | None, batch: int, n_classes: int, device: torch.device) -> Tensor:
    """Class ids as an int64 tensor on ``device``; all 0 (one class) when ``None``.

    Parameters
    ----------
    labels : (batch,) class ids in ``0 .. n_classes - 1``, or None
    batch : the expected length
    n_classes : number of classes

    Raises
    ------
    ValueError
        If the shape is wrong or an id is out of range.
    """
    if labels is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels).to(device=device, dtype=torch.long)
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"labels must have shape (batch,) = {(batch,)}, got {tuple(labels.shape)}")
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return labels


def special_positions(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the first ([CLS]) and last ([SEP]) real position per row.

    Parameters
    ----------
    mask : (batch, pos) bool

    Returns
    -------
    first, last : (batch,) int64 (0 for a row without real positions)
    """
    pos = mask.shape[-1]
    idx = torch.arange(pos, device=mask.device)
    first = torch.where(mask, idx, pos).amin(-1).clamp(max=pos - 1)
    last = torch.where(mask, idx, -1).amax(-1).clamp(min=0)
    return first, last


def content_mask(mask: Tensor, drop_special: bool = True) -> Tensor:
    """The mask without [CLS] and [SEP] (the first and last real position) when ``drop_special``.

    Parameters
    ----------
    mask : (batch, pos) bool
    drop_special : drop the first and last real position of each row

    Returns
    -------
    (batch, pos) bool
    """
    if not drop_special:
        return mask
    first, last = special_positions(mask)
    idx = torch.arange(mask.shape[-1], device=mask.device)
    return mask & (idx != first[:, None]) & (idx != last[:, None])


def compact_order(mask: Tensor) -> tuple[Tensor, Tensor]:
    """A permutation of positions that moves the real ones first, in order.

    Parameters
    ----------
    mask : (batch, pos) bool

    Returns
    -------
    order : (batch, pos) int64, ``x.gather(order)`` puts real positions at ``0..n-1``
    n : (batch,) int64 number of real positions
    """
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices
    return order, mask.sum(-1)


def compact_square(m: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Gather rows and columns of square per-genome matrices so that real positions come first.

    After compaction [CLS] sits at position 0 and [SEP] at ``n - 1`` of every genome, PAD rows
    and columns are zero.

    Parameters
    ----------
    m : (batch, head, q_pos, k_pos) with q_pos == k_pos == pos
    mask : (batch, pos) bool

    Returns
    -------
    m : (batch, head, pos, pos), compacted, zero outside the real block
    n : (batch,) int64 number of real positions
    """
    order, n = compact_order(mask)
    b, h, p, _ = m.shape
    rows = order[:, None, :, None].expand(b, h, p, p)
    out = m.gather(-2, rows).gather(-1, rows.transpose(-1, -2))
    real = torch.arange(p, device=m.device) < n[:, None]  # (batch, pos)
    pair = real[:, None, :, None] & real[:, None, None, :]
    return out * pair, n
