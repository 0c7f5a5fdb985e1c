"""Training data: rows of the spikes table, label ids, per-epoch order, batches and masking.

Everything here is deterministic: the order of epoch ``e`` and the masks of pre-training batch
``b`` of epoch ``e`` derive only from ``(seed, e)`` and ``(seed, e, b)``, so a run resumed from
a checkpoint sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.errors import ArtifactError
from bertgeom.io.spikes import SPIKES_FILE, read_spikes
from bertgeom.tokens.vocab import MASK_ID, PAD_ID, SPECIAL_TOKENS

SPLITS = ("train", "val", "test")
#: Columns the training stages read from ``spikes.parquet``.
TRAIN_COLUMNS = ("id", "label", "split", "qc_status", "spike", "raw_spike", "mutations")
#: Sequence length multiple of a batch (tensor-core and SIMD friendly).
PAD_MULTIPLE = 8
IGNORE_INDEX = -100  # label of unmasked positions (torch's cross-entropy default)


def spikes_path(prepared_dir: str | os.PathLike) -> Path:
    """``prepared_dir/spikes.parquet``, or an :class:`ArtifactError` naming what is missing."""
    d = Path(prepared_dir)
    if not d.is_dir():
        raise ArtifactError(f"{d}: no such directory (run `bertgeom prepare` first)")
    path = d / SPIKES_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file (run `bertgeom prepare` first)")
    return path


def load_split(
    prepared_dir: str | os.PathLike, split: str, columns: Sequence[str] = TRAIN_COLUMNS
) -> Any:
    """Labelled, not QC-bad rows of one split, in file order.

    Parameters
    ----------
    prepared_dir
        A ``bertgeom prepare`` output directory.
    split
        ``train``, ``val`` or ``test``.
    columns
        Columns to read (``label``, ``split`` and ``qc_status`` are always read: they select
        the rows); fewer columns, less memory (the two spike columns are ~8 KB per genome).

    Returns
    -------
    pandas.DataFrame
        Columns ``columns`` plus the selecting ones, index 0..n-1.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = spikes_path(prepared_dir)
    wanted = list(dict.fromkeys([*columns, "label", "split", "qc_status"]))
    df = read_spikes(path, wanted)
    keep = (df["split"] == split) & df["label"].notna() & (df["qc_status"] != "bad")
    out = df[keep].reset_index(drop=True)
    if out.empty:
        raise ArtifactError(
            f"{path}: no labelled, QC-passing genomes in the '{split}' split "
            f"({len(df)} rows; was prepare run with --labels?)"
        )
    return out


def load_pretraining_rows(prepared_dir: str | os.PathLike) -> Any:
    """Every not QC-bad row outside the test split (labelled or not), for pre-training."""
    path = spikes_path(prepared_dir)
    df = read_spikes(path, TRAIN_COLUMNS)
    keep = (df["qc_status"] != "bad") & (df["split"] != "test").fillna(True)
    out = df[keep].reset_index(drop=True)
    if out.empty:
        raise ArtifactError(f"{path}: no QC-passing genomes outside the test split")
    return out


def sequences_for(df: Any, token_mode: str) -> list[str]:
    """The sequences a model reads: ``spike`` (aligned mode) or ``raw_spike`` (raw mode)."""
    if token_mode not in ("aligned", "raw"):
        raise ValueError(f"token_mode must be aligned or raw, got {token_mode!r}")
    column = "spike" if token_mode == "aligned" else "raw_spike"
    return df[column].tolist()


def present_labels(labels: Sequence[str], order: Sequence[str]) -> tuple[str, ...]:
    """The classes that occur in ``labels``, in ``order`` (e.g. :data:`CLASSES`)."""
    seen = set(labels)
    unknown = sorted(seen - set(order))
    if unknown:
        raise ArtifactError(f"unknown class labels {unknown} (valid classes: {', '.join(order)})")
    return tuple(c for c in order if c in seen)


def encode_labels(labels: Any, label_names: Sequence[str]) -> np.ndarray:
    """Class names -> (n,) int64 ids, the position of each name in ``label_names``."""
    index = {name: i for i, name in enumerate(label_names)}
    values = list(labels)
    missing = sorted({v for v in values if v not in index}, key=str)
    if missing:
        raise ArtifactError(
            f"labels {missing} are not among the model's classes ({', '.join(label_names)})"
        )
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))


def epoch_order(labels: np.ndarray, epoch: int, seed: int, balance: str) -> np.ndarray:
    """Row indices for one epoch, derived only from ``(seed, epoch)``.

    Parameters
    ----------
    labels
        (n,) class ids of the training rows.
    epoch
        0-based epoch number.
    seed
        The run's seed.
    balance
        ``sampler``: n draws with replacement, each row with probability proportional to
        1 / (rows of its class), so every class is drawn equally often on average;
        otherwise (``weights``, ``none``) a permutation of all rows.

    Returns
    -------
    numpy.ndarray
        (n,) int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng([seed, epoch])
    if balance != "sampler":
        return rng.permutation(n).astype(np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    p = 1.0 / counts[inverse]
    return rng.choice(n, size=n, replace=True, p=p / p.sum()).astype(np.int64)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency loss weights, (n_classes,) float32.

    ``n / (classes present * rows of the class)``, scikit-learn's "balanced" weights: every
    class carries the same total weight and the weights average 1 over the rows. A class
    absent from ``labels`` gets weight 0 (it never occurs as a target).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes]
    present = counts > 0
    w = np.zeros(n_classes, dtype=np.float64)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    return w.astype(np.float32)


def batch_width(ids: np.ndarray, multiple: int = PAD_MULTIPLE) -> int:
    """Length of the longest non-PAD prefix of any row, rounded up to ``multiple``."""
    nonpad = ids != PAD_ID  # (batch, T)
    if not nonpad.any():
        return multiple
    last = ids.shape[1] - np.argmax(nonpad[:, ::-1], axis=1)  # (batch,) 1 + last non-PAD
    longest = int(last[nonpad.any(axis=1)].max())
    return -(-longest // multiple) * multiple


def collate(ids: np.ndarray) -> dict[str, Any]:
    """A batch of token ids (batch, T) -> ``input_ids`` and ``attention_mask`` tensors.

    Rows are cut or right-padded with ``[PAD]`` (id 0) to :func:`batch_width`: the batch's
    longest row rounded up to a multiple of 8 (aligned spikes: 427 -> 432).
    """
    import torch

    input_ids = torch.from_numpy(fit_width(ids, batch_width(ids), PAD_ID))
    return {"input_ids": input_ids, "attention_mask": (input_ids != PAD_ID).long()}


def fit_width(a: np.ndarray, width: int, fill: int) -> np.ndarray:
    """(batch, T) -> (batch, width): cut, or right-pad with ``fill``."""
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    n = min(width, a.shape[1])
    out[:, :n] = a[:, :n]
    return out


def mask_tokens(
    ids: np.ndarray, rng: np.random.Generator, mask_prob: float, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of k-mer tokens: inputs and targets for masked k-mer modelling.

    Each k-mer token (ids >= 5: never [PAD], [UNK], [CLS], [SEP], [MASK]) is chosen with
    probability ``mask_prob``; a chosen token becomes [MASK] (80 %), a random k-mer (10 %) or
    stays (10 %). Targets hold the original id at chosen positions and -100 elsewhere.

    Returns
    -------
    tuple of numpy.ndarray
        ``(inputs, targets)``, both shaped like ``ids``.
    """
    first_kmer = len(SPECIAL_TOKENS)
    candidate = ids >= first_kmer
    chosen = candidate & (rng.random(ids.shape) < mask_prob)
    targets = np.where(chosen, ids, IGNORE_INDEX)
    inputs = ids.copy()
    action = rng.random(ids.shape)
    inputs[chosen & (action < 0.8)] = MASK_ID
    swap = chosen & (action >= 0.8) & (action < 0.9)
    if vocab_size > first_kmer:
        inputs[swap] = rng.integers(first_kmer, vocab_size, size=int(swap.sum()))
    return inputs, targets
