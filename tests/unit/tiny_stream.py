"""A 2-layer BERT classifier and genomes of different lengths, streamed through measures in
batches (whole, or in parts cut at batch boundaries and merged): the setting of the measures'
merge tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bertgeom.geometry.domains import token_domains
from bertgeom.geometry.measures.base import Genomes, Measure, RunInfo
from bertgeom.geometry.stream import Stream, run_info

CLASSES = ("a", "b", "c")
N_GENOMES = 14
BATCH = 4
CLS, SEP, PAD = 2, 3, 0


def tiny_classifier() -> Any:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        num_labels=len(CLASSES),
        attn_implementation="eager",
    )
    return transformers.BertForSequenceClassification(cfg).eval()


def genomes(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids ([CLS] k-mers [SEP]) of 8 to 20 content tokens, and class ids (each class at
    least twice)."""
    rng = np.random.default_rng(seed)
    ids = [
        np.concatenate([[CLS], rng.integers(5, 50, int(n)), [SEP]])
        for n in rng.integers(8, 21, N_GENOMES)
    ]
    labels = np.resize(np.arange(len(CLASSES)), N_GENOMES)
    rng.shuffle(labels)
    return ids, labels


def info(model: Any, drop_special: bool = False) -> RunInfo:
    return run_info(model, CLASSES, drop_special, token_domains(30), "cpu")


def kept(labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first ``per_class`` genomes of each class."""
    keep = np.zeros(len(labels), bool)
    for c in range(len(CLASSES)):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return keep


def batch_inputs(ids: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Right-padded to the batch's longest genome."""
    width = max(len(x) for x in ids)
    out = np.full((len(ids), width), PAD, dtype=np.int64)
    for i, x in enumerate(ids):
        out[i, : len(x)] = x
    t = torch.from_numpy(out)
    return {"input_ids": t, "attention_mask": (t != PAD).long()}


def stream(
    model: Any,
    make: Callable[[], Measure],
    ids: list[np.ndarray],
    labels: np.ndarray,
    keep: np.ndarray,
    lo: int = 0,
    hi: int | None = None,
) -> tuple[Stream, np.ndarray]:
    """Stream genomes [lo, hi) in batches of BATCH; returns the stream and the predictions."""
    hi = len(ids) if hi is None else hi
    measure = make()
    s = Stream(model, [measure], measure.info, to_class=np.arange(len(CLASSES)))
    preds = []
    with s, torch.inference_mode():
        for a in range(lo, hi, BATCH):
            b = min(a + BATCH, hi)
            pred = s.batch(
                batch_inputs(ids[a:b]), torch.as_tensor(labels[a:b]), torch.as_tensor(keep[a:b])
            )
            preds.append(pred.numpy())
    return s, np.concatenate(preds)


def streamed(
    model: Any,
    make: Callable[[], Measure],
    ids: list[np.ndarray],
    labels: np.ndarray,
    keep: np.ndarray,
    cuts: Sequence[int] = (),
    via_state: bool = False,
) -> tuple[Measure, np.ndarray]:
    """The measure after streaming every genome, in parts cut at ``cuts`` (batch boundaries)
    and merged in order (``via_state``: each part saved with ``torch.save`` and restored into
    a fresh measure first, as ``analyze --merge`` does)."""
    import io

    bounds = [0, *cuts, len(ids)]
    total, preds = None, []
    for lo, hi in itertools.pairwise(bounds):
        s, pred = stream(model, make, ids, labels, keep, lo, hi)
        if via_state:
            buf = io.BytesIO()
            torch.save(s.state_dict(), buf)
            buf.seek(0)
            fresh = Stream(model, [make()], s.info, to_class=np.arange(len(CLASSES)))
            fresh.load_state_dict(torch.load(buf, weights_only=True))
            s = fresh
        preds.append(pred)
        if total is None:
            total = s
        else:
            with torch.inference_mode():  # the live states hold inference tensors
                total.merge(s)
    assert total is not None
    return total.measures[0], np.concatenate(preds)


def genomes_of(labels: np.ndarray, preds: np.ndarray, all_genomes: bool) -> Genomes:
    correct = preds == labels
    return Genomes(
        ids=np.array([f"g{i}" for i in range(len(labels))]),
        labels=labels,
        included=np.ones(len(labels), bool) if all_genomes else correct,
        all_genomes=all_genomes,
    )
