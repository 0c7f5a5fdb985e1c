"""Installed (shipped) models: named, versioned model directories found by name.

A model is *installed* when its directory sits in a models folder: the package's own
``bertgeom/resources/models/<name>/`` (where ``make model`` puts ``sc2-spike-small``), or a
folder listed in the environment variable ``BERTGEOM_MODELS`` (``os.pathsep``-separated,
searched first: a site-wide model store on a cluster). Its ``bertgeom_model.json`` holds
``name`` and ``version``; its ``README.md`` is the model card.

``predict`` without a model uses :data:`DEFAULT_MODEL`; a model is named as ``NAME`` (the
newest version found) or ``NAME@VERSION``, or given as a model directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bertgeom.errors import ArtifactError

#: The model ``predict`` uses when none is given.
DEFAULT_MODEL = "sc2-spike-small"
#: Extra models folders, searched before the package's own.
MODELS_ENV = "BERTGEOM_MODELS"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_META = "bertgeom_model.json"


@dataclass(frozen=True)
class InstalledModel:
    """One installed model directory."""

    name: str
    version: str
    path: Path
    classes: tuple[str, ...]
    weights_dtype: str

    @property
    def label(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


def package_models_dir() -> Path:
    """The package's own models folder (``bertgeom/resources/models``)."""
    return Path(str(resources.files("bertgeom.resources"))) / "models"


def models_dirs() -> list[Path]:
    """The folders searched for installed models, in search order."""
    extra = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [*extra, package_models_dir()]


def check_name(text: str, what: str = "model name") -> str:
    """``text`` if it is a valid model name or version (lower-case letters, digits, ``.``,
    ``_`` and ``-``, starting with a letter or digit); else a ConfigError."""
    from bertgeom.errors import ConfigError

    if not _NAME.fullmatch(text):
        raise ConfigError(
            f"invalid {what} {text!r}: use lower-case letters, digits, '.', '_' and '-' "
            "(e.g. sc2-spike-small, 2026-12)"
        )
    return text


def installed_models() -> list[InstalledModel]:
    """Every installed model, in search order (see :func:`models_dirs`), names sorted within a
    folder."""
    found: list[InstalledModel] = []
    for root in models_dirs():
        if not root.is_dir():
            continue
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            meta_path = d / _META
            if not meta_path.is_file():
                continue
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not meta.get("name") or not meta.get("version"):
                continue
            found.append(
                InstalledModel(
                    name=str(meta["name"]),
                    version=str(meta["version"]),
                    path=d,
                    classes=tuple(meta.get("labels", ())),
                    weights_dtype=str(meta.get("weights_dtype", "float32")),
                )
            )
    return found


def find_model(spec: str | os.PathLike | None = None) -> Path:
    """The directory of a model: ``None`` is :data:`DEFAULT_MODEL`; an existing directory is
    itself; otherwise an installed model's ``NAME`` (newest version) or ``NAME@VERSION``.

    Raises
    ------
    ArtifactError
        When no installed model has that name (the message lists the installed ones and how
        to install the default).
    """
    if spec is not None and Path(spec).is_dir():
        return Path(spec)
    text = DEFAULT_MODEL if spec is None else str(spec)
    name, _, version = text.partition("@")
    models = installed_models()
    hits = [m for m in models if m.name == name and (not version or m.version == version)]
    if not hits:
        have = ", ".join(m.label for m in models) or "none"
        how = (
            " (`make model` in a source checkout trains and installs it)"
            if name == DEFAULT_MODEL
            else ""
        )
        raise ArtifactError(
            f"model {text!r}: not a model directory and not an installed model{how}; "
            f"installed: {have}"
        )
    return max(hits, key=lambda m: m.version).path


def identity(directory: str | os.PathLike, meta: dict) -> tuple[str, str]:
    """``(name, version)`` of a model directory: from its metadata, else the directory's name
    and ``unversioned``."""
    name = str(meta.get("name") or Path(directory).resolve().name)
    return name, str(meta.get("version") or "unversioned")
