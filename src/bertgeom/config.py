"""Typed, frozen stage configs: defaults <- TOML file table <- command-line flags.

Each stage has one dataclass. :func:`resolve` builds it from a TOML file's ``[stage]`` table
and explicit overrides (flags left unset are ``None`` and do not override). Unknown keys and
values of the wrong type are a :class:`~bertgeom.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bertgeom.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class PrepareConfig:
    """``bertgeom prepare``: alignment, QC thresholds and the train/val/test split.

    Attributes
    ----------
    jobs
        Worker processes for alignment.
    seed
        Seed of the split.
    dedupe
        Duplicate FASTA ids: ``error`` or ``keep-first``.
    val_fraction, test_fraction
        Split fractions per class (the paper's 6.4 % and 20 %).
    max_n_good, max_n_mediocre, max_ambiguous_good
        QC thresholds (see :mod:`bertgeom.genome.qc`).
    window_pad, query_margin, preset
        Alignment: reference pad around the spike, genome margin, minimap2 preset.
    batch_size
        Genomes per Parquet row group and per worker task batch.
    """

    jobs: int = 1
    seed: int = 42
    dedupe: str = "error"
    val_fraction: float = 0.064
    test_fraction: float = 0.2
    max_n_good: float = 0.01
    max_n_mediocre: float = 0.05
    max_ambiguous_good: int = 3
    window_pad: int = 100
    query_margin: int = 600
    preset: str = "asm20"
    batch_size: int = 256

    def __post_init__(self) -> None:
        _check(self.jobs >= 1, "jobs", "must be >= 1")
        _check(self.dedupe in ("error", "keep-first"), "dedupe", "must be error or keep-first")
        _check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        _check(0 <= self.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        _check(
            self.val_fraction + self.test_fraction < 1,
            "val_fraction + test_fraction",
            "must be < 1",
        )
        _check(
            0 <= self.max_n_good <= self.max_n_mediocre <= 1,
            "max_n_good/max_n_mediocre",
            "must satisfy 0 <= max_n_good <= max_n_mediocre <= 1",
        )
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass(frozen=True)
class SimulateConfig:
    """``bertgeom simulate``: genomes per class and the seed."""

    per_class: int = 60
    seed: int = 42

    def __post_init__(self) -> None:
        _check(self.per_class >= 1, "per_class", "must be >= 1")


def _check(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"config: {key} {why}")


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc


def resolve(
    cls: type[T],
    table: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    source: str = "config",
) -> T:
    """Build ``cls`` from defaults, a config table and overrides (``None`` = unset)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in (table or {}).items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{key}' (valid keys: {valid})")
        values[key] = _coerce(key, value, hints[key], source)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, hints[key], source)
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    types_ = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in types_:
        if t is type(None) and value is None:
            return None
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t in (int, str, bool) and type(value) is t:
            return value
    raise ConfigError(f"{source}: '{key}' must be {hint}, got {value!r}")
