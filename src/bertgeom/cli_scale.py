"""The scale-out options of ``predict`` and ``analyze`` (``--engine``, ``--address``, ...).
Argument parsing only; the work is :mod:`bertgeom.scale`. Nothing heavy is imported here."""

from __future__ import annotations

import argparse
from typing import Any

ENGINE_HELP = (
    "local (this machine) or ray (a Ray cluster; needs pip install 'bertgeom[ray]') "
    "(default: local)"
)
ADDRESS_HELP = (
    "the Ray cluster, with --engine ray: auto (one started with `ray start`) or HOST:PORT "
    "(default: a running cluster if any, else a local one for this run)"
)


def add_predict_options(pr: argparse.ArgumentParser) -> None:
    """``predict``'s engine, shard and work-folder options."""
    pr.add_argument("--engine", choices=("local", "ray"), default="local", help=ENGINE_HELP)
    pr.add_argument("--address", help=ADDRESS_HELP)
    pr.add_argument(
        "--shard-size",
        type=int,
        help="records per shard with --engine ray, --records or --work-dir (default: 2048)",
    )
    pr.add_argument(
        "--work-dir",
        metavar="DIR",
        help="keep finished shards here as parts; a rerun skips them (default: none)",
    )
    pr.add_argument(
        "--records",
        metavar="A:B",
        help="only records A to B-1 (0-based over all inputs in order; the index column stays "
        "global): the shard of a workflow manager; concatenated parts equal the whole "
        "(default: all)",
    )


def predict_scale(args: argparse.Namespace) -> Any:
    """The :class:`~bertgeom.scale.predict.ScaleOptions` of ``predict``'s arguments, or None
    when none was given (one local stream)."""
    if (
        args.engine == "local"
        and args.address is None
        and args.shard_size is None
        and args.work_dir is None
        and args.records is None
    ):
        return None
    from bertgeom.scale.predict import ScaleOptions
    from bertgeom.scale.records import DEFAULT_SHARD_SIZE, parse_records

    return ScaleOptions(
        engine=args.engine,
        address=args.address,
        shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size,
        work_dir=args.work_dir,
        records=None if args.records is None else parse_records(args.records),
    )


def add_analyze_options(pa: argparse.ArgumentParser) -> None:
    """``analyze``'s engine options."""
    pa.add_argument("--engine", choices=("local", "ray"), default="local", help=ENGINE_HELP)
    pa.add_argument("--address", help=ADDRESS_HELP)
    pa.add_argument(
        "--shards",
        type=int,
        help="contiguous parts streamed by Ray actors with --engine ray (default: one per GPU "
        "of the cluster, else 2)",
    )
