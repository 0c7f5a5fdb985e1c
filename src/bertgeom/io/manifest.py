"""Stage manifests: inputs with sha256, the resolved config, package versions, outputs."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from bertgeom import __version__
from bertgeom.errors import ArtifactError
from bertgeom.io.files import read_json, sha256_file, write_json

#: Distributions whose versions are recorded (those not installed are left out).
TRACKED_PACKAGES = (
    "numpy",
    "pyarrow",
    "pandas",
    "mappy",
    "torch",
    "transformers",
    "safetensors",
    "scikit-learn",
    "matplotlib",
    "umap-learn",
)


def package_versions() -> dict[str, str]:
    """Versions of Python, bertgeom and the tracked packages (without importing them)."""
    out = {"python": platform.python_version(), "bertgeom": __version__}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def describe_inputs(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Path, size and sha256 of each input file."""
    return [{"path": str(p), "bytes": os.path.getsize(p), "sha256": sha256_file(p)} for p in paths]


def write_manifest(
    out_dir: str | os.PathLike,
    stage: str,
    inputs: list[dict[str, Any]],
    config: Any,
    outputs: Iterable[str],
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/manifest.json`` atomically and return its path.

    ``config`` is a dataclass (or a mapping); ``outputs`` are file names inside ``out_dir``,
    recorded with their sha256 so later stages can tell whether they are up to date.
    """
    out = Path(out_dir)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    manifest = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "inputs": inputs,
        "config": cfg,
        "versions": package_versions(),
        "outputs": [{"path": name, "sha256": sha256_file(out / name)} for name in outputs],
        "summary": dict(summary or {}),
    }
    path = out / "manifest.json"
    write_json(path, manifest)
    return path


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``out_dir/manifest.json``."""
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file (run the stage that writes {out_dir} first)")
    doc = read_json(path, "manifest")
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs", []), list):
        raise ArtifactError(f"{path}: damaged or not a bertgeom manifest (re-run its stage)")
    return doc


_HASHES: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime) -> sha256


def _sha256_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 that the ``manifest.json`` beside ``path`` records for it (None when there is
    no readable manifest, or it does not list the file)."""
    p = Path(path)
    manifest = p.parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        for item in doc.get("outputs", []):
            if item.get("path") == p.name:
                return str(item["sha256"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return None


def verify_artifact(path: str | os.PathLike) -> Path:
    """Check a file a stage reads against the sha256 its folder's manifest records.

    Used by every reader of stage outputs (spikes table, model files, OOD detector, report
    tables). Without a manifest, or when the manifest does not list the file, there is nothing
    to check. Hashes are cached per (file, size, modification time) within a process.

    Raises
    ------
    ArtifactError
        The file differs from what its stage wrote (damaged, truncated, edited or swapped).
    """
    p = Path(path)
    expected = recorded_sha256(p)
    if expected is None or not p.is_file():
        return p
    try:
        actual = _sha256_cached(p)
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    if actual != expected:
        stage = recorded_stage(p.parent)
        raise ArtifactError(
            f"{p}: changed since {stage} wrote it (sha256 {actual[:12]}, manifest "
            f"{expected[:12]}: damaged, edited or replaced; re-run {stage})"
        )
    return p


def recorded_stage(folder: str | os.PathLike) -> str:
    """``bertgeom <stage>`` as named by ``folder/manifest.json`` (``its stage`` if unknown)."""
    try:
        doc = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        return f"`bertgeom {doc['stage']}`"
    except (OSError, ValueError, TypeError, KeyError):
        return "its stage"


def refresh_outputs(out_dir: str | os.PathLike, added: Iterable[str] = ()) -> None:
    """Re-hash the outputs a manifest lists (plus ``added`` ones) after a later step of the
    same stage changed them (e.g. calibration after training); nothing without a manifest."""
    out = Path(out_dir)
    if not (out / "manifest.json").is_file():
        return
    manifest = read_manifest(out)
    names = [o["path"] for o in manifest.get("outputs", [])]
    names += [n for n in added if n not in names]
    manifest["outputs"] = [
        {"path": n, "sha256": sha256_file(out / n)} for n in names if (out / n).is_file()
    ]
    write_json(out / "manifest.json", manifest)
