"""Light training snapshots: the model's weights at chosen optimiser steps, for the geometry
over training (``bertgeom analyze --over-training``).

``train`` with ``snapshots = N`` (``--snapshots N``) or ``snapshot_every = K``
(``--snapshot-every K``) writes, into ``out_dir/snapshots/``, one ``step-SSSSSSSS.safetensors``
per chosen step (the model's state dict only: no optimiser, no RNG; ``snapshot_dtype`` float32,
exactly the weights, or float16, half the size) and ``snapshots.tsv``, the index: step, epoch
(completed epochs as a fraction), file, and the validation loss, accuracy and macro-F1 when the
step ends an epoch (validation runs only then; empty otherwise).

Schedules (:func:`snapshot_steps`), over the run's planned steps ``total``
(``epochs x batches per epoch``, at most ``max_steps``):

- ``snapshots = N``: step 0 (the initial weights), then ``N - 1`` steps log-spaced from 1 to
  ``total`` (rounded; duplicates merged, so a short run may keep fewer): dense early, where the
  geometry changes fastest;
- ``snapshot_every = K``: steps 0, K, 2K, ... and ``total``.

Whatever the schedule, the step at which training ends (early stopping, ``max_steps``) is
always kept, so the last snapshot is the final weights. A snapshot never changes training:
saving reads the weights only (exact resume holds; a resumed run rewrites the snapshots of the
steps it repeats with the same weights).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.errors import ArtifactError
from bertgeom.io.files import atomic_path, write_tsv

SNAPSHOTS_DIR = "snapshots"
INDEX = "snapshots.tsv"
#: Columns of ``snapshots/snapshots.tsv``.
INDEX_COLUMNS = ("step", "epoch", "file", "val_loss", "val_accuracy", "val_macro_f1")
#: Validation columns copied from ``history.tsv`` at the snapshot's step.
VAL_COLUMNS = INDEX_COLUMNS[3:]
DTYPES = ("float32", "float16")
_FILE = re.compile(r"^step-(\d{8})\.safetensors$")


def snapshot_file(step: int) -> str:
    """File name of the snapshot at ``step``."""
    return f"step-{step:08d}.safetensors"


def snapshot_steps(total: int, count: int = 0, every: int = 0) -> tuple[int, ...]:
    """The planned snapshot steps of a run of ``total`` optimiser steps (see the module
    docstring); empty when neither ``count`` nor ``every`` is set."""
    if total < 0 or count < 0 or every < 0:
        raise ValueError("total, count and every must be >= 0")
    if count:
        if count == 1 or total == 0:
            return (total,)
        logs = np.geomspace(1, total, count - 1) if count > 2 else np.array([total])
        steps = {0, *(round(float(s)) for s in logs)}
        return tuple(sorted(s for s in steps if 0 <= s <= total))
    if every:
        return tuple(sorted({*range(0, total + 1, every), total}))
    return ()


@dataclass
class Snapshots:
    """The snapshot writer of one training run.

    Attributes
    ----------
    folder : ``out_dir/snapshots``
    steps : the planned steps
    steps_per_epoch : batches per epoch (epoch column = step / steps_per_epoch)
    dtype : ``float32`` or ``float16``
    """

    folder: Path
    steps: frozenset[int]
    steps_per_epoch: int
    dtype: str = "float32"
    saved: set[int] = field(default_factory=set)

    @classmethod
    def for_run(
        cls, out_dir: str | os.PathLike, config: Any, steps_per_epoch: int
    ) -> Snapshots | None:
        """The writer ``config`` (a ``TrainConfig``) asks for, None when it asks for none."""
        if not (config.snapshots or config.snapshot_every):
            return None
        total = config.epochs * steps_per_epoch
        if config.max_steps:
            total = min(total, config.max_steps)
        steps = snapshot_steps(total, config.snapshots, config.snapshot_every)
        folder = Path(out_dir) / SNAPSHOTS_DIR
        done = {s for s, _ in _files(folder)}
        return cls(folder, frozenset(steps), steps_per_epoch, config.snapshot_dtype, done)

    def maybe_save(self, model: Any, step: int) -> None:
        """Save the weights when ``step`` (optimiser steps done) is a planned one."""
        if step in self.steps:
            self.save(model, step)

    def save(self, model: Any, step: int) -> Path:
        """Write the weights of ``model`` as the snapshot of ``step``."""
        import torch
        from safetensors.torch import save_file

        dtype = getattr(torch, self.dtype)
        weights = {
            k: v.detach().to("cpu", dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
            for k, v in model.state_dict().items()
        }
        path = self.folder / snapshot_file(step)
        with atomic_path(path) as tmp:
            save_file(weights, str(tmp), metadata={"step": str(step), "dtype": self.dtype})
        self.saved.add(step)
        return path

    def write_index(self, history: Sequence[Mapping[str, float]]) -> None:
        """Write ``snapshots.tsv`` for the snapshots on disk, with the validation metrics of
        the ``history`` rows (``history.tsv``) at their steps."""
        by_step = {int(r["step"]): r for r in history}
        rows = []
        for step, name in _files(self.folder):
            val = by_step.get(step, {})
            rows.append(
                [step, round(step / max(self.steps_per_epoch, 1), 6), name]
                + [val.get(c) for c in VAL_COLUMNS]
            )
        write_tsv(self.folder / INDEX, INDEX_COLUMNS, rows)

    def outputs(self) -> list[str]:
        """The snapshot files and the index, relative to the model directory."""
        names = [f"{SNAPSHOTS_DIR}/{name}" for _, name in _files(self.folder)]
        return [*names, f"{SNAPSHOTS_DIR}/{INDEX}"] if names else []


def _files(folder: Path) -> list[tuple[int, str]]:
    """(step, file name) of the snapshot files in ``folder``, by step."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in folder.iterdir() if (m := _FILE.match(p.name))]
    return sorted(found)


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as read back: its step, epoch, file and validation metrics (NaN when the
    step ended no epoch)."""

    step: int
    epoch: float
    path: Path
    val_loss: float = math.nan
    val_accuracy: float = math.nan
    val_macro_f1: float = math.nan


def read_snapshots(model_dir: str | os.PathLike) -> list[Snapshot]:
    """The snapshots of a model directory, by step (``snapshots/snapshots.tsv``).

    Raises
    ------
    ArtifactError
        No snapshot index, a damaged one, or a listed file missing.
    """
    import pandas as pd

    index = Path(model_dir) / SNAPSHOTS_DIR / INDEX
    if not index.is_file():
        raise ArtifactError(
            f"{index}: no such file (the model was trained without snapshots; train with "
            "--snapshots N or --snapshot-every K)"
        )
    try:
        table = pd.read_csv(index, sep="\t")
        missing = [c for c in INDEX_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"missing columns {', '.join(missing)}")
        out = [
            Snapshot(
                step=int(r.step),
                epoch=float(r.epoch),
                path=index.parent / str(r.file),
                **{c: float(getattr(r, c)) for c in VAL_COLUMNS},
            )
            for r in table.itertuples(index=False)
        ]
    except (ValueError, TypeError, pd.errors.ParserError) as err:
        raise ArtifactError(f"{index}: damaged snapshot index ({err})") from None
    for s in out:
        if not s.path.is_file():
            raise ArtifactError(f"{s.path}: snapshot listed in {index} is missing")
    if not out:
        raise ArtifactError(f"{index}: lists no snapshot")
    _verify(Path(model_dir), [index, *(s.path for s in out)])
    return sorted(out, key=lambda s: s.step)


def _verify(model_dir: Path, paths: Sequence[Path]) -> None:
    """Check ``paths`` against the sha256 the model directory's manifest records for them (as
    ``snapshots/<name>``; nothing to check without a manifest or an entry)."""
    import json

    from bertgeom.io.files import sha256_file

    try:
        doc = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
        recorded = {str(o["path"]): str(o["sha256"]) for o in doc.get("outputs", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return
    for path in paths:
        want = recorded.get(f"{SNAPSHOTS_DIR}/{path.name}")
        if want is not None and sha256_file(path) != want:
            raise ArtifactError(
                f"{path}: changed since bertgeom train wrote it (sha256 differs from "
                f"{model_dir / 'manifest.json'}: damaged, edited or replaced; retrain)"
            )


def load_snapshot(model: Any, snapshot: Snapshot) -> None:
    """Load the weights of ``snapshot`` into ``model`` (same architecture; float16 weights are
    widened to the model's dtype)."""
    from safetensors.torch import load_file

    from bertgeom.io.files import reading

    with reading(snapshot.path, "snapshot weights (safetensors)"):
        weights = load_file(str(snapshot.path))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ArtifactError(f"{snapshot.path}: not the weights of this model ({first})") from None
