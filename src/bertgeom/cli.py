"""Command-line interface: argument parsing only; each subcommand calls ``pipeline.<stage>.run``.

Errors a user can fix (:class:`~bertgeom.errors.BertgeomError`) print ``error: ...`` and exit
with status 2; heavy modules are imported inside the handlers so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from bertgeom import __version__
from bertgeom.errors import BertgeomError

DEVICE_HELP = "auto (default: CUDA when present, else CPU), cpu, cuda or cuda:N"


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
            "split_by": args.split_by,
            "holdout": args.holdout,
            "lineage_depth": args.lineage_depth,
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
    if summary.split_by == "lineage":
        print(
            f"held out of training (in test): {summary.n_held_out} genomes of "
            f"{len(summary.held_out_lineages)} lineages: {', '.join(summary.held_out_lineages)}"
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


def _train_config(args: argparse.Namespace, stage: str) -> Any:
    from bertgeom.config import TrainConfig, resolve

    return resolve(
        TrainConfig,
        _config_table(args.config, stage),
        {
            "preset": args.preset,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "device": args.device,
            "max_steps": args.max_steps,
            "threads": args.threads,
            "compile": args.compile,
            "init_from": getattr(args, "init_from", None),
            "token_mode": args.token_mode,
            "k": args.k,
            "stride": args.stride,
        },
        source=args.config or "options",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import train

    config = _train_config(args, "train")
    result = train.run(args.prepared, args.out, config, resume=args.resume, progress=not args.quiet)
    print(
        f"trained {config.preset} on {result.n_train} genomes (val {result.n_val}): best "
        f"val macro-F1 {result.best_val_macro_f1:.4f} at epoch {result.best_epoch}, "
        f"{result.seconds:.0f} s -> {args.out}"
    )
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import train

    config = _train_config(args, "pretrain")
    out = train.run_pretrain(args.prepared, args.out, config, progress=not args.quiet)
    print(f"pre-trained {config.preset} (masked k-mers) -> {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import evaluate

    m = evaluate.run(
        args.model,
        args.prepared,
        args.out,
        split=args.split,
        device=args.device,
        batch_size=args.batch_size,
        refit=args.refit,
    )
    print(
        f"{args.split}: {m.n} genomes, accuracy {m.accuracy:.4f}, macro-F1 {m.macro_f1:.4f}, "
        f"ECE {m.reliability.ece:.4f}"
    )
    print(f"{'class':<11}{'n':>6}{'prec.':>8}{'recall':>8}{'spec.':>8}{'F1':>8}{'AUC':>8}")
    for c in m.per_class:
        auc = f"{c.roc_auc:.4f}" if c.roc_auc is not None else "-"
        print(
            f"{c.label:<11}{c.support:>6}{c.precision:>8.4f}{c.recall:>8.4f}"
            f"{c.specificity:>8.4f}{c.f1:>8.4f}{auc:>8}"
        )
    print(f"-> {args.out}/metrics.json")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from bertgeom.config import PrepareConfig, resolve
    from bertgeom.pipeline import predict

    cfg = resolve(
        PrepareConfig,
        _config_table(args.config, "prepare"),
        {"jobs": args.jobs, "dedupe": args.dedupe},
        source=args.config or "options",
    )
    s = predict.run(
        args.model,
        args.genomes,
        args.out,
        prepare_config=cfg,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    where = sys.stderr if args.out == "-" else sys.stdout  # "-": the TSV is on stdout
    dups = f" ({s.n_duplicates} of them duplicate ids)" if s.n_duplicates else ""
    print(
        f"{s.n_genomes} genomes: {s.n_classified} classified, {s.n_failed_qc} failed QC{dups}, "
        f"{s.n_ood} flagged out of distribution -> {args.out}",
        file=where,
    )
    print(", ".join(f"{k} {v}" for k, v in sorted(s.per_class.items())), file=where)
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from bertgeom.config import AnalyzeConfig, resolve
    from bertgeom.pipeline import analyze

    config = resolve(
        AnalyzeConfig,
        _config_table(args.config, "analyze"),
        {
            "split": args.split,
            "max_genomes": args.max_genomes,
            "only": args.only,
            "batch_size": args.batch_size,
            "device": args.device,
            "keep_maps": args.keep_maps,
            "all_genomes": True if args.all_genomes else None,
            "seed": args.seed,
            "map_methods": args.map_methods,
            "gate_thresholds": args.gate_thresholds,
            "compat": True if args.compat else None,
        },
        source=args.config or "options",
    )
    s = analyze.run(args.model, args.prepared, args.out, config, progress=not args.quiet)
    print(
        f"analysed {s.n_genomes} genomes ({s.n_correct} correctly classified, "
        f"{s.n_included} in the statistics) in {s.seconds:.1f} s "
        f"({s.genomes_per_s:.1f} genomes/s) -> {args.out}"
    )
    for line in s.notes:
        print(f"note: {line}")
    return 0


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("prepared", metavar="PREPARED_DIR", help="output of `bertgeom prepare`")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--preset", choices=("tiny", "small", "base"), help="model size (small)")
    p.add_argument("--epochs", type=int, help="maximum epochs")
    p.add_argument("--batch-size", type=int, help="genomes per step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed (42)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = default)")
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the training forward pass (GPU: faster steps after a one-off compile)",
    )
    p.add_argument(
        "--token-mode",
        choices=("aligned", "raw"),
        help="k-mers of the aligned "
        "spike (default) or of the spike as read (the research code's way)",
    )
    p.add_argument("--k", type=int, help="k-mer length (12)")
    p.add_argument("--stride", type=int, help="k-mer stride (9)")
    p.add_argument("--config", help="TOML file with a [train] / [pretrain] table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_report(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import report

    out = report.run(args.run_dir, args.out)
    print(f"report: {out} (tables: {report.tables_dir(out)})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import run

    out = run.run(args.config, progress=not args.quiet, force=args.force)
    print(
        f"run finished: {out}"
        + (f" (report: {out / 'report.html'})" if (out / "report.html").is_file() else "")
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib import resources

    from bertgeom.pipeline import run

    with resources.as_file(resources.files("bertgeom.resources") / "demo.toml") as cfg:
        out = run.run(cfg, run_dir=args.out, progress=not args.quiet, force=args.force)
    print(f"demo finished: {out / 'report.html'}")
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
    pp.add_argument(
        "--split-by",
        choices=("spike", "lineage"),
        help="spike (default): identical spikes kept in one split; lineage: whole lineages "
        "(the labels' pango_nearest column) held out of training into test",
    )
    pp.add_argument(
        "--holdout", help="with --split-by lineage: lineages always held out (comma-separated)"
    )
    pp.add_argument(
        "--lineage-depth",
        type=int,
        help="with --split-by lineage: group lineages to their first N parts (0 = whole name)",
    )
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

    pt = sub.add_parser("train", help="train the BERT variant classifier")
    _add_train_options(pt)
    pt.add_argument("--resume", action="store_true", help="continue an interrupted run")
    pt.add_argument("--init-from", help="a `bertgeom pretrain` directory to start from")
    pt.set_defaults(func=_cmd_train)

    pre = sub.add_parser("pretrain", help="masked k-mer pre-training on unlabelled spikes")
    _add_train_options(pre)
    pre.set_defaults(func=_cmd_pretrain)

    pe = sub.add_parser("evaluate", help="metrics of a model on the test split")
    pe.add_argument("model", metavar="MODEL_DIR")
    pe.add_argument("prepared", metavar="PREPARED_DIR")
    pe.add_argument("--out", required=True, help="output directory")
    pe.add_argument("--split", default="test", choices=("train", "val", "test"))
    pe.add_argument("--device", default="auto", help=DEVICE_HELP)
    pe.add_argument("--batch-size", type=int, default=64, help="genomes per forward pass (64)")
    pe.add_argument(
        "--refit",
        action="store_true",
        help="fit the calibration temperature and OOD detector again first",
    )
    pe.set_defaults(func=_cmd_evaluate)

    pr = sub.add_parser("predict", help="classify genomes: one TSV row per input genome")
    pr.add_argument("model", metavar="MODEL_DIR")
    pr.add_argument("genomes", nargs="+", metavar="GENOMES", help="FASTA(.gz) files")
    pr.add_argument(
        "--out",
        required=True,
        help="predictions TSV to write (gzip when it ends in .gz; - = standard output)",
    )
    pr.add_argument("--jobs", type=int, help="alignment worker processes (1)")
    pr.add_argument(
        "--dedupe",
        choices=("error", "keep-first"),
        help="a repeated record id: error (default), or keep-first (later ones get a bad row)",
    )
    pr.add_argument("--device", default="auto", help=DEVICE_HELP)
    pr.add_argument("--batch-size", type=int, default=64, help="genomes per forward pass (64)")
    pr.add_argument("--config", help="TOML file with a [prepare] table (QC thresholds)")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=_cmd_predict)

    pa = sub.add_parser("analyze", help="the geometry of the encoder: attention, cones, gates")
    pa.add_argument("model", metavar="MODEL_DIR")
    pa.add_argument("prepared", metavar="PREPARED_DIR")
    pa.add_argument("--out", required=True, help="output directory")
    pa.add_argument("--split", help="train, val, test (default) or all")
    pa.add_argument("--max-genomes", type=int, help="class-stratified sample size (0 = all)")
    pa.add_argument(
        "--only",
        help="comma-separated families: cone, gates, domains, direction, spectra, embeddings, maps",
    )
    pa.add_argument(
        "--all-genomes",
        action="store_true",
        help="statistics over all genomes, not only correctly classified ones",
    )
    pa.add_argument("--keep-maps", type=int, help="genomes per class whose full maps are kept")
    pa.add_argument(
        "--map-methods",
        help="comma-separated 2-D embedding maps: pca, tsne, umap (needs umap-learn); "
        "'' = none (default pca,tsne,umap)",
    )
    pa.add_argument(
        "--gate-thresholds",
        help="gate label thresholds to override, e.g. open=0.85,cluster=0.5 (see docs/formats.md)",
    )
    pa.add_argument(
        "--compat",
        action="store_true",
        help="also the research code's entropy variants on the spectra subset (slow)",
    )
    pa.add_argument("--batch-size", type=int, help="genomes per forward pass (64 GPU, 16 CPU)")
    pa.add_argument("--device", help=DEVICE_HELP)
    pa.add_argument("--seed", type=int)
    pa.add_argument("--config", help="TOML file with an [analyze] table")
    pa.add_argument("--quiet", action="store_true")
    pa.set_defaults(func=_cmd_analyze)

    pr3 = sub.add_parser(
        "report",
        help="one self-contained HTML report from a run directory's saved artefacts",
    )
    pr3.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="run directory with data/, prepared/, "
        "model/, evaluate/, analyze/ (any may be missing)",
    )
    pr3.add_argument(
        "--out",
        default="report.html",
        help="HTML file to write; its tables go to <stem>_tables/ beside it",
    )
    pr3.set_defaults(func=_cmd_report)

    pr2 = sub.add_parser(
        "run",
        help="chain stages from one TOML config, skipping up-to-date "
        "ones and resuming interrupted training",
    )
    pr2.add_argument("--config", required=True, help="pipeline TOML ([run] + stage tables)")
    pr2.add_argument("--force", action="store_true", help="run every stage even if up to date")
    pr2.add_argument("--quiet", action="store_true")
    pr2.set_defaults(func=_cmd_run)

    pd = sub.add_parser(
        "demo",
        help="the whole pipeline on the embedded simulated data "
        "(simulate, prepare, train, evaluate, analyze, report)",
    )
    pd.add_argument("--out", required=True, help="run directory")
    pd.add_argument("--force", action="store_true", help="run every stage even if up to date")
    pd.add_argument("--quiet", action="store_true", help="no progress bars")
    pd.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bertgeom`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return int(args.func(args))
    except BertgeomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that partial outputs are cleaned up (a
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it)."""


_MAIN_PID = os.getpid()


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked worker (e.g. a pool being terminated): just exit
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # repeats must not interrupt the cleanup
    raise _Terminated


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
