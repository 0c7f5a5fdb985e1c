"""``bertgeom train`` and ``bertgeom pretrain``: validate paths, then call :mod:`bertgeom.model`.

Outputs are described in :mod:`bertgeom.model.train` (a model directory with ``history.tsv``,
``checkpoints/last.pt`` and ``manifest.json``) and :mod:`bertgeom.model.pretrain`.

``train`` under ``torchrun`` (:mod:`bertgeom.model.distributed`): every rank checks the paths
and trains; rank 0 alone writes the folder and calibrates the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertgeom.config import TrainConfig
from bertgeom.errors import ArtifactError, InputError
from bertgeom.io.outputs import check_target, writing

if TYPE_CHECKING:
    from bertgeom.model.distributed import World


def _check_paths(
    prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, config: TrainConfig, stage: str
) -> None:
    from bertgeom.model.data import spikes_path

    spikes_path(prepared_dir)
    check_target(out_dir, [prepared_dir, config.init_from or None], stage=stage)


def _check_init_from(config: TrainConfig) -> None:
    from bertgeom.model.pretrain import read_pretrain_meta
    from bertgeom.model.store import WEIGHTS

    if not config.init_from:
        return
    d = Path(config.init_from)
    if not d.is_dir():
        raise InputError(f"{d}: no such directory (init_from: a `bertgeom pretrain` output)")
    read_pretrain_meta(d)
    from bertgeom.io.files import reading
    from bertgeom.tokens.vocab import load_vocabulary

    with reading(d, "bertgeom tokenizer (vocab.txt, bertgeom_tokens.json)"):
        load_vocabulary(d)
    if not (d / WEIGHTS).is_file():
        raise ArtifactError(f"{d / WEIGHTS}: no such file (pre-training did not finish?)")


def run(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
) -> Any:
    """Train a classifier: :func:`bertgeom.model.train.train` after checking the paths.

    Under ``torchrun`` every process calls this; they train together and rank 0 writes.

    Returns
    -------
    bertgeom.model.train.TrainResult
    """
    from bertgeom.model import distributed

    with distributed.session(config.device) as world:
        return _run(prepared_dir, out_dir, config, resume, progress, world)


def _run(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool,
    progress: bool,
    world: World,
) -> Any:
    _check_paths(prepared_dir, out_dir, config, "train")
    _check_init_from(config)
    from bertgeom.model.train import CHECKPOINT

    ckpt = Path(out_dir) / CHECKPOINT
    if resume and not ckpt.is_file():
        raise ArtifactError(f"{ckpt}: no checkpoint to resume from")
    if resume:  # other config or other data: refused before the folder is touched
        from bertgeom.io.files import sha256_file
        from bertgeom.model.checkpoint import load_checkpoint
        from bertgeom.model.data import spikes_path

        data_sha = sha256_file(spikes_path(prepared_dir))
        load_checkpoint(ckpt, config, data_sha, mmap=True, world_size=world.size)
    if not resume and ckpt.exists():
        raise ArtifactError(f"{ckpt} exists: resume it, or choose a new output dir")
    from bertgeom.model.train import train
    from bertgeom.pipeline import calibrate

    if not world.main:  # trains its share; rank 0 writes and calibrates
        return train(prepared_dir, out_dir, config, resume=resume, progress=False, world=world)
    inputs = [prepared_dir, config.init_from or None]
    with writing(out_dir, inputs=inputs, fresh=not resume, stage="train"):
        result = train(prepared_dir, out_dir, config, resume=resume, progress=progress, world=world)
        # temperature (validation split) and OOD detector (training split), stored with the
        # model; calibrate re-hashes the model's manifest
        calibrate.run(out_dir, prepared_dir, device=config.device)
    return result


def run_pretrain(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    progress: bool = True,
) -> Path:
    """Pre-train an encoder: :func:`bertgeom.model.pretrain.pretrain` after checking paths."""
    _check_paths(prepared_dir, out_dir, config, "pretrain")
    from bertgeom.model.pretrain import pretrain

    with writing(out_dir, inputs=[prepared_dir], stage="pretrain"):
        return pretrain(prepared_dir, out_dir, config, progress=progress)
