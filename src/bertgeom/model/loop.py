"""Pieces shared by ``train`` and ``pretrain``: device, seeding, RNG states, optimiser, metrics.

Kept apart from :mod:`bertgeom.model.train` so both training stages stay small modules.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertgeom.config import TrainConfig
from bertgeom.errors import ConfigError
from bertgeom.tokens.kmers import KmerSpec
from bertgeom.tokens.vocab import Vocabulary

RAW_SLACK_NT = 30  # raw mode: room for insertions longer than any seen in training


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs.

    Attributes
    ----------
    device
        ``torch.device``.
    bf16
        bf16 autocast for the forward pass (weights and optimiser stay fp32).
    attn
        HF attention implementation.
    """

    device: Any
    bf16: bool
    attn: str


def runtime(config: TrainConfig) -> Runtime:
    """Device, precision and attention kernel of ``config``.

    ``device='auto'`` is CUDA when available; ``precision='auto'`` is bf16 autocast on CUDA and
    fp32 elsewhere. Attention is SDPA on every device: on CPU it computes what eager attention
    does, 1.3x (attention dropout 0.1) to 2.5x (no attention dropout) faster on 2 cores, and
    the saved model loads with either implementation.
    """
    import torch

    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"config: device '{config.device}' is not a torch device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config: device cuda requested but CUDA is not available")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    return Runtime(device=device, bf16=bf16, attn="sdpa")


def autocast(rt: Runtime) -> Any:
    """bf16 autocast context on ``rt.device`` (a no-op context when ``rt.bf16`` is off)."""
    import torch

    return torch.autocast(device_type=rt.device.type, dtype=torch.bfloat16, enabled=rt.bf16)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_states`."""
    import torch

    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def build_optimizer(model: Any, config: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW and its learning-rate schedule.

    No weight decay on biases and LayerNorm parameters (every parameter with fewer than two
    dimensions); the rate rises linearly over ``warmup_ratio * total_steps`` steps, then falls
    linearly to 0 at ``total_steps``.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        eps=config.adam_eps,
        # one fused kernel for the whole update on CUDA (110 M parameters in base)
        fused=bool(params) and all(p.is_cuda for p in params),
    )
    warmup = int(config.warmup_ratio * total_steps)
    return opt, get_linear_schedule_with_warmup(opt, warmup, max(total_steps, 1))


def optimizer_step(model: Any, opt: Any, sched: Any, loss: Any, grad_clip: float) -> None:
    """Backward, gradient-norm clipping (``grad_clip`` > 0), AdamW step and schedule step."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()


def check_loss(value: float, step: int, lr: float, what: str = "training loss") -> None:
    """Stop training with a :class:`~bertgeom.errors.TrainingError` when ``value`` is not finite
    (NaN or infinite weights would otherwise be saved and classify everything as one class)."""
    import math

    from bertgeom.errors import TrainingError

    if not math.isfinite(value):
        raise TrainingError(
            f"training diverged: the {what} is {value} at step {step} (peak lr {lr:g}); "
            "nothing more was saved (lower --lr, or check the prepared data)"
        )


def progress_bar(total: int, initial: int, desc: str, progress: bool) -> Any:
    """Progress over optimiser steps on stderr (:func:`bertgeom.progress.progress`: a bar on a
    terminal, plain lines in a log; nothing when ``progress`` is false)."""
    from bertgeom.progress import progress as progress_reporter

    return progress_reporter(total=total, desc=desc, unit="step", enabled=progress, initial=initial)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars (``Writing model shards``) inside the block."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def kmer_spec(config: TrainConfig) -> KmerSpec:
    """The tokenization a config asks for."""
    return KmerSpec(k=config.k, stride=config.stride, mode=config.token_mode)  # type: ignore[arg-type]


def n_positions_for(vocab: Vocabulary, seqs: Sequence[str]) -> int:
    """Positions a model needs: 427 in aligned mode; in raw mode the longest training sequence
    plus ``RAW_SLACK_NT`` nucleotides, at least the reference spike's."""
    if vocab.spec.mode == "aligned":
        return vocab.n_positions()
    longest = max((len(s) for s in seqs), default=0) + RAW_SLACK_NT
    return max(vocab.n_positions(), vocab.spec.n_tokens(longest) + 2)
