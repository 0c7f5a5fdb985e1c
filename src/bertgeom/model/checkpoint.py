"""Training checkpoints (``out_dir/checkpoints/last.pt``): everything an exact resume needs.

A checkpoint is a ``torch.save`` dict that ``torch.load(weights_only=True)`` reads: model,
optimiser and scheduler state dicts, the run's position and bookkeeping (``progress``), every
RNG state, the config (as a dict), the vocabulary tokens and the class labels. It is written
atomically (temporary file, then rename), so an interrupted write leaves the previous one.

A run of several ``torchrun`` processes (:mod:`bertgeom.model.distributed`) also records its
``world_size`` and, in ``rank_rng``, every rank's RNG states (``rng`` is rank 0's); it resumes
only at the same world size, each rank with its own states.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bertgeom.config import TrainConfig
from bertgeom.errors import ArtifactError, ConfigError
from bertgeom.io.files import atomic_path, reading
from bertgeom.model import loop
from bertgeom.tokens.kmers import KmerSpec
from bertgeom.tokens.vocab import SPECIAL_TOKENS, Vocabulary

CHECKPOINT = Path("checkpoints") / "last.pt"
#: Options that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "patience", "threads", "device", "compile"})


class StaleCheckpointError(ConfigError):
    """A checkpoint that this run may not resume: other config or other data (``bertgeom run``
    discards it and trains again)."""


def save_checkpoint(
    path: Path,
    parts: dict[str, Any],
    progress: dict[str, Any],
    config: TrainConfig,
    vocab: Vocabulary,
    labels: tuple[str, ...],
    data_sha256: str,
    rank_rng: list[dict[str, Any]] | None = None,
) -> None:
    """Write a checkpoint; ``parts`` maps ``model``/``optimizer``/``scheduler`` to objects with a
    ``state_dict()``; ``data_sha256`` is the prepared data's fingerprint. ``rank_rng`` holds
    every rank's RNG states (:func:`bertgeom.model.loop.rng_states`) in rank order; None: one
    process, whose current states are taken here."""
    import torch

    rank_rng = rank_rng or [loop.rng_states()]
    ckpt = {name: obj.state_dict() for name, obj in parts.items()}
    if len(rank_rng) > 1:
        ckpt["rank_rng"] = rank_rng
    ckpt |= {
        "progress": progress,
        "rng": rank_rng[0],
        "world_size": len(rank_rng),
        "config": dataclasses.asdict(config),
        "vocab": {
            "tokens": list(vocab.tokens),
            "spec": dataclasses.asdict(vocab.spec),
            "length": vocab.length,
            "min_count": vocab.min_count,
        },
        "labels": list(labels),
        "data_sha256": data_sha256,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(
    path: Path, config: TrainConfig, data_sha256: str, mmap: bool = False, world_size: int = 1
) -> dict[str, Any]:
    """Read a checkpoint and check that ``config`` may resume it on data ``data_sha256`` with
    ``world_size`` processes (``mmap``: map the tensors instead of reading them, for a check
    before the real load).

    Raises
    ------
    ArtifactError
        No checkpoint at ``path``, or a damaged one.
    StaleCheckpointError
        The checkpoint was written for other prepared data (or records none), or ``config``
        differs from its config in an option outside ``RESUMABLE_CHANGES``.
    ConfigError
        The checkpoint was written by another number of processes.
    """
    import torch

    if not path.is_file():
        raise ArtifactError(f"{path}: no checkpoint to resume from (train without resume)")
    with reading(path, "training checkpoint", "delete it and train without --resume"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        if not isinstance(ckpt, dict) or "config" not in ckpt or "progress" not in ckpt:
            raise ValueError("not a bertgeom training checkpoint")
    saved_data = ckpt.get("data_sha256")
    if saved_data != data_sha256:
        was = f"sha256 {saved_data[:12]}" if saved_data else "data it does not record"
        raise StaleCheckpointError(
            f"{path}: cannot resume: it was trained on {was}, and the prepared data now has "
            f"sha256 {data_sha256[:12]} (train without --resume into a new --out, or remove "
            f"{path.parent})"
        )
    now = dataclasses.asdict(config)
    # an option added after the checkpoint was written counts at its default
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    saved = defaults | ckpt["config"]
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        detail = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise StaleCheckpointError(f"{path}: cannot resume with a different config ({detail})")
    saved_world = int(ckpt.get("world_size", 1))
    if saved_world != world_size:
        raise ConfigError(
            f"{path}: cannot resume: written by {_processes(saved_world)}, resumed by "
            f"{_processes(world_size)}; resume with the same torchrun --nnodes x "
            "--nproc-per-node (each rank continues its own random draws), or train anew"
        )
    return ckpt


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes (torchrun)"


def checkpoint_vocabulary(ckpt: dict[str, Any]) -> Vocabulary:
    """The vocabulary a checkpoint was trained with."""
    v = ckpt["vocab"]
    return Vocabulary(
        spec=KmerSpec(**v["spec"]),
        length=int(v["length"]),
        min_count=int(v["min_count"]),
        kmers=tuple(v["tokens"][len(SPECIAL_TOKENS) :]),
    )


def restore_states(
    ckpt: dict[str, Any], parts: dict[str, Any], labels: tuple[str, ...], rank: int = 0
) -> None:
    """Load the state dicts of ``parts`` and the RNG states of process ``rank`` from ``ckpt``."""
    if tuple(ckpt["labels"]) != labels:
        raise ArtifactError(
            f"checkpoint classes {ckpt['labels']} differ from the data's {list(labels)}"
        )
    for name, obj in parts.items():
        obj.load_state_dict(ckpt[name])
    loop.set_rng_states(ckpt["rank_rng"][rank] if "rank_rng" in ckpt else ckpt["rng"])
