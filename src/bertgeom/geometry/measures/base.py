"""The unit of the geometry engine: a :class:`Measure`, its mergeable state and the batch it reads.

A measure (one module under ``geometry/measures/``) declares

- ``name`` (the ``--only`` word, the TOML table ``[analyze.<name>]``, the report anchor),
- ``reads``: the stream points and shared features it needs (:data:`READS`); the stream driver
  hooks only what the selected measures read,
- ``Options``: a frozen, validated dataclass (defaults = the documented method),
- ``tables``: the names of the tables ``finish`` returns (documented in docs/formats.md),
- ``stream_options``: the options that change what the stream accumulates (the others are read
  only by ``finish`` and may change on resumption or merge),

and implements ``begin_batch`` / ``update`` (once per layer) / ``end_batch`` (once the batch's
predictions are known), ``finish`` (tables), ``figures`` (a function of its tables), and its
report section and Methods text. A measure that can only tell which genomes it needs once the
predictions are known may ask for a second look at them (``revisit`` / ``update_revisit``).

State lives in two generic containers whose merge is defined once:

- :class:`Sums`: named tensors added together (zero-padded where a trailing dimension grows, e.g.
  key positions); the merge of two parts is their sum;
- :class:`Rows`: named per-genome arrays ``(genome, ...)`` appended batch by batch; the merge is
  the concatenation in part order.

So for every measure built on them ``merge(stream(x), stream(y)) == stream(x ++ y)`` when the
cut falls on a batch boundary (sums to rounding, rows exactly), the merge is associative and the
empty state is its identity. A measure whose state depends on the position in the stream (the
spectra subset) overrides :meth:`Measure.merge`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from bertgeom.heap import append_batch

#: What a measure may read. Stream points (capture.py): X, A (attention probabilities), Z, C, O,
#: U, F, Y; ``QK``: the layer's query and key projections as the forward pass computed them;
#: ``weights``: the model's parameters only (no stream); ``logits``: the classifier's output.
READS = frozenset({"X", "A", "Z", "C", "O", "U", "F", "Y", "QK", "weights", "logits"})
#: Points a layer's hooks must capture for the rest (everything but weights and logits).
STREAM_READS = READS - {"weights", "logits"}


@dataclass(frozen=True)
class NoOptions:
    """A measure without options."""


# --------------------------------------------------------------------------- run description
@dataclass(frozen=True)
class RunInfo:
    """What every measure knows before the stream: the model's shape and the classes.

    Attributes
    ----------
    n_layers, n_heads, d_model, d_head : the encoder's shape
    classes : names of the classes statistics are grouped by
    drop_special : leave [CLS] and [SEP] out of the token statistics (every measure)
    layers : the encoder layers (modules), for measures that read the weights
    domains : the token-domain map of the spike (None for other inputs)
    device : where the stream runs
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    classes: tuple[str, ...]
    drop_special: bool = False
    layers: tuple[Any, ...] = ()
    domains: Any = None
    device: str = "cpu"

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def n_buckets(self) -> int:
        """Class statistics are kept per *bucket*: class (correct) or n_classes + class."""
        return 2 * len(self.classes)


@dataclass
class BatchInfo:
    """One batch of the stream, as every measure sees it.

    Attributes
    ----------
    mask : (batch, pos) bool, True = real token
    labels : (batch,) true class ids (on the model's device)
    keep_maps : (batch,) bool, genomes whose full attention maps are kept
    start : index in the stream of the batch's first genome
    buckets : (batch,) class, or n_classes + class when misclassified (set before end_batch)
    """

    mask: Tensor
    labels: Tensor
    keep_maps: Tensor
    start: int = 0
    buckets: Tensor | None = None

    @property
    def size(self) -> int:
        """Genomes in the batch."""
        return int(self.mask.shape[0])


@dataclass(frozen=True)
class Genomes:
    """The streamed genomes, in stream order, as ``finish`` sees them.

    Attributes
    ----------
    ids : (genome,) identifiers
    labels : (genome,) true class ids
    included : (genome,) bool, in the class statistics (correctly classified ones, or all)
    all_genomes : statistics over all genomes (else the correctly classified ones)
    seed : seed of the post-stream analyses (probes, maps)
    """

    ids: np.ndarray
    labels: np.ndarray
    included: np.ndarray
    all_genomes: bool
    seed: int = 42


# --------------------------------------------------------------------------- state containers
class Sums:
    """Named tensors summed over batches; merge = sum (zero-padded to the larger shape)."""

    def __init__(self) -> None:
        self.values: dict[str, Tensor] = {}

    def add(self, name: str, value: Tensor) -> None:
        """Add ``value`` to the sum ``name`` (created as a copy; padded where it is smaller)."""
        old = self.values.get(name)
        if old is None:
            self.values[name] = value.clone()
            return
        old, value = _pad_to_common(old, value)
        if old.is_inference() and not torch.is_inference_mode_enabled():
            old = old.clone()  # a stream's sums, merged outside inference mode
        self.values[name] = old.add_(value.to(old.device))

    def index_add(self, name: str, dim: int, index: Tensor, value: Tensor, size: int) -> None:
        """Add the slices of ``value`` along ``dim`` into rows ``index`` of the sum ``name``,
        whose ``dim`` has ``size`` rows (e.g. per-genome values into per-bucket sums)."""
        shape = list(value.shape)
        shape[dim] = size
        grouped = value.new_zeros(shape).index_add_(dim, index.to(value.device), value)
        self.add(name, grouped)

    def get(self, name: str) -> Tensor | None:
        """The sum ``name`` (None before anything was added)."""
        return self.values.get(name)

    def merge(self, other: Sums) -> None:
        """Add ``other``'s sums to these."""
        for name, value in other.values.items():
            self.add(name, value)

    def state(self) -> dict[str, Any]:
        """CPU copies, tagged with the device they came from."""
        return {k: {"tensor": v.detach().cpu(), "cuda": v.is_cuda} for k, v in self.values.items()}

    def load(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore :meth:`state`'s result; tensors that were on a GPU go to ``device``."""
        self.values = {
            k: v["tensor"].to(device) if v["cuda"] else v["tensor"] for k, v in state.items()
        }


class Rows:
    """Named per-genome arrays ``(genome, ...)``, appended batch by batch; merge = concatenation.

    Rows of different batches may differ in trailing shape only where a measure says so (none
    today); appends are joined every 64 batches (``heap.append_batch``: memory flat).
    """

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}
        self._pending: dict[str, int] = {}

    def append(self, name: str, value: Tensor | np.ndarray) -> None:
        """Append one batch's rows of ``name``."""
        if isinstance(value, Tensor):
            value = value.detach().float().cpu().numpy()
        self._pending[name] = append_batch(
            self.parts.setdefault(name, []), value, self._pending.get(name, 0)
        )

    def get(self, name: str) -> np.ndarray | None:
        """All rows of ``name`` in stream order (None when there are none)."""
        parts = self.parts.get(name)
        if not parts:
            return None
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def __contains__(self, name: str) -> bool:
        return bool(self.parts.get(name))

    def merge(self, other: Rows) -> None:
        """Append ``other``'s rows after these."""
        for name in other.parts:
            joined = other.get(name)
            if joined is not None:
                self.parts.setdefault(name, []).append(joined)
                self._pending[name] = 0

    def state(self) -> dict[str, Any]:
        """One array per name."""
        out = {}
        for name in self.parts:
            joined = self.get(name)
            if joined is not None:
                out[name] = torch.from_numpy(np.ascontiguousarray(joined))
        return out

    def load(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore :meth:`state`'s result."""
        del device
        self.parts = {k: [v.numpy()] for k, v in state.items()}
        self._pending = {}


def _pad_to_common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``a`` and ``b`` zero-padded at the end of each dimension to their common shape."""
    if a.shape == b.shape:
        return a, b
    if a.dim() != b.dim():
        raise ValueError(f"cannot add sums of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    shape = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]

    def pad(t: Tensor) -> Tensor:
        if list(t.shape) == shape:
            return t
        widths: list[int] = []
        for have, want in zip(reversed(t.shape), reversed(shape), strict=True):
            widths += [0, want - have]
        return torch.nn.functional.pad(t, widths)

    return pad(a), pad(b)


# --------------------------------------------------------------------------- the measure
class Measure:
    """Base class of every measure (see the module docstring).

    Subclasses set the class attributes and override the stream methods they need; their
    state is the :class:`Sums` and :class:`Rows` attributes they create in ``__init__`` (merged,
    saved and restored generically) plus whatever :meth:`extra_state` returns.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reads: ClassVar[frozenset[str]] = frozenset()
    #: points used when another measure has them captured anyway (never captured for this one)
    uses: ClassVar[frozenset[str]] = frozenset()
    #: place of the measure's section in the report and of its tables in listings
    order: ClassVar[int] = 100
    Options: ClassVar[type] = NoOptions
    tables: ClassVar[tuple[str, ...]] = ()
    #: options that change what the stream accumulates (the rest are read by ``finish`` only)
    stream_options: ClassVar[frozenset[str]] = frozenset()
    #: the measure is computed unless ``--only`` leaves it out (False: only when named)
    default: ClassVar[bool] = True
    #: tables with a row per genome (or more): never loaded by the report, only drawn
    per_genome: ClassVar[tuple[str, ...]] = ()
    #: tables written as Parquet only (too large for a useful TSV)
    parquet_only: ClassVar[tuple[str, ...]] = ()
    #: the measure reads the spike's token-domain map (skipped, with a note, without one)
    needs_domains: ClassVar[bool] = False
    #: Methods rows: (term, explanation with the numerical choices, formula)
    definitions: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        self.info = info
        self.options = options if options is not None else self.Options()
        #: notes for the manifest and the report (skipped or clipped analyses)
        self.notes: list[str] = []
        #: extra manifest summary entries (e.g. seconds per post-stream method)
        self.summary: dict[str, Any] = {}

    # stream -----------------------------------------------------------------------------
    def begin_batch(self, batch: BatchInfo) -> None:
        """A batch starts (its predictions are not known yet)."""

    def update(self, layer: int, view: Any, batch: BatchInfo) -> None:
        """Reduce one layer of the batch (``view``: a :class:`~bertgeom.geometry.stream.
        LayerView` with the stream points and the shared features)."""

    def revisit(self, batch: BatchInfo) -> Tensor | None:
        """The batch's predictions are known (``batch.buckets``; called before ``end_batch``):
        the rows of the batch whose layers the measure needs to see again, or None.

        For a measure whose choice of genomes depends on the predictions and whose per-genome
        tensors cost too much to hold until they are known (spectra of a large model): the
        driver runs the model a second time over just the requested genomes (of all the
        measures, one pass) and hands each layer to :meth:`update_revisit`.
        """
        return None

    def update_revisit(self, layer: int, view: Any, rows: Tensor) -> None:
        """One layer of the second forward pass (see :meth:`revisit`): ``view`` holds the
        genomes ``rows`` (indices in the batch, ascending; the union of every measure's
        request, so possibly more than this measure's)."""

    def end_batch(self, batch: BatchInfo) -> None:
        """The batch's predictions are known (``batch.buckets``): add it to the state."""

    def abort_batch(self) -> None:
        """Drop what the batch in progress left (an interrupted forward pass)."""

    # state ------------------------------------------------------------------------------
    def _containers(self) -> dict[str, Sums | Rows]:
        return {k: v for k, v in vars(self).items() if isinstance(v, Sums | Rows)}

    def extra_state(self) -> dict[str, Any]:
        """State beyond the containers (tensors, arrays, numbers), for measures that need it."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state`'s result."""

    def state_dict(self) -> dict[str, Any]:
        """The state, as CPU tensors, dicts and numbers (``torch.load(weights_only=True)``
        reads it back)."""
        out: dict[str, Any] = {k: c.state() for k, c in self._containers().items()}
        out["__extra__"] = _pack(self.extra_state())
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result (all containers must be there)."""
        device = torch.device(self.info.device)
        containers = self._containers()
        missing = sorted(set(containers) - set(state))
        if missing:
            raise ValueError(f"{self.name}: state lacks {missing}")
        for k, c in containers.items():
            c.load(state[k], device)
        self.load_extra_state(_unpack(state.get("__extra__", {})))

    def merge(self, other: Measure) -> None:
        """Add ``other`` (the stream that follows this one) to this state, in place."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        theirs = other._containers()
        for k, c in self._containers().items():
            c.merge(theirs[k])  # type: ignore[arg-type]

    # output -----------------------------------------------------------------------------
    def finish(self, genomes: Genomes) -> dict[str, Any]:
        """The measure's tables (pandas DataFrames, by name; empty ones are not written)."""
        return {}

    def derive(self, tables: Mapping[str, Any]) -> dict[str, Any]:
        """Tables built from every measure's finished tables (after all ``finish`` calls), for
        measures that combine others' results (the stream-point flow)."""
        return {}

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        """(file stem, Figure) drawn from the measure's tables (and other measures' tables in
        ``tables``); ``context`` carries the model's vocabulary spec and the classes."""
        return iter(())

    @classmethod
    def section(cls, run: Any) -> Any:
        """The report section of this measure from a run's saved artefacts (None: none)."""
        return None

    @classmethod
    def findings(cls, run: Any) -> list[str]:
        """Sentences for the report's summary, computed from the run's saved tables."""
        return []

    @classmethod
    def parameters(cls, options: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
        """Methods parameter rows (parameter, value, source) from the run's resolved options
        (as saved in the manifest): each option with the value the run used."""
        defaults = options_dict(cls.Options())
        out = []
        for f in fields(cls.Options):
            value = options.get(f.name, defaults[f.name])
            source = "analyze config" if value != defaults[f.name] else "default"
            out.append((f.metadata.get("label", f.name.replace("_", " ")), value, source))
        return out


@dataclass(frozen=True)
class Arrays:
    """Arrays a measure returns from ``finish`` beside its tables: written as ``<name>.npz``
    (uncompressed) with ``<name>.json`` describing each array (``describe``)."""

    arrays: dict[str, np.ndarray]
    describe: dict[str, str]


# --------------------------------------------------------------------------- options
def options_from(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
    """An ``Options`` dataclass from a mapping (TOML table or CLI overrides), with its types
    checked and its own ``__post_init__`` validation; unknown keys are an error."""
    from bertgeom.errors import ConfigError

    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)} (valid: {', '.join(known) or 'none'})"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        out[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**out)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from TOML or a command-line string) as the type ``hint`` (bool, int, float,
    str, or a tuple of one of those)."""
    from bertgeom.errors import ConfigError

    origin = typing.get_origin(hint)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(hint)
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(coerce(v, inner, where) for v in items if str(v).strip() != "")
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            out = float(value)
            if not np.isfinite(out):
                raise ValueError(value)
            return out
        if hint is str:
            return str(value)
    except (ValueError, TypeError):
        name = getattr(hint, "__name__", str(hint))
        word = {"int": "an integer", "float": "a finite number", "bool": "true or false"}
        raise ConfigError(f"{where} must be {word.get(name, name)} (got {value!r})") from None
    raise ConfigError(f"{where}: unsupported option type {hint}")


def options_dict(options: Any) -> dict[str, Any]:
    """An ``Options`` dataclass as a plain dict (tuples as lists), for manifests."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(options).items()
    }


# --------------------------------------------------------------------------- packing
def _pack(v: Any) -> Any:
    """Tensors to CPU (tagged), arrays to tensors, dataclasses of tensors to tagged dicts."""
    if isinstance(v, Tensor):
        return {"__tensor__": v.detach().cpu(), "cuda": v.is_cuda}
    if isinstance(v, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(v))}
    if is_dataclass(v) and not isinstance(v, type):
        return {"__dataclass__": f"{type(v).__module__}:{type(v).__qualname__}"} | {
            f.name: _pack(getattr(v, f.name)) for f in fields(v)
        }
    if isinstance(v, dict):
        return {k: _pack(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(_pack(x) for x in v)
    return v


def _unpack(v: Any, device: torch.device | None = None) -> Any:
    """The inverse of :func:`_pack` (dataclasses of the ``bertgeom`` package only)."""
    if isinstance(v, dict):
        if "__tensor__" in v:
            t = v["__tensor__"]
            return t.to(device) if v["cuda"] and device is not None else t
        if "__ndarray__" in v:
            return v["__ndarray__"].numpy()
        if "__dataclass__" in v:
            import importlib

            module, qual = v["__dataclass__"].split(":")
            if not module.startswith("bertgeom."):
                raise ValueError(f"state names a class outside bertgeom: {module}")
            cls = importlib.import_module(module)
            for part in qual.split("."):
                cls = getattr(cls, part)
            return cls(**{f.name: _unpack(v[f.name], device) for f in fields(cls)})
        return {k: _unpack(x, device) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(_unpack(x, device) for x in v)
    return v


def bucket_groups(info: RunInfo, all_genomes: bool) -> list[list[int]]:
    """Per class, the buckets its statistics sum over (correct only, or all genomes)."""
    c = info.n_classes
    return [[k, c + k] if all_genomes else [k] for k in range(c)]


def merge_buckets(t: Tensor, groups: Sequence[Sequence[int]], dim: int = 0) -> Tensor:
    """Sum the bucket slices of ``t`` along ``dim`` per group, on the CPU."""
    t = t.cpu()
    return torch.stack([t.index_select(dim, torch.tensor(list(g))).sum(dim) for g in groups], dim)


__all__ = [
    "READS",
    "Arrays",
    "BatchInfo",
    "Genomes",
    "Measure",
    "NoOptions",
    "Rows",
    "RunInfo",
    "Sums",
    "bucket_groups",
    "merge_buckets",
    "options_from",
]
