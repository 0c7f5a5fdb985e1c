"""Command-line interface: argument parsing only; each subcommand calls ``pipeline.<stage>.run``.

Errors a user can fix (:class:`~bertgeom.errors.BertgeomError`) print ``error: ...`` and exit
with status 2; heavy modules are imported inside the handlers so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bertgeom import __version__
from bertgeom.errors import BertgeomError


def _config_table(path: str | None, stage: str) -> dict[str, Any]:
    from bertgeom.config import read_toml

    if path is None:
        return {}
    data = read_toml(path)
    return dict(data.get(stage, {}))


def _cmd_prepare(args: argparse.Namespace) -> int:
    from bertgeom.config import PrepareConfig, resolve
    from bertgeom.pipeline import prepare

    config = resolve(
        PrepareConfig,
        _config_table(args.config, "prepare"),
        {
            "jobs": args.jobs,
            "seed": args.seed,
            "dedupe": args.dedupe,
            "val_fraction": args.val_fraction,
            "test_fraction": args.test_fraction,
            "max_n_good": args.max_n_good,
            "max_n_mediocre": args.max_n_mediocre,
        },
        source=args.config or "options",
    )
    summary = prepare.run(
        args.genomes, args.out, config, labels_path=args.labels, progress=not args.quiet
    )
    _print_prepare(summary, args.out)
    return 0


def _print_prepare(summary: Any, out: str) -> None:
    print(f"prepared {summary.n_genomes} genomes -> {out}/spikes.parquet")
    print("qc: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.qc.items())))
    print(
        f"{'class':<11}{'n':>7}{'train':>7}{'val':>6}{'test':>6}{'good':>7}{'medi.':>7}{'bad':>6}"
    )
    for cls, c in summary.per_class.items():
        print(
            f"{cls:<11}{c['n']:>7}{c['train']:>7}{c['val']:>6}{c['test']:>6}{c['good']:>7}"
            f"{c['mediocre']:>7}{c['bad']:>6}"
        )
    print(
        f"identical spikes kept within one split: {summary.n_identical_groups} groups, "
        f"{summary.n_genomes_in_identical_groups} genomes"
    )
    if summary.duplicates_skipped:
        print(f"duplicate ids skipped (keep-first): {summary.duplicates_skipped}")
    if summary.labels_not_in_input:
        print(f"labels without a genome in the input: {summary.labels_not_in_input}")
    if summary.unlabelled:
        print(f"genomes without a label: {summary.unlabelled}")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bertgeom.config import SimulateConfig, resolve
    from bertgeom.pipeline import simulate

    config = resolve(
        SimulateConfig,
        _config_table(args.config, "simulate"),
        {"per_class": args.per_class, "seed": args.seed},
        source=args.config or "options",
    )
    summary = simulate.run(args.out, config, progress=not args.quiet)
    total = sum(summary.per_class.values())
    print(f"simulated {total} genomes -> {args.out}/{simulate.GENOMES_FILE}, labels.tsv, truth.tsv")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bertgeom.config import PrepareConfig, SimulateConfig
    from bertgeom.pipeline import prepare, simulate

    run_dir = Path(args.out)
    data_dir, prepared_dir = run_dir / "data", run_dir / "prepared"
    simulate.run(
        data_dir, SimulateConfig(per_class=args.per_class, seed=args.seed), progress=not args.quiet
    )
    summary = prepare.run(
        [data_dir / simulate.GENOMES_FILE],
        prepared_dir,
        PrepareConfig(jobs=args.jobs, seed=args.seed),
        labels_path=data_dir / simulate.LABELS_FILE,
        progress=not args.quiet,
    )
    _print_prepare(summary, str(prepared_dir))
    print(f"demo finished: {run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``bertgeom`` argument parser."""
    p = argparse.ArgumentParser(
        prog="bertgeom",
        description="SARS-CoV-2 spike variant classification with BERT, and the geometry of "
        "its attention.",
    )
    p.add_argument("--version", action="version", version=f"bertgeom {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pp = sub.add_parser("prepare", help="genomes -> spikes in reference coordinates, QC, splits")
    pp.add_argument("genomes", nargs="+", metavar="GENOMES", help="FASTA(.gz) files")
    pp.add_argument(
        "--labels",
        help="TSV of id<TAB>class (or seq_id/class columns); without "
        "it, file stems naming a class (alpha.fasta) label their genomes",
    )
    pp.add_argument("--out", required=True, help="output directory")
    pp.add_argument("--jobs", type=int, help="worker processes (default 1)")
    pp.add_argument("--seed", type=int, help="split seed (default 42)")
    pp.add_argument(
        "--dedupe",
        choices=("error", "keep-first"),
        help="duplicate FASTA ids: stop with an error (default) or keep the first",
    )
    pp.add_argument("--val-fraction", type=float, help="validation share per class (0.064)")
    pp.add_argument("--test-fraction", type=float, help="test share per class (0.2)")
    pp.add_argument("--max-n-good", type=float, help="QC: spike N fraction for good (0.01)")
    pp.add_argument("--max-n-mediocre", type=float, help="QC: above this, bad (0.05)")
    pp.add_argument("--config", help="TOML file with a [prepare] table")
    pp.add_argument("--quiet", action="store_true", help="no progress bar")
    pp.set_defaults(func=_cmd_prepare)

    ps = sub.add_parser("simulate", help="write the embedded labelled data set")
    ps.add_argument("--out", required=True, help="output directory")
    ps.add_argument("--per-class", type=int, help="genomes per class (default 60)")
    ps.add_argument("--seed", type=int, help="seed (default 42)")
    ps.add_argument("--config", help="TOML file with a [simulate] table")
    ps.add_argument("--quiet", action="store_true", help="no progress bar")
    ps.set_defaults(func=_cmd_simulate)

    pd = sub.add_parser("demo", help="the whole pipeline on the embedded simulated data")
    pd.add_argument("--out", required=True, help="run directory")
    pd.add_argument("--per-class", type=int, default=60, help="genomes per class (60)")
    pd.add_argument("--seed", type=int, default=42, help="seed (42)")
    pd.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    pd.add_argument("--quiet", action="store_true", help="no progress bars")
    pd.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bertgeom`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BertgeomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
