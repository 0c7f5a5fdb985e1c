"""``bertgeom analyze``: its arguments (one flag per measure option, generated from the measure
registry) and its handler. Argument parsing only; the work is ``pipeline.analyze``.

The measure flags need the registry, which imports torch; ``bertgeom --help`` stays instant
because they are added only when the command line names ``analyze``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

DEVICE_HELP = "auto, cpu, cuda or cuda:N (default: auto = CUDA when present, else CPU)"


def option_flag(measure: str, option: str) -> str:
    """The command-line flag of a measure option: ``--<measure>-<option>`` (hyphens)."""
    return f"--{measure}-{option}".replace("_", "-")


def _dest(measure: str, option: str) -> str:
    return f"measure__{measure}__{option}"


def add_parser(sub: Any, with_measures: bool) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to ``sub`` (``with_measures``: one flag per option of
    every registered measure)."""
    pa = sub.add_parser(
        "analyze",
        help="the geometry of the encoder: attention gates, cones, spectra, embeddings",
        description="Stream genomes through the model once and compute the selected measures. "
        "Shards: --shard K/N --state-out FILE streams one contiguous part and saves its state; "
        "--merge FILE... --out DIR merges every part's state and writes what one run writes.",
    )
    pa.add_argument("model", metavar="MODEL_DIR", help="model directory")
    pa.add_argument("prepared", metavar="PREPARED_DIR", help="output of `bertgeom prepare`")
    pa.add_argument("--out", help="output directory (not with --shard; default: none)")
    pa.add_argument("--split", help="train, val, test or all (default: test)")
    pa.add_argument(
        "--max-genomes", type=int, help="class-stratified sample size (default: 0 = all)"
    )
    names = ""
    if with_measures:
        from bertgeom.geometry.measures import registry

        names = ": " + ", ".join(registry())
    pa.add_argument(
        "--only", help=f"comma-separated measures{names} (default: every default measure)"
    )
    pa.add_argument(
        "--all-genomes",
        action="store_true",
        help="statistics over all genomes, not only correctly classified ones (default: off)",
    )
    pa.add_argument(
        "--drop-special",
        action="store_true",
        default=None,
        help="leave [CLS] and [SEP] out of every token statistic (default: off)",
    )
    pa.add_argument(
        "--batch-size", type=int, help="genomes per forward pass (default: 64 GPU, 16 CPU)"
    )
    pa.add_argument("--device", help=DEVICE_HELP)
    pa.add_argument(
        "--seed", type=int, help="seed of the sample and post-stream analyses (default: 42)"
    )
    pa.add_argument(
        "--config",
        help="TOML file with an [analyze] table and [analyze.<measure>] tables (default: none)",
    )
    pa.add_argument(
        "--shard",
        metavar="K/N",
        help="stream only part K of N (1-based) and save its state to --state-out "
        "(default: the whole plan)",
    )
    pa.add_argument("--state-out", metavar="FILE", help="state file of --shard (default: none)")
    pa.add_argument(
        "--merge",
        nargs="+",
        metavar="FILE",
        help="merge these shard state files (every part of one plan) and write --out "
        "(default: none)",
    )
    pa.add_argument(
        "--over-training",
        action="store_true",
        default=None,
        help="also stream the genomes through every training snapshot of the model "
        "(MODEL_DIR/snapshots/, from `train --snapshots N`) into OUT/over_training/ "
        "(default: off)",
    )
    cheap = "the cheap ones"
    if with_measures:
        from bertgeom.geometry.dynamics import DEFAULT_MEASURES

        cheap = ",".join(DEFAULT_MEASURES)
    pa.add_argument(
        "--over-training-only",
        metavar="MEASURES",
        help=f"comma-separated measures per snapshot (default: {cheap})",
    )
    pa.add_argument(
        "--over-training-genomes",
        type=int,
        metavar="N",
        help="stream a stratified subsample of N of the analysed genomes per snapshot "
        "(default: 0 = all of them)",
    )
    from bertgeom.cli import _add_quiet
    from bertgeom.cli_scale import add_analyze_options

    add_analyze_options(pa)
    _add_quiet(pa)
    if with_measures:
        _add_measure_flags(pa)
    pa.set_defaults(func=command)
    return pa


def _add_measure_flags(pa: argparse.ArgumentParser) -> None:
    from bertgeom.geometry.measures import registry

    for name, measure in registry().items():
        opts = dataclasses.fields(measure.Options)
        if not opts:
            continue
        group = pa.add_argument_group(f"{name} options ([analyze.{name}] in --config)")
        hints = typing.get_type_hints(measure.Options)
        for f in opts:
            text = f.metadata.get("help", f.name.replace("_", " "))
            default = f.default if f.default is not dataclasses.MISSING else None
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kwargs: dict[str, Any] = {
                "dest": _dest(name, f.name),
                "default": None,
                "help": f"{text} (default: {shown!r})"
                if shown == ""
                else f"{text} (default: {shown})",
            }
            if hints[f.name] is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["metavar"] = hints[f.name].__name__.upper()
            group.add_argument(option_flag(name, f.name), **kwargs)


def measure_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{measure: {option: value}}`` of the measure flags given on the command line."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("measure__") and value is not None:
            _, measure, option = key.split("__", 2)
            out.setdefault(measure, {})[option] = value
    return out


def _shard(text: str) -> tuple[int, int]:
    from bertgeom.errors import ConfigError

    k, sep, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = 0
    if not sep or nn < 1 or not 1 <= kk <= nn:
        raise ConfigError(f"--shard {text}: expected K/N with 1 <= K <= N (e.g. 2/3)")
    return kk - 1, nn


def command(args: argparse.Namespace) -> int:
    """Run ``bertgeom analyze``."""
    from bertgeom.config import AnalyzeConfig, resolve
    from bertgeom.errors import ConfigError
    from bertgeom.pipeline import analyze

    config = resolve(
        AnalyzeConfig,
        _config_table(args.config),
        {
            "split": args.split,
            "max_genomes": args.max_genomes,
            "only": args.only,
            "batch_size": args.batch_size,
            "device": args.device,
            "all_genomes": True if args.all_genomes else None,
            "drop_special": args.drop_special,
            "seed": args.seed,
            "measures": measure_overrides(args) or None,
            "over_training": args.over_training,
            "over_training_only": args.over_training_only,
            "over_training_genomes": args.over_training_genomes,
        },
        source=args.config or "options",
    )
    quiet = getattr(args, "verbosity", 0) < 0
    say = getattr(args, "verbosity", 0) > -2
    if args.engine == "ray" and (args.merge or args.shard is not None):
        raise ConfigError("--engine ray shards and merges itself (no --shard, no --merge)")
    if args.engine != "ray" and (args.address is not None or args.shards is not None):
        raise ConfigError("--address and --shards go with --engine ray")
    if args.shard is not None:
        if args.merge or args.out:
            raise ConfigError("--shard writes --state-out only (no --out, no --merge)")
        if not args.state_out:
            raise ConfigError("--shard needs --state-out FILE")
        shard = _shard(args.shard)
        lo, hi = analyze.run_shard(
            args.model, args.prepared, args.state_out, config, shard, progress=not quiet
        )
        if say:
            print(f"shard {shard[0] + 1}/{shard[1]}: genomes {lo}-{hi} -> {args.state_out}")
        return 0
    if args.state_out:
        raise ConfigError("--state-out goes with --shard")
    if not args.out:
        raise ConfigError("analyze needs --out DIR (or --shard K/N --state-out FILE)")
    if args.merge:
        s = analyze.merge(args.model, args.prepared, args.merge, args.out, config)
    elif args.engine == "ray":
        from bertgeom.scale import ray_analyze

        s = ray_analyze.run(args.model, args.prepared, args.out, config, args.shards, args.address)
    else:
        s = analyze.run(args.model, args.prepared, args.out, config, progress=not quiet)
    if say:
        print(
            f"analysed {s.n_genomes} genomes ({s.n_correct} correctly classified, "
            f"{s.n_included} in the statistics) in {s.seconds:.1f} s "
            f"({s.genomes_per_s:.1f} genomes/s) -> {args.out}"
        )
        if config.over_training:
            from bertgeom.geometry.dynamics import FOLDER

            print(f"over training: every snapshot of {args.model} -> {args.out}/{FOLDER}/")
    for line in s.notes:
        print(f"note: {line}")
    return 0


def _config_table(path: str | None) -> dict[str, Any]:
    from bertgeom.config import read_toml

    return {} if path is None else dict(read_toml(path).get("analyze", {}))
