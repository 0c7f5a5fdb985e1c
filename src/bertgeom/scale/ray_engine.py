"""The Ray engine of ``predict --engine ray`` (Ray Data), and the cluster connection that
``analyze --engine ray`` shares.

The only module that imports Ray (the optional extra ``bertgeom[ray]``). Shards travel as
pickled objects in one binary column, so rows keep their exact Python values; the CPU stage is
a task per shard, the model stage a pool of actors (one model load each, ``num_gpus=1`` when
the cluster has GPUs), and the dataset preserves input order. An input error found by a worker
travels back as a value and is raised on the driver as the usual one-line error (never
retried); a lost worker process is retried by Ray (task retries, actor restarts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pickle
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.errors import BertgeomError, ConfigError

#: How to install the engine (named by every error about a missing Ray).
RAY_EXTRA = "pip install 'bertgeom[ray]'"


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Ray, connected to the cluster at ``address`` (``auto``, ``HOST:PORT``; None: a running
    one if any, else a local one for this run). A connection made here is closed at the end;
    one already made in this process (a notebook, a test) is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    except Exception as err:  # Ray raises plain Exception for a node that did not start
        where = address or "a local cluster"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot start or reach the Ray cluster at {where}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def model_workers(ray: Any, device: str, workers: int | None) -> tuple[int, float, float]:
    """``(actors, GPUs each, CPUs each)`` for the model stage: one actor per GPU (or
    ``workers``) with one CPU; on a cluster without GPUs, ``workers`` (default 1) actors of
    half a CPU each (one torch thread), so read/align tasks (one CPU each) always find CPUs
    and Ray Data keeps the two stages apart (equal resources would fuse them into the
    actors)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    if gpus:
        return workers or gpus, 1.0, 1.0
    return workers or 1, 0.0, 0.5


def classify_on_ray(
    shards: Sequence[Any], ctx: Any, address: str | None, workers: int | None
) -> Iterator[list[Any]]:
    """The classified rows of each shard, in shard order, computed on a Ray cluster."""
    from bertgeom.pipeline.calibrate import OOD_FILE

    with connected(address) as ray:
        from ray.data import ActorPoolStrategy, DataContext

        n, gpus, cpus = model_workers(ray, ctx.device, workers)
        device = ("cuda" if ctx.device == "auto" else ctx.device) if gpus else "cpu"
        threads = max(1, math.floor(cpus))
        ctx = dataclasses.replace(ctx, device=device, threads=threads)
        if not (Path(ctx.model_path) / OOD_FILE).is_file():  # the workers' warning, said once
            print(
                f"predict: warning: {Path(ctx.model_path) / OOD_FILE} is missing, so the ood "
                "columns stay empty (`bertgeom evaluate --refit` fits the detector)",
                file=sys.stderr,
            )
        with _library_warnings_off():
            data = DataContext.get_current()
            data.execution_options.preserve_order = True
            data.enable_progress_bars = False
            data.print_on_execution_start = False
            items = [{"shard": pickle.dumps(s)} for s in shards]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(
                _prepare_batch,
                batch_size=1,
                batch_format="numpy",
                fn_kwargs={"ctx": ctx},
                num_cpus=1,  # Ray retries a task whose worker process died (3 times by default)
            )
            ds = ds.map_batches(
                _ModelWorker,
                batch_size=1,
                batch_format="numpy",
                fn_constructor_kwargs={"ctx": ctx},
                compute=ActorPoolStrategy(size=n),
                num_cpus=cpus,
                num_gpus=gpus,
            )  # Ray Data restarts a lost actor and gives its shard again (max_restarts=-1 and
            # max_task_retries=-1 are its defaults for actor pools)
            rows = iter(ds.iter_rows())
        try:
            while True:
                with _library_warnings_off():
                    row = next(rows, None)
                if row is None:
                    return
                kind, value = pickle.loads(row["payload"])
                if kind == "error":
                    raise value
                yield value
        finally:
            with _library_warnings_off():
                getattr(
                    rows, "close", lambda: None
                )()  # stops the execution while connected (an error ends it early)


@contextlib.contextmanager
def _library_warnings_off() -> Iterator[None]:
    """Ray's own deprecation warnings (Ray Data warns about its defaults) and its progress
    notes are not the user's: silenced while Ray Data runs, never around our code."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _prepare_batch(batch: dict[str, np.ndarray], ctx: Any) -> dict[str, np.ndarray]:
    """CPU stage: read, align, QC and tokenize the shards of a batch (one, in practice)."""
    from bertgeom.scale.predict import prepare_shard

    out = [pickle.dumps(prepare_shard(pickle.loads(b), ctx)) for b in batch["shard"]]
    return {"prepared": np.array(out, dtype=object)}


class _ModelWorker:
    """Model stage: one model load per actor; classifies prepared shards."""

    def __init__(self, ctx: Any) -> None:
        from bertgeom.scale.predict import ShardClassifier

        self.model = ShardClassifier(ctx)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for blob in batch["prepared"]:
            try:
                out.append(pickle.dumps(("rows", self.model.classify(pickle.loads(blob)))))
            except BertgeomError as err:
                out.append(pickle.dumps(("error", err)))
        return {"payload": np.array(out, dtype=object)}
