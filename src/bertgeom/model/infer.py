"""Batched inference: token ids -> logits and final-layer [CLS] embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Inference:
    """Model outputs for a batch of genomes."""

    logits: np.ndarray  # (batch, class), float32, before temperature scaling
    cls: np.ndarray  # (batch, d_model) final-layer [CLS] hidden state


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other names are checked.

    Raises
    ------
    ConfigError
        ``device`` is not a torch device name (``cpu``, ``cuda``, ``cuda:1`` ...), or names a
        CUDA device that this machine or this torch build does not have.
    """
    import torch

    from bertgeom.errors import ConfigError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device must be auto, cpu, cuda, cuda:N or mps (got {device!r})"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no GPU visible"
            raise ConfigError(f"device {device!r}: CUDA is not available here ({build})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r}: Apple's MPS backend is not available here")
    elif dev.type != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps (got {device!r})")
    return device


def require_finite(logits: np.ndarray, model_dir: Any) -> None:
    """A :class:`~bertgeom.errors.ArtifactError` when a model gives logits that are not finite
    (NaN or infinite weights): its calls would be meaningless, so nothing is computed from
    them."""
    from bertgeom.errors import ArtifactError

    bad = ~np.isfinite(logits).all(axis=1) if logits.size else np.zeros(0, bool)
    if bad.any():
        raise ArtifactError(
            f"{model_dir}: the model gives non-finite logits (NaN or inf) for {int(bad.sum())} "
            f"of {len(logits)} genomes: its weights are damaged or training diverged (retrain)"
        )


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is >= 1, else a :class:`ConfigError`."""
    from bertgeom.errors import ConfigError

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be an integer >= 1 (got {batch_size!r})")
    return batch_size


def infer(
    model: Any, ids: np.ndarray, batch_size: int = 64, device: str = "cpu", dedupe: bool = True
) -> Inference:
    """Run ``model`` (a ``BertForSequenceClassification``) over token ids (n, positions).

    With ``dedupe`` identical rows are computed once and their outputs copied: real collections
    repeat spikes (6,504 genomes of ``../shared/data`` hold 2,838 distinct ones). Outputs are
    the same either way up to float rounding (batches are composed differently).
    """
    check_batch_size(batch_size)
    if len(ids) == 0:
        h = model.config.hidden_size
        return Inference(np.zeros((0, model.config.num_labels), np.float32), np.zeros((0, h)))
    inverse = None
    if dedupe:
        ids, inverse = np.unique(ids, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    parts = list(iter_infer(model, ids, batch_size, device))
    logits = np.concatenate([p.logits for p in parts])
    cls = np.concatenate([p.cls for p in parts])
    if inverse is not None:
        logits, cls = logits[inverse], cls[inverse]
    return Inference(logits, cls)


#: The fewest rows of a forward pass: a smaller batch is padded with copies of its first row
#: (their outputs dropped), so a genome's outputs do not depend on how many genomes share its
#: batch. On CPU, matrix products of fewer rows take other kernels: with 1-3 rows the outputs
#: moved in the last bit (measured with torch on one thread, `tiny` and `small`), with 4 or more
#: they were equal; a shard run (``predict --engine ray``, ``--records``) then writes the table
#: of one local run byte for byte.
MIN_BATCH_ROWS = 8


def iter_infer(
    model: Any, ids: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> Iterator[Inference]:
    """Like :func:`infer` without deduplication, one batch at a time (memory flat in the number
    of genomes). The forward pass is :func:`bertgeom.model.fastpath.classify`."""
    import torch

    from bertgeom.model.data import collate
    from bertgeom.model.fastpath import classify

    model.eval()
    use_bf16 = device.startswith("cuda")
    with torch.inference_mode():
        for a in range(0, len(ids), batch_size):
            rows = ids[a : a + batch_size]
            n = len(rows)
            if n < MIN_BATCH_ROWS:  # copies of the first row; their outputs are dropped
                rows = np.concatenate([rows, np.repeat(rows[:1], MIN_BATCH_ROWS - n, axis=0)])
            batch = {k: v.to(device) for k, v in collate(rows).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits, cls = classify(model, batch["input_ids"], batch["attention_mask"])
            yield Inference(
                logits=logits[:n].float().cpu().numpy(), cls=cls[:n].float().cpu().numpy()
            )
