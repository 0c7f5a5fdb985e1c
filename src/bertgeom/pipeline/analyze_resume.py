"""Checkpoints of ``bertgeom analyze``'s stream: a long run that is interrupted resumes.

``OUT/analyze_checkpoint.pt`` (a ``torch.save`` dict that ``torch.load(weights_only=True)``
reads) holds the stream's state (``Stream.state_dict``: every measure's state and the genomes
done), the predictions so far, the seconds streamed so far and a *fingerprint*: the resolved
config (less the options used only after the stream, ``OUTPUT_ONLY``, and, per measure, only
its ``stream_options``), the device, the sha256 of
the model weights and of ``spikes.parquet``, the sha256 of the genome ids in streaming order and
bertgeom's version. A run whose fingerprint equals the checkpoint's continues at the batch
after it; the accumulators then end in the state an uninterrupted run reaches (the batches and
their order are the same), so the outputs are the same. A checkpoint with another fingerprint, or
one that cannot be read, is reported and ignored (the run starts afresh and replaces it). It is
written atomically every ``checkpoint_minutes`` of streaming and deleted once the outputs are
written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom import __version__
from bertgeom.io.files import atomic_path

CHECKPOINT = "analyze_checkpoint.pt"
#: ``AnalyzeConfig`` fields read only after the stream: they may change on resumption (the
#: measures' own options say which of theirs matter to the stream: ``stream_options``).
OUTPUT_ONLY = frozenset(
    {"all_genomes", "checkpoint_minutes", "measures", "only", "over_training",
     "over_training_only", "over_training_genomes"}
)  # fmt: skip


@dataclass
class Resumed:
    """Where a resumed stream starts."""

    preds: list[np.ndarray]  # predicted output ids of the genomes streamed, per batch
    seconds: float  # streaming time before the interruption


def fingerprint(
    config: Any,
    stream_options: dict[str, dict[str, Any]],
    device: str,
    inputs: list[dict[str, Any]],
    genome_ids: np.ndarray,
) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumed (see the module docstring):
    ``stream_options`` holds, per selected measure, the options that change its stream."""
    options = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in OUTPUT_ONLY
    }
    ids = hashlib.sha256("\n".join(map(str, genome_ids)).encode()).hexdigest()
    return {
        "config": options,
        "measures": {k: dict(sorted(v.items())) for k, v in sorted(stream_options.items())},
        "device": device.split(":")[0],
        "inputs": {Path(x["path"]).name: x["sha256"] for x in inputs},
        "genome_ids_sha256": ids,
        "bertgeom": __version__,
    }


def save(
    out_dir: Path,
    fp: dict[str, Any],
    stream: Any,
    preds: list[np.ndarray],
    seconds: float,
) -> None:
    """Write the checkpoint of the batches ``stream`` finished (``stream.n_done`` genomes;
    ``preds`` may run ahead of it: the rest is dropped) atomically: the previous one stays
    until the new one is whole."""
    import torch

    done = stream.n_done
    flat = np.concatenate(preds)[:done] if preds else np.zeros(0, np.int64)
    state = {
        "fingerprint": fp,
        "preds": [torch.from_numpy(flat.astype(np.int64))],
        "seconds": seconds,
        "stream": stream.state_dict(),
    }
    with atomic_path(out_dir / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def load(out_dir: Path, fp: dict[str, Any], stream: Any) -> Resumed | None:
    """Restore ``stream`` from the checkpoint in ``out_dir`` when its fingerprint is ``fp``;
    None, and ``stream`` untouched, when there is none, it cannot be read or used, or it
    belongs to another run."""
    import torch

    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["fingerprint"]
    except Exception as err:  # a damaged file is not worth failing the run for
        _say(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); starting afresh")
        return None
    if saved != fp:
        changed = sorted(k for k in fp.keys() | saved.keys() if fp.get(k) != saved.get(k))
        if "config" in changed:
            old, new = saved.get("config", {}), fp["config"]
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            changed[changed.index("config")] = "config (" + ", ".join(keys) + ")"
        _say(f"{path}: checkpoint of another run ({'; '.join(changed)} differ); starting afresh")
        return None
    try:
        seconds = float(state["seconds"])
        preds = [p.numpy() for p in state["preds"]]
        done = int(state["stream"]["n_done"])
        if sum(len(p) for p in preds) != done:
            raise ValueError(f"{sum(len(p) for p in preds)} predictions for {done} genomes")
        stream.load_state_dict(state["stream"])  # all or nothing
    except Exception as err:
        _say(f"{path}: unusable checkpoint ({type(err).__name__}: {err}); starting afresh")
        return None
    _say(f"{path}: resuming at genome {done:,}")
    return Resumed(preds=preds, seconds=seconds)


def remove(out_dir: Path) -> None:
    """Delete the checkpoint (the run's outputs are written)."""
    (out_dir / CHECKPOINT).unlink(missing_ok=True)


def _say(msg: str) -> None:
    print(f"analyze: {msg}", file=sys.stderr)
