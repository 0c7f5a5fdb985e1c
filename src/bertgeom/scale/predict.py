"""``predict`` over record shards: in this process or on a Ray cluster, with the rows of one
local run.

The driver plans the inputs into shards (:mod:`bertgeom.scale.records`); each shard is aligned,
QC'd and tokenized by :func:`prepare_shard` (a CPU task), classified by a
:class:`ShardClassifier` (a model actor: one model load), and written by the driver in input
order through the table writer of :mod:`bertgeom.pipeline.predict`. With a work folder finished
shards are kept as parts (:class:`bertgeom.io.parts.PartStore`) and a rerun skips them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.config import PrepareConfig
from bertgeom.errors import BertgeomError, ConfigError
from bertgeom.io.fasta import read_records_at
from bertgeom.io.parts import PartStore
from bertgeom.io.rows import open_rows
from bertgeom.pipeline.predict import (
    Classified,
    Classifier,
    Tally,
    duplicate_row,
    load_ood,
    model_stamp,
    token_column,
)
from bertgeom.scale.records import DEFAULT_SHARD_SIZE, Shard, check_shard_size, plan_shards

#: Engines ``predict --engine`` runs on.
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ScaleOptions:
    """How ``predict`` spreads its work.

    Attributes
    ----------
    engine
        ``local`` (this process) or ``ray`` (a Ray cluster; the extra ``bertgeom[ray]``).
    address
        The Ray cluster: ``auto`` (a running one), ``HOST:PORT``, or None (a running one if
        any, else a local one started for the run).
    shard_size
        Records per shard (a fixed run of input records, independent of the worker count).
    work_dir
        A folder keeping finished shards as parts; a rerun skips them.
    records
        Only records ``[A, B)`` (0-based over all inputs in order; ``index`` stays global).
    workers
        Model actors on Ray (None: one per GPU of the cluster, else 1).
    """

    engine: str = "local"
    address: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    work_dir: str | os.PathLike | None = None
    records: tuple[int, int] | None = None
    workers: int | None = None

    @property
    def sharded(self) -> bool:
        """Whether the run goes through shards (else one local stream)."""
        return self.engine != "local" or self.records is not None or self.work_dir is not None

    def check(self) -> None:
        """Fail on invalid options, or a missing engine, before any work."""
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of: {', '.join(ENGINES)} (got '{self.engine}')")
        check_shard_size(self.shard_size)
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ConfigError(f"workers must be an integer >= 1 (got {self.workers!r})")
        if self.address is not None and self.engine != "ray":
            raise ConfigError("--address needs --engine ray")
        if self.engine == "ray":
            from bertgeom.scale.ray_engine import require_ray

            require_ray()


@dataclass(frozen=True)
class ShardContext:
    """What the workers need (small and picklable: paths and options, never a model)."""

    model_path: str
    prepare: PrepareConfig
    device: str  # as given ("auto" resolved by each worker)
    batch_size: int
    threads: int | None = None  # torch threads of a model worker (None: as it is)


@dataclass(frozen=True)
class PreparedShard:
    """A shard after the CPU stage: its rows (input order, duplicates in place) and the token
    ids of the rows that passed QC, or the error that stopped it."""

    number: int
    rows: list[dict[str, Any]]
    ids: np.ndarray | None  # (genome, T) int16/int32, rows that passed QC in order
    error: BertgeomError | None = None


def predict_shards(
    names: Sequence[str],
    model_path: Path,
    out_path: str | os.PathLike,
    columns: Sequence[str],
    output_format: str | None,
    cfg: PrepareConfig,
    device: str,
    batch_size: int,
    scale: ScaleOptions,
    progress: bool = True,
) -> Tally:
    """Plan ``names`` into shards, run the ones not finished on ``scale.engine`` and write
    every row in input order to ``out_path``; returns the counts."""
    if scale.work_dir is not None and any(not Path(n).is_file() for n in names):
        raise ConfigError("--work-dir needs the genomes in files (not standard input)")
    shards = plan_shards(names, scale.shard_size, cfg.dedupe, scale.records)
    ctx = ShardContext(str(model_path), cfg, device, batch_size)
    store = (
        PartStore(scale.work_dir, _fingerprint(names, ctx, scale))
        if scale.work_dir is not None
        else None
    )
    todo = [s for s in shards if store is None or not store.has(s.name)]
    if store is not None and len(todo) < len(shards):
        print(
            f"predict: {len(shards) - len(todo)} of {len(shards)} shards already finished in "
            f"{scale.work_dir}",
            file=sys.stderr,
        )
    if not todo:
        results: Iterator[list[Classified]] = iter(())
    elif scale.engine == "ray":
        from bertgeom.scale.ray_engine import classify_on_ray

        results = classify_on_ray(todo, ctx, scale.address, scale.workers)
    else:
        results = _classify_here(todo, ctx)
    from bertgeom.progress import progress as progress_reporter

    pending = {s.number for s in todo}
    tally = Tally(first=shards[0].start if shards else 0)
    total = sum(s.stop - s.start for s in shards)
    bar = progress_reporter(total=total, desc="predict", unit="genome", enabled=progress)
    with bar, open_rows(out_path, columns, output_format) as out:
        for shard in shards:
            if shard.number in pending:
                items = next(results)
                if store is not None:
                    store.save(shard.name, [_to_json(c) for c in items])
            else:
                assert store is not None
                items = [_from_json(d) for d in store.load(shard.name)]
            tally.write(items, out)
            bar.update(len(items))
    return tally


def prepare_shard(shard: Shard, ctx: ShardContext) -> PreparedShard:
    """Read, align, QC and tokenize one shard (a CPU task); a :class:`BertgeomError` is
    returned, not raised, so an engine reports it as it is and never retries it."""
    from bertgeom.pipeline import prepare

    try:
        if _ALIGNER.get("config") != ctx.prepare or _ALIGNER.get("aligner") is not (
            prepare._PROCESSOR
        ):  # one aligner (mappy index) per worker process and config
            prepare._init_worker(ctx.prepare)
            _ALIGNER.update(config=ctx.prepare, aligner=prepare._PROCESSOR)
        vocab = _vocabulary(ctx.model_path)
        dups = {d.position: d for d in shard.duplicates}
        rows: list[dict[str, Any]] = []
        position = shard.start
        for seg in shard.segments:
            for rec in read_records_at(seg.path, seg.offset, seg.lineno, seg.index, seg.count):
                dup = dups.get(position)
                if dup is not None:
                    rows.append(duplicate_row((dup.id, dup.path, dup.index), dup.header))
                else:
                    row = prepare._process_one((rec.id, rec.sequence, rec.path, rec.index))
                    row["header"] = rec.description
                    rows.append(row)
                position += 1
        column = "spike" if vocab.spec.mode == "aligned" else "raw_spike"
        ids = vocab.encode([r[column] for r in rows if r["qc_status"] != "bad"])
        small = np.int16 if vocab.size <= np.iinfo(np.int16).max else np.int32
        return PreparedShard(shard.number, rows, ids.astype(small))
    except BertgeomError as err:
        return PreparedShard(shard.number, [], None, err)


class ShardClassifier:
    """Classifies prepared shards with one model loaded once (a model actor's state)."""

    def __init__(self, ctx: ShardContext) -> None:
        from bertgeom.model.infer import resolve_device
        from bertgeom.model.store import load_model_dir

        if ctx.threads is not None:
            import torch

            torch.set_num_threads(ctx.threads)
        path = Path(ctx.model_path)
        device = resolve_device(ctx.device)
        bundle = load_model_dir(path, device=device)
        if token_column(bundle) not in ("spike", "raw_spike"):  # pragma: no cover
            raise ConfigError(f"{path}: unknown vocabulary mode")
        ood = load_ood(path, bundle.model.config.hidden_size)
        stamp = model_stamp(path, bundle.meta)
        self.classifier = Classifier(bundle, ood, stamp, device, ctx.batch_size)

    def classify(self, prepared: PreparedShard) -> list[Classified]:
        """The output rows of one prepared shard (raises the shard's error, if any)."""
        if prepared.error is not None:
            raise prepared.error
        return self.classifier.classify(prepared.rows, prepared.ids)


def _classify_here(shards: Sequence[Shard], ctx: ShardContext) -> Iterator[list[Classified]]:
    """Each shard's rows, in order, computed in this process."""
    model = ShardClassifier(ctx)
    for shard in shards:
        yield model.classify(prepare_shard(shard, ctx))


_VOCAB: dict[str, Any] = {}
_ALIGNER: dict[str, Any] = {}


def _vocabulary(model_path: str) -> Any:
    """The model's vocabulary, loaded once per process."""
    if model_path not in _VOCAB:
        from bertgeom.tokens.vocab import load_vocabulary

        _VOCAB[model_path] = load_vocabulary(model_path)
    return _VOCAB[model_path]


def _fingerprint(names: Sequence[str], ctx: ShardContext, scale: ScaleOptions) -> dict[str, Any]:
    """What must be equal for the parts in a work folder to be reused."""
    from bertgeom import __version__
    from bertgeom.io.files import sha256_file
    from bertgeom.model.store import weights_file

    inputs = []
    for name in names:
        st = os.stat(name)
        inputs.append({"path": os.path.abspath(name), "size": st.st_size, "mtime": st.st_mtime_ns})
    return {
        "inputs": inputs,
        "model": sha256_file(weights_file(ctx.model_path)),
        "prepare": dataclasses.asdict(ctx.prepare),
        "batch_size": ctx.batch_size,
        "shard_size": scale.shard_size,
        "bertgeom": __version__,
    }


def _to_json(item: Classified) -> dict[str, Any]:
    return dataclasses.asdict(item)


def _from_json(data: dict[str, Any]) -> Classified:
    return Classified(**data)
