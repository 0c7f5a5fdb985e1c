"""``analyze --engine ray``: contiguous shards of the plan streamed by Ray actors, their states
merged on the driver in shard order, the outputs written as one local run writes them.

Each actor plans as the driver does (the same model, data and seeded sample, so the same
fingerprint), streams its shard (:func:`bertgeom.pipeline.analyze.shard_state`) and returns its
state; the shards are whole batches (:func:`bertgeom.pipeline.analyze.shard_range`), so every
batch equals the one a single stream sees, and the merge is the geometry engine's.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import BertgeomError, ConfigError


def run(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AnalyzeConfig,
    shards: int | None = None,
    address: str | None = None,
) -> Any:
    """Analyse as :func:`bertgeom.pipeline.analyze.run` does, with ``shards`` contiguous parts
    streamed by Ray actors (None: one per GPU of the cluster, else 2); returns its
    :class:`~bertgeom.pipeline.analyze.AnalyzeSummary`."""
    from bertgeom.heap import fixed_mmap_threshold
    from bertgeom.io.outputs import check_target, writing
    from bertgeom.pipeline import analyze
    from bertgeom.scale.ray_engine import connected, require_ray

    require_ray()
    if shards is not None and (isinstance(shards, bool) or shards < 1):
        raise ConfigError(f"--shards must be an integer >= 1 (got {shards!r})")
    check_target(out_dir, [model_dir, prepared_dir], stage="analyze")
    fixed_mmap_threshold()
    p = analyze.plan(model_dir, prepared_dir, config)
    with connected(address) as ray:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if p.config.device != "cpu" else 0
        n = shards or gpus or 2
        cpus = 1.0 if gpus else min(1.0, float(resources.get("CPU", 1)) / n)
        actor = ray.remote(
            num_cpus=cpus,
            num_gpus=1 if gpus else 0,
            max_restarts=1,  # a lost actor is started again ...
            max_task_retries=1,  # ... and streams its shard again
        )(_ShardStreamer)
        # the driver's batch size, so every worker cuts the same shards
        fixed = dataclasses.replace(config, batch_size=p.config.batch_size)
        threads = max(1, math.floor(cpus))
        workers = [
            actor.remote(str(model_dir), str(prepared_dir), fixed, threads) for _ in range(n)
        ]
        states = ray.get([w.stream.remote((k, n)) for k, w in enumerate(workers)])
        for w in workers:
            ray.kill(w)
    mine = _placeless(p.fingerprint())
    for s in states:
        if isinstance(s, BertgeomError):
            raise s
        theirs = _placeless(s["fingerprint"])
        if theirs != mine:
            changed = sorted(k for k in mine if theirs.get(k) != mine[k])
            raise ConfigError(
                f"a Ray worker planned differently ({', '.join(changed)} differ): the workers "
                "must see the same model and data folders as the driver"
            )
    parts = [(s["range"][0], s["range"][1], f"shard {k + 1}/{n}", s) for k, s in enumerate(states)]
    total, preds, seconds = analyze.merge_states(p, parts)
    with writing(out_dir, inputs=[model_dir, prepared_dir], stage="analyze") as out:
        return analyze.write_outputs(p, total, preds, seconds, out, shards=n)


def _placeless(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A plan's fingerprint without the device (the driver may plan on a CPU, the workers
    stream on GPUs: the batch size is the driver's either way)."""
    out = {k: v for k, v in fingerprint.items() if k != "device"}
    out["config"] = {k: v for k, v in fingerprint["config"].items() if k != "device"}
    return out


class _ShardStreamer:
    """A Ray actor: plans once, streams one shard, returns its state (or the input error)."""

    def __init__(
        self, model_dir: str, prepared_dir: str, config: AnalyzeConfig, threads: int
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.args = (model_dir, prepared_dir, config)

    def stream(self, shard: tuple[int, int]) -> Any:
        from bertgeom.pipeline import analyze

        try:
            p = analyze.plan(*self.args)
            return analyze.shard_state(p, shard, progress=False)
        except BertgeomError as err:
            return err
