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
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def infer(model: Any, ids: np.ndarray, batch_size: int = 64, device: str = "cpu") -> Inference:
    """Run ``model`` (a ``BertForSequenceClassification``) over token ids (n, positions)."""
    logits, cls = [], []
    for part in iter_infer(model, ids, batch_size, device):
        logits.append(part.logits)
        cls.append(part.cls)
    if not logits:
        h = model.config.hidden_size
        return Inference(np.zeros((0, model.config.num_labels), np.float32), np.zeros((0, h)))
    return Inference(np.concatenate(logits), np.concatenate(cls))


def iter_infer(
    model: Any, ids: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> Iterator[Inference]:
    """Like :func:`infer`, one batch at a time (memory flat in the number of genomes)."""
    import torch

    from bertgeom.model.data import collate

    model.eval()
    use_bf16 = device.startswith("cuda")
    with torch.inference_mode():
        for a in range(0, len(ids), batch_size):
            batch = {k: v.to(device) for k, v in collate(ids[a : a + batch_size]).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                out = model(**batch, output_hidden_states=True)
            yield Inference(
                logits=out.logits.float().cpu().numpy(),
                cls=out.hidden_states[-1][:, 0].float().cpu().numpy(),
            )
