"""Typed, frozen stage configs: defaults <- TOML file table <- command-line flags.

Each stage has one dataclass. :func:`resolve` builds it from a TOML file's ``[stage]`` table
and explicit overrides (flags left unset are ``None`` and do not override). Unknown keys and
values of the wrong type are a :class:`~bertgeom.errors.ConfigError` naming the key, and so is
every number that is not finite (NaN, inf) and every seed outside 0..2**32 - 1 (numpy's range).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bertgeom.errors import ConfigError

T = TypeVar("T")
#: Seeds are passed to numpy, whose legacy seeding takes 0..2**32 - 1.
MAX_SEED = 2**32 - 1
#: Upper bound of worker processes and threads (a typo such as ``--jobs 40000`` would fork
#: until the machine stops).
MAX_WORKERS = 1024


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
    max_n_good, max_n_mediocre
        QC: spike N fraction (unreached columns included) above which a genome is mediocre,
        bad.
    max_ambiguous_good, max_ambiguous_mediocre
        QC: mixed sites (ambiguous IUPAC codes other than N) in the spike above which a genome
        is mediocre, bad (10 is Nextclade's mixed-sites threshold, applied to the spike alone).
    max_indel_good
        QC: bases inserted into the spike in total, or deleted from it, above which a genome is
        mediocre (real spikes carry at most ~40 nt of indels).
    min_spike_length, max_spike_length
        QC: a spike as read (3,822 reference columns, minus deleted, plus inserted bases)
        outside this range is bad.
    max_genome_length_good, max_genome_length_mediocre
        QC: genome length (gaps removed) above which a genome is mediocre, bad (the reference
        is 29,903 nt; 45,000 is about 1.5 times that).
    window_pad, query_margin, preset
        Alignment: reference pad around the spike, genome margin, minimap2 preset (one of
        :data:`bertgeom.genome.align.MINIMAP2_PRESETS`).
    batch_size
        Genomes per Parquet row group and per worker task batch.
    split_by
        ``spike``: the split above (identical spikes kept together); ``lineage``: whole lineage
        groups held out of training into ``test`` (``bertgeom.genome.split.assign_lineage_splits``),
        the rest split as with ``spike``.
    lineage_column
        Column of the labels TSV holding each genome's lineage (empty = the first of
        ``pango_nearest``, ``pango_lineage``, ``lineage``).
    lineage_depth
        Lineages are grouped to their first ``lineage_depth`` dot-separated parts (0 = the whole
        name: ``B.1.429`` and ``B.1.427`` are two groups; 2 puts both in ``B.1``).
    held_out_fraction
        Share of each class's genomes whose lineage groups are held out (seeded choice).
    holdout
        Comma-separated lineages held out whatever the draw (their sublineages too), e.g.
        ``B.1.427,B.1.429,B.1.526``.
    min_lineages
        A class with fewer lineage groups than this keeps them all in training (only those in
        ``holdout`` are held out).
    """

    jobs: int = 1
    seed: int = 42
    dedupe: str = "error"
    val_fraction: float = 0.064
    test_fraction: float = 0.2
    max_n_good: float = 0.01
    max_n_mediocre: float = 0.05
    max_ambiguous_good: int = 3
    max_ambiguous_mediocre: int = 10
    max_indel_good: int = 60
    min_spike_length: int = 3700
    max_spike_length: int = 3900
    max_genome_length_good: int = 31000
    max_genome_length_mediocre: int = 45000
    window_pad: int = 100
    query_margin: int = 600
    preset: str = "asm20"
    batch_size: int = 256
    split_by: str = "spike"
    lineage_column: str = ""
    lineage_depth: int = 0
    held_out_fraction: float = 0.15
    holdout: str = ""
    min_lineages: int = 3

    def __post_init__(self) -> None:
        _check_common(self)
        _check(1 <= self.jobs <= MAX_WORKERS, "jobs", f"must be in 1..{MAX_WORKERS}")
        _check(self.split_by in ("spike", "lineage"), "split_by", "must be spike or lineage")
        _check(self.lineage_depth >= 0, "lineage_depth", "must be >= 0")
        _check(0 <= self.held_out_fraction < 1, "held_out_fraction", "must be in [0, 1)")
        _check(self.min_lineages >= 1, "min_lineages", "must be >= 1")
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
        _check(
            0 <= self.max_ambiguous_good <= self.max_ambiguous_mediocre,
            "max_ambiguous_good/max_ambiguous_mediocre",
            "must satisfy 0 <= max_ambiguous_good <= max_ambiguous_mediocre",
        )
        _check(self.max_indel_good >= 0, "max_indel_good", "must be >= 0")
        _check(
            0 < self.min_spike_length <= self.max_spike_length,
            "min_spike_length/max_spike_length",
            "must satisfy 0 < min_spike_length <= max_spike_length",
        )
        _check(
            0 < self.max_genome_length_good <= self.max_genome_length_mediocre,
            "max_genome_length_good/max_genome_length_mediocre",
            "must satisfy 0 < max_genome_length_good <= max_genome_length_mediocre",
        )
        from bertgeom.genome.align import MINIMAP2_PRESETS

        _check(
            self.preset in MINIMAP2_PRESETS,
            "preset",
            f"must be a minimap2 preset: one of {', '.join(MINIMAP2_PRESETS)} "
            f"(got '{self.preset}')",
        )
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")

    @property
    def holdout_lineages(self) -> tuple[str, ...]:
        """The lineages of ``holdout``, in the order given."""
        return tuple(x.strip() for x in self.holdout.split(",") if x.strip())


@dataclass(frozen=True)
class SimulateConfig:
    """``bertgeom simulate``: genomes per class and the seed."""

    per_class: int = 60
    seed: int = 42

    def __post_init__(self) -> None:
        _check_common(self)
        _check(self.per_class >= 1, "per_class", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """``bertgeom train`` (and ``pretrain``): tokens, model size, optimisation.

    Attributes
    ----------
    preset
        ``tiny``, ``small`` or ``base`` (:mod:`bertgeom.model.presets`).
    k, stride, token_mode, min_count
        Tokenization (:mod:`bertgeom.tokens`); the vocabulary comes from the training split.
    epochs, batch_size, lr, weight_decay, adam_eps, warmup_ratio, grad_clip
        AdamW with linear warm-up over ``warmup_ratio`` of the steps, then linear decay, and
        gradient-norm clipping (science.md §1). ``epochs``, ``batch_size`` and ``lr`` left unset
        (``None``; and ``patience`` at -1) take the preset's recipe
        (``bertgeom.model.presets.RECIPES``) when the config is built, so a saved config always
        holds the values used (a config copied with ``dataclasses.replace`` keeps the values it
        has); 0 is refused, never replaced. ``lr`` is higher than the paper's 2e-5 because the
        encoder is trained from scratch, not fine-tuned.
    balance
        Class balance: ``sampler`` (inverse-frequency sampling), ``weights`` (weighted loss) or
        ``none``.
    patience
        Early stopping: epochs without a better validation macro-F1 (0 = never stop early).
    seed
        Seeds Python, numpy and torch; data order per epoch derives from (seed, epoch).
    device, precision
        ``auto`` = CUDA when present; ``auto`` precision = bf16 autocast on GPU, fp32 on CPU.
    max_steps
        Stop after this many optimiser steps (0 = no limit), for tests and smoke runs.
    init_from
        A ``bertgeom pretrain`` output directory whose encoder weights start training.
    threads
        torch CPU threads (0 = torch's default).
    compile
        ``torch.compile`` the training forward pass (a one-off compilation, then faster steps,
        mainly on GPU; needs a C++ compiler on CPU). Weights and checkpoints are unaffected.
    mask_prob
        ``pretrain`` only: share of k-mer tokens masked.
    hard_negatives
        Hard negatives of ``other`` added to training, per ``other`` training genome: real
        ``other`` spikes carrying one to ``hard_negative_events`` defining changes of a named
        class (``bertgeom.model.hardneg``), so that a class is learned from its constellation,
        not a shortcut of one or two sites (0 = none; aligned tokens only).
    hard_negative_events
        Most defining events (a substitution, or a run of changes at consecutive residues)
        planted into one hard negative.
    snapshots, snapshot_every, snapshot_dtype
        ``train`` only: keep the model's weights at ``snapshots`` steps (step 0, then log-spaced
        to the last step) or every ``snapshot_every`` steps (0 = none; not both), in
        ``snapshots/`` of the model directory, as ``float32`` (exact) or ``float16``
        (:mod:`bertgeom.model.snapshots`), for ``bertgeom analyze --over-training``.
    """

    preset: str = "small"
    k: int = 12
    stride: int = 9
    token_mode: str = "aligned"
    min_count: int = 1
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    balance: str = "sampler"
    patience: int = -1
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    max_steps: int = 0
    init_from: str = ""
    threads: int = 0
    compile: bool = False
    mask_prob: float = 0.15
    hard_negatives: float = 1.0
    hard_negative_events: int = 3
    snapshots: int = 0
    snapshot_every: int = 0
    snapshot_dtype: str = "float32"

    def __post_init__(self) -> None:
        from bertgeom.model.presets import RECIPES

        _check(self.preset in RECIPES, "preset", f"must be one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.preset]
        for name in ("epochs", "batch_size", "lr"):
            if getattr(self, name) is None:  # unset; 0 given is refused below, not replaced
                object.__setattr__(self, name, getattr(recipe, name))
        _check_common(self)
        if self.patience < 0:
            object.__setattr__(self, "patience", recipe.patience)
        _check(self.token_mode in ("aligned", "raw"), "token_mode", "must be aligned or raw")
        _check(1 <= self.k <= 21, "k", "must be in 1..21")
        _check(self.stride >= 1, "stride", "must be >= 1")
        _check(self.epochs >= 1, "epochs", "must be >= 1")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.adam_eps > 0, "adam_eps", "must be > 0")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 = no clipping)")
        _check(self.min_count >= 1, "min_count", "must be >= 1")
        _check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = no limit)")
        _check(
            0 <= self.threads <= MAX_WORKERS,
            "threads",
            f"must be in 0..{MAX_WORKERS} (0 = torch's default)",
        )
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        _check(
            self.balance in ("sampler", "weights", "none"),
            "balance",
            "must be sampler, weights or none",
        )
        _check(
            self.precision in ("auto", "fp32", "bf16"), "precision", "must be auto, fp32 or bf16"
        )
        _check(0 < self.mask_prob < 1, "mask_prob", "must be in (0, 1)")
        _check(self.hard_negatives >= 0, "hard_negatives", "must be >= 0")
        _check(self.hard_negative_events >= 1, "hard_negative_events", "must be >= 1")
        _check(self.snapshots >= 0, "snapshots", "must be >= 0 (0 = none)")
        _check(self.snapshot_every >= 0, "snapshot_every", "must be >= 0 (0 = none)")
        _check(
            not (self.snapshots and self.snapshot_every),
            "snapshots",
            "and snapshot_every are two schedules: give one of them",
        )
        _check(
            self.snapshot_dtype in ("float32", "float16"),
            "snapshot_dtype",
            "must be float32 or float16",
        )


@dataclass(frozen=True)
class AnalyzeConfig:
    """``bertgeom analyze``: which genomes, which measures, how.

    The options of each measure live in its own ``Options`` dataclass
    (``bertgeom.geometry.measures``), given here as ``measures`` (TOML: an ``[analyze.<measure>]``
    table; command line: ``--<measure>-<option>``) and saved resolved in the manifest.

    Attributes
    ----------
    split
        Split of the prepared data analysed (``test`` by default; ``all`` = every labelled
        genome that passed QC).
    max_genomes
        Class-stratified, seeded sample of at most this many genomes (0 = all).
    all_genomes
        Statistics over all genomes; by default only correctly classified ones (the paper).
    only
        Comma-separated measures (``bertgeom analyze --help`` lists them); empty = every
        default measure.
    batch_size, device
        Genomes per forward pass (0 = 64 on CUDA, 16 elsewhere); ``auto`` = CUDA when present
        (bf16 autocast there).
    drop_special
        Leave [CLS] and [SEP] out of every token statistic (token rows, attention rows and keys,
        mean-pooled vectors).
    seed
        Seed of the sample and of the post-stream analyses (probes, maps).
    checkpoint_minutes
        Minutes of streaming between checkpoints (``OUT/analyze_checkpoint.pt``; 0 = after
        every batch); an interrupted run given the same inputs and options resumes from the
        last one.
    measures
        Per measure, the options that differ from its defaults (``{"gates": {"window": 2}}``).
    over_training
        Also stream the genomes through every training snapshot of the model
        (``MODEL/snapshots/``, written by ``train --snapshots N``) into ``OUT/over_training/``
        (:mod:`bertgeom.pipeline.analyze_dynamics`).
    over_training_only
        Comma-separated measures computed per snapshot (empty = the cheap ones:
        ``bertgeom.geometry.dynamics.DEFAULT_MEASURES``).
    over_training_genomes
        Genomes streamed per snapshot: a class-stratified seeded subsample of the analysis'
        own genomes (0 = all of them).
    """

    split: str = "test"
    max_genomes: int = 0
    all_genomes: bool = False
    only: str = ""
    batch_size: int = 0
    device: str = "auto"
    drop_special: bool = False
    seed: int = 42
    checkpoint_minutes: float = 5.0
    measures: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    over_training: bool = False
    over_training_only: str = ""
    over_training_genomes: int = 0

    #: keys of a TOML ``[analyze]`` table that are sub-tables of measure options
    NESTED: typing.ClassVar[str] = "measures"

    def __post_init__(self) -> None:
        _check_common(self)
        _check(
            self.split in ("train", "val", "test", "all"),
            "split",
            "must be train, val, test or all",
        )
        _check(self.max_genomes >= 0, "max_genomes", "must be >= 0")
        _check(self.batch_size >= 0, "batch_size", "must be >= 0 (0 = by device)")
        _check(self.checkpoint_minutes >= 0, "checkpoint_minutes", "must be >= 0")
        _check(self.over_training_genomes >= 0, "over_training_genomes", "must be >= 0 (0 = all)")
        from bertgeom.geometry.measures import select

        select(self.over_training_only)  # an unknown measure name is a ConfigError
        self.selected()  # an unknown measure name is a ConfigError
        self.options()  # so are bad measure options

    def selected(self) -> tuple[str, ...]:
        """The names of the measures to compute, in registry order."""
        from bertgeom.geometry.measures import select

        return tuple(m.name for m in select(self.only))

    def options(self) -> dict[str, Any]:
        """Every registered measure's resolved ``Options`` (defaults <- ``measures``)."""
        from bertgeom.geometry.measures import registry
        from bertgeom.geometry.measures.base import options_from

        reg = registry()
        unknown = sorted(set(self.measures) - set(reg))
        valid = ", ".join(reg)
        _check(not unknown, "measures", f"name unknown measures {unknown} (valid: {valid})")
        return {
            name: options_from(m.Options, self.measures.get(name), f"config: [analyze.{name}]")
            for name, m in reg.items()
        }

    def resolved(self) -> dict[str, Any]:
        """The config as saved in the manifest: the selected measures' options in full."""
        from bertgeom.geometry.measures.base import options_dict

        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "measures"
        }
        opts = self.options()
        out["measures"] = {name: options_dict(opts[name]) for name in self.selected()}
        return out


def _check(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"config: {key} {why}")


def _check_common(config: Any) -> None:
    """Every number of ``config`` finite, its ``seed`` in numpy's range."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config: {f.name} must be a finite number (got {value})")
    seed = getattr(config, "seed", 0)
    _check(0 <= seed <= MAX_SEED, "seed", f"must be in 0..{MAX_SEED} (got {seed})")


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config file (plain or gzip-compressed, UTF-8)."""
    from bertgeom.errors import InputError
    from bertgeom.io.files import read_text

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such config file")
    try:
        text = read_text(p, "TOML config")
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None


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
    nested = getattr(cls, "NESTED", None)
    for key, value in (table or {}).items():
        if nested and isinstance(value, dict):  # [stage.<name>] sub-tables
            values.setdefault(nested, {})[key] = dict(value)
            continue
        if key == nested:
            raise ConfigError(f"{source}: give measure options as [analyze.<measure>] tables")
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{key}' (valid keys: {valid})")
        values[key] = _coerce(key, value, hints[key], source)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == nested:  # {measure: {option: value}} from the command line
            for name, opts in value.items():
                values.setdefault(nested, {}).setdefault(name, {}).update(opts)
            continue
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
    raise ConfigError(f"{source}: '{key}' must be {_type_words(types_)}, got {value!r}")


_TYPE_WORDS = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


def _type_words(types_: tuple[Any, ...]) -> str:
    """``(float,)`` -> "a number"; ``(int, NoneType)`` -> "an integer or none"."""
    words = [
        _TYPE_WORDS.get(t, "none" if t is type(None) else getattr(t, "__name__", str(t)))
        for t in types_
    ]
    return " or ".join(words)
