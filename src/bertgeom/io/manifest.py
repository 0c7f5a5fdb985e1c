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
from bertgeom.io.files import sha256_file, write_json

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
    return json.loads(path.read_text(encoding="utf-8"))


def refresh_outputs(out_dir: str | os.PathLike, added: Iterable[str] = ()) -> None:
    """Re-hash the outputs a manifest lists (plus ``added`` ones) after a later step of the
    same stage changed them (e.g. calibration after training)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    names = [o["path"] for o in manifest.get("outputs", [])]
    names += [n for n in added if n not in names]
    manifest["outputs"] = [
        {"path": n, "sha256": sha256_file(out / n)} for n in names if (out / n).is_file()
    ]
    write_json(out / "manifest.json", manifest)
