"""Command-line interface: argument parsing only; each subcommand calls ``pipeline.<stage>.run``.

Every failure prints one line, ``error: ...`` (:mod:`bertgeom.failures`: exit status 2 for what a
user can fix, 1 for a bug); heavy modules are imported inside the handlers so ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from bertgeom import __version__, cli_analyze, cli_encoder, cli_scale
from bertgeom.errors import BertgeomError

DEVICE_HELP = "auto, cpu, cuda or cuda:N (default: auto = CUDA when present, else CPU)"


#: -v/-q before the command: how much more (+) or less (-) to say.
_LEVEL_FLAGS = {"-v": 1, "--verbose": 1, "-vv": 2, "-q": -1, "--quiet": -1, "-qq": -2}


def _quiet(args: argparse.Namespace) -> bool:
    """``-q`` given to the subcommand or before it (``bertgeom -q ...``): no progress."""
    return getattr(args, "verbosity", 0) < 0


def _say(args: argparse.Namespace, text: str, file: Any = None) -> None:
    """Print a summary line unless ``-qq``."""
    if getattr(args, "verbosity", 0) > -2:
        print(text, file=file)


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
        args.genomes, args.out, config, labels_path=args.labels, progress=not _quiet(args)
    )
    if args.verbosity > -2:
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
    summary = simulate.run(args.out, config, progress=not _quiet(args))
    total = sum(summary.per_class.values())
    files = f"{args.out}/{simulate.GENOMES_FILE}, labels.tsv, truth.tsv"
    _say(args, f"simulated {total} genomes -> {files}")
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
            "snapshots": getattr(args, "snapshots", None),
            "snapshot_every": getattr(args, "snapshot_every", None),
            "snapshot_dtype": getattr(args, "snapshot_dtype", None),
        },
        source=args.config or "options",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import train

    config = _train_config(args, "train")
    result = train.run(
        args.prepared, args.out, config, resume=args.resume, progress=not _quiet(args)
    )
    from bertgeom.model.distributed import launched

    if not launched().main:  # under torchrun: rank 0 reports
        return 0
    _say(
        args,
        f"trained {config.preset} on {result.n_train} genomes (val {result.n_val}): best "
        f"val macro-F1 {result.best_val_macro_f1:.4f} at epoch {result.best_epoch}, "
        f"{result.seconds:.0f} s -> {args.out}",
    )
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import train

    config = _train_config(args, "pretrain")
    out = train.run_pretrain(args.prepared, args.out, config, progress=not _quiet(args))
    _say(args, f"pre-trained {config.preset} (masked k-mers) -> {out}")
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

    model, genomes = _model_and_genomes(args.model, args.inputs)
    cfg = resolve(
        PrepareConfig,
        _config_table(args.config, "prepare"),
        {"jobs": args.jobs, "dedupe": args.dedupe},
        source=args.config or "options",
    )
    s = predict.run(
        model,
        genomes,
        args.out,
        prepare_config=cfg,
        device=args.device,
        batch_size=args.batch_size,
        progress=not _quiet(args),
        output_format=args.output_format,
        output_columns=args.output_columns,
        scale=cli_scale.predict_scale(args),
    )
    where = sys.stderr if args.out == "-" else sys.stdout  # "-": the table is on stdout
    dups = f" ({s.n_duplicates} of them duplicate ids)" if s.n_duplicates else ""
    _say(
        args,
        f"{s.n_genomes} genomes: {s.n_classified} classified, {s.n_failed_qc} failed QC{dups}, "
        f"{s.n_ood} flagged out of distribution -> {args.out}",
        file=where,
    )
    _say(args, ", ".join(f"{k} {v}" for k, v in sorted(s.per_class.items())), file=where)
    return 0


def _model_and_genomes(model: str | None, inputs: list[str]) -> tuple[str | None, list[str]]:
    """``predict``'s model and genome files: ``--model`` when given; else a first input that is
    a directory is the model (``predict MODEL_DIR GENOMES...``); else the default model."""
    from pathlib import Path

    from bertgeom.errors import ConfigError

    if model is None and len(inputs) > 1 and Path(inputs[0]).is_dir():
        return inputs[0], inputs[1:]
    dirs = [p for p in inputs if Path(p).is_dir()]
    if dirs:
        raise ConfigError(
            f"{dirs[0]}: is a directory, not a FASTA file (a model directory goes first, "
            "before the genomes, or after --model)"
        )
    return model, inputs


def _cmd_models(args: argparse.Namespace) -> int:
    from bertgeom.model.shipped import DEFAULT_MODEL, installed_models, models_dirs

    models = installed_models()
    if not models:
        print(
            "no installed models (searched: "
            + ", ".join(str(d) for d in models_dirs())
            + "); `make model` in a source checkout trains and installs "
            + DEFAULT_MODEL
        )
        return 0
    print(f"{'name':<20}{'version':<12}{'weights':<9}classes / path")
    for m in models:
        mark = " (default)" if m.name == DEFAULT_MODEL else ""
        print(f"{m.name:<20}{m.version:<12}{m.weights_dtype:<9}{','.join(m.classes)}{mark}")
        print(f"{'':<41}{m.path}")
    return 0


def _cmd_models_install(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import ship

    out = ship.run(
        args.run_dir,
        name=args.name,
        version=args.model_version,
        out_root=args.out,
        provenance=args.provenance or ship.DEFAULT_PROVENANCE,
        commands=tuple(args.command_line or ()),
        device=args.device,
        progress=not _quiet(args),
    )
    print(f"installed {args.name} {args.model_version} -> {out} (model card: {out}/README.md)")
    return 0


def _cmd_completion(args: argparse.Namespace) -> int:
    from bertgeom.completion import completion_script

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


def _add_snapshot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--snapshots",
        type=int,
        metavar="N",
        help="keep the weights at N steps (step 0, then log-spaced to the last) in "
        "OUT/snapshots/, for `analyze --over-training` (default: 0 = none)",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        metavar="K",
        help="keep the weights every K steps instead (default: 0 = none)",
    )
    p.add_argument(
        "--snapshot-dtype",
        choices=("float32", "float16"),
        help="precision of the snapshots (default: float32, exact)",
    )


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("prepared", metavar="PREPARED_DIR", help="output of `bertgeom prepare`")
    p.add_argument("--out", required=True, help="model directory to write (required)")
    p.add_argument(
        "--preset", choices=("tiny", "small", "base"), help="model size (default: small)"
    )
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's recipe)")
    p.add_argument("--batch-size", type=int, help="genomes per step (default: the preset's recipe)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's recipe)")
    p.add_argument("--seed", type=int, help="seed (default: 42)")
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--max-steps",
        type=int,
        help="stop after this many steps, for smoke runs (default: 0 = no limit)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 0 = torch's own)")
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the training forward pass (GPU: faster steps after a one-off "
        "compile; default: off)",
    )
    p.add_argument(
        "--token-mode",
        choices=("aligned", "raw"),
        help="k-mers of the aligned spike, or of the spike as read (the research code's way) "
        "(default: aligned)",
    )
    p.add_argument("--k", type=int, help="k-mer length (default: 12)")
    p.add_argument("--stride", type=int, help="k-mer stride (default: 9)")
    p.add_argument("--config", help="TOML file with a [train] / [pretrain] table (default: none)")
    _add_quiet(p)


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="no progress; twice (-qq): no summary either, only results, warnings and errors "
        "(default: off)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        dest="sub_verbose",
        action="count",
        default=0,
        help="more detail, as `bertgeom -v` (default: off)",
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import report

    out = report.run(args.run_dir, args.out)
    print(f"report: {out} (tables: {report.tables_dir(out)})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from bertgeom.pipeline import run

    log = (lambda _msg: None) if args.verbosity < -1 else None
    out = run.run(args.config, progress=not _quiet(args), force=args.force, log=log)
    _say(
        args,
        f"run finished: {out}"
        + (f" (report: {out / 'report.html'})" if (out / "report.html").is_file() else ""),
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib import resources

    from bertgeom.pipeline import demo, run

    with resources.as_file(resources.files("bertgeom.resources") / "demo.toml") as cfg:
        out = run.run(
            cfg,
            run_dir=args.out,
            progress=not _quiet(args),
            force=args.force,
            log=(lambda _msg: None) if args.verbosity < -1 else None,
        )
    print(f"demo finished: {out / 'report.html'}")
    for line in demo.shipped_prediction(out, progress=not _quiet(args)):
        print(line)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: bertgeom train: argument --epochs: invalid int
    value: 'x' (see bertgeom train --help)``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser(with_measures: bool = False) -> argparse.ArgumentParser:
    """The ``bertgeom`` argument parser (``with_measures``: analyze's flag per measure option,
    which imports the measure registry and torch)."""
    p = _Parser(
        prog="bertgeom",
        usage="bertgeom [-h] [--version] [-v | -q] COMMAND ...",
        description="SARS-CoV-2 spike variant classification with BERT, and the geometry of "
        "its attention.",
        epilog="-v/--verbose (more detail: library warnings; with --version, the versions of "
        "torch, transformers, mappy and the default model) and -q/--quiet (no progress; -qq: "
        "no summaries either, only results, warnings and errors) go before or after the "
        "COMMAND. "
        "Progress is a bar on a terminal and a plain line every BERTGEOM_PROGRESS_SECONDS "
        "(30) seconds otherwise.",
    )
    p.add_argument(
        "--version",
        action="store_true",
        help="print the version and exit; with --verbose also those of Python, torch, "
        "transformers, mappy and the default model",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pp = sub.add_parser("prepare", help="genomes -> spikes in reference coordinates, QC, splits")
    pp.add_argument(
        "genomes", nargs="+", metavar="GENOMES", help=f"FASTA files ({_FASTA_KINDS}); - = stdin"
    )
    pp.add_argument(
        "--labels",
        help="TSV of id<TAB>class (or seq_id/class columns) (default: none: file stems naming a "
        "class, alpha.fasta, label their genomes)",
    )
    pp.add_argument("--out", required=True, help="output directory (required)")
    pp.add_argument("--jobs", type=int, help="worker processes (default: 1)")
    pp.add_argument("--seed", type=int, help="split seed (default: 42)")
    pp.add_argument(
        "--dedupe",
        choices=("error", "keep-first"),
        help="duplicate FASTA ids: stop with an error, or keep the first (default: error)",
    )
    pp.add_argument(
        "--val-fraction", type=float, help="validation share per class (default: 0.064)"
    )
    pp.add_argument("--test-fraction", type=float, help="test share per class (default: 0.2)")
    pp.add_argument(
        "--split-by",
        choices=("spike", "lineage"),
        help="spike: identical spikes kept in one split; lineage: whole lineages (the labels' "
        "pango_nearest column) held out of training into test (default: spike)",
    )
    pp.add_argument(
        "--holdout",
        help="with --split-by lineage: lineages always held out (comma-separated; default: none)",
    )
    pp.add_argument(
        "--lineage-depth",
        type=int,
        help="with --split-by lineage: group lineages to their first N parts (default: 0 = whole "
        "name)",
    )
    pp.add_argument(
        "--max-n-good", type=float, help="QC: spike N fraction for good (default: 0.01)"
    )
    pp.add_argument("--max-n-mediocre", type=float, help="QC: above this, bad (default: 0.05)")
    pp.add_argument("--config", help="TOML file with a [prepare] table (default: none)")
    _add_quiet(pp)
    pp.set_defaults(func=_cmd_prepare)

    ps = sub.add_parser("simulate", help="write the embedded labelled data set")
    ps.add_argument("--out", required=True, help="output directory (required)")
    ps.add_argument("--per-class", type=int, help="genomes per class (default: 60)")
    ps.add_argument("--seed", type=int, help="seed (default: 42)")
    ps.add_argument("--config", help="TOML file with a [simulate] table (default: none)")
    _add_quiet(ps)
    ps.set_defaults(func=_cmd_simulate)

    pt = sub.add_parser("train", help="train the BERT variant classifier")
    _add_train_options(pt)
    pt.add_argument(
        "--resume", action="store_true", help="continue an interrupted run (default: off)"
    )
    pt.add_argument(
        "--init-from", help="a `bertgeom pretrain` directory to start from (default: none)"
    )
    _add_snapshot_options(pt)
    pt.set_defaults(func=_cmd_train)

    pre = sub.add_parser("pretrain", help="masked k-mer pre-training on unlabelled spikes")
    _add_train_options(pre)
    pre.set_defaults(func=_cmd_pretrain)

    pe = sub.add_parser("evaluate", help="metrics of a model on the test split")
    pe.add_argument("model", metavar="MODEL_DIR", help="model directory")
    pe.add_argument("prepared", metavar="PREPARED_DIR", help="output of `bertgeom prepare`")
    pe.add_argument("--out", required=True, help="output directory (required)")
    pe.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="split to evaluate (default: test)",
    )
    pe.add_argument("--device", default="auto", help=DEVICE_HELP)
    pe.add_argument(
        "--batch-size", type=int, default=64, help="genomes per forward pass (default: 64)"
    )
    pe.add_argument(
        "--refit",
        action="store_true",
        help="fit the calibration temperature and OOD detector again first (default: off)",
    )
    pe.set_defaults(func=_cmd_evaluate)

    _add_predict(sub)
    _add_models(sub)

    cli_analyze.add_parser(sub, with_measures)
    cli_encoder.add_parser(sub, with_measures)

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
        help="HTML file to write; its tables go to <stem>_tables/ beside it (default: report.html)",
    )
    pr3.set_defaults(func=_cmd_report)

    pr2 = sub.add_parser(
        "run",
        help="chain stages from one TOML config, skipping up-to-date "
        "ones and resuming interrupted training",
    )
    pr2.add_argument(
        "--config", required=True, help="pipeline TOML ([run] + stage tables) (required)"
    )
    pr2.add_argument(
        "--force", action="store_true", help="run every stage even if up to date (default: off)"
    )
    _add_quiet(pr2)
    pr2.set_defaults(func=_cmd_run)

    pd = sub.add_parser(
        "demo",
        help="the whole pipeline on the embedded simulated data "
        "(simulate, prepare, train, evaluate, analyze, report), then a prediction by the "
        "installed model",
    )
    pd.add_argument("--out", required=True, help="run directory (required)")
    pd.add_argument(
        "--force", action="store_true", help="run every stage even if up to date (default: off)"
    )
    _add_quiet(pd)
    pd.set_defaults(func=_cmd_demo)

    pc = sub.add_parser("completion", help="print a shell completion script")
    pc.add_argument(
        "shell",
        choices=("bash", "zsh"),
        help="the shell: bash (source it, or put it in /etc/bash_completion.d) or zsh "
        "(uses bashcompinit)",
    )
    pc.set_defaults(func=_cmd_completion)
    return p


_FASTA_KINDS = "plain, gzip, bzip2 or xz"


def _add_predict(sub: Any) -> None:
    from bertgeom.columns import PREDICT
    from bertgeom.io.rows import FORMATS

    pr = sub.add_parser(
        "predict",
        help="classify genomes: one row per input genome",
        description="Classify genomes with the installed default model, a named installed "
        "model (--model NAME or NAME@VERSION) or a model directory (--model DIR, or DIR "
        "before the genomes: `bertgeom predict MODEL_DIR GENOMES...`).",
    )
    pr.add_argument(
        "inputs",
        nargs="+",
        metavar="GENOMES",
        help=f"FASTA files ({_FASTA_KINDS}); - = standard input; a model directory may come first",
    )
    pr.add_argument(
        "--model",
        help="an installed model (NAME or NAME@VERSION, see `bertgeom models`) or a model "
        "directory (default: the installed sc2-spike-small)",
    )
    pr.add_argument(
        "--out",
        default="-",
        help="table to write (gzip when it ends in .gz; - = standard output) (default: -)",
    )
    pr.add_argument(
        "--output-format",
        choices=FORMATS,
        help="table format (default: by the --out suffix .tsv/.csv/.ndjson/.json, else tsv)",
    )
    pr.add_argument(
        "--output-columns",
        help="comma-separated columns to write, in that order (default: all: "
        + ",".join(PREDICT)
        + ")",
    )
    pr.add_argument("--jobs", type=int, help="alignment worker processes (default: 1)")
    pr.add_argument(
        "--dedupe",
        choices=("error", "keep-first"),
        help="a repeated record id: error, or keep-first (later ones get a bad row) "
        "(default: error)",
    )
    pr.add_argument("--device", default="auto", help=DEVICE_HELP)
    pr.add_argument(
        "--batch-size", type=int, default=64, help="genomes per forward pass (default: 64)"
    )
    pr.add_argument(
        "--config", help="TOML file with a [prepare] table (QC thresholds) (default: none)"
    )
    cli_scale.add_predict_options(pr)
    _add_quiet(pr)
    pr.set_defaults(func=_cmd_predict)


def _add_models(sub: Any) -> None:
    pm = sub.add_parser(
        "models",
        help="list the installed models (`models install` installs one from a run directory)",
    )
    pm.set_defaults(func=_cmd_models)
    actions = pm.add_subparsers(dest="models_command", metavar="ACTION")
    pl = actions.add_parser("list", help="list the installed models (the default action)")
    pl.set_defaults(func=_cmd_models)
    pi = actions.add_parser(
        "install",
        help="install a run's model (`bertgeom run` with prepare, train, evaluate) as a named, "
        "versioned model with float16 weights and a model card",
    )
    pi.add_argument("run_dir", metavar="RUN_DIR", help="run directory with prepared/ and model/")
    pi.add_argument("--name", required=True, help="model name, e.g. sc2-spike-small (required)")
    pi.add_argument(
        "--version",
        dest="model_version",
        required=True,
        help="model version, e.g. 2026-12 (required)",
    )
    pi.add_argument(
        "--out",
        help="models folder to install into (default: the package's bertgeom/resources/models)",
    )
    pi.add_argument(
        "--provenance",
        help="where the training data came from, for the model card (default: the input files "
        "with their sha256 only)",
    )
    pi.add_argument(
        "--command-line",
        action="append",
        metavar="COMMAND",
        help="a command that made the model, for the model card; repeat for several (default: "
        "this install command)",
    )
    pi.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_quiet(pi)
    pi.set_defaults(func=_cmd_models_install)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bertgeom`` command; exit statuses in :mod:`bertgeom.failures`."""
    from bertgeom import failures

    words = list(sys.argv[1:] if argv is None else argv)
    nul = next((a for a in words if "\x00" in str(a)), None)
    if nul is not None:  # only possible from Python: a shell cannot pass one
        print(
            f"error: argument {nul!r} contains a NUL byte (no path or value can)", file=sys.stderr
        )
        return failures.EXIT_ERROR
    parser = build_parser(with_measures=bool({"analyze", cli_encoder.COMMAND} & set(words)))
    lead = 0  # options before the command; -v/-q among them are taken out here (argparse
    while lead < len(words) and words[lead].startswith("-"):  # mixes up a parent's and a
        lead += 1  # subcommand's options of the same name)
    levels = [_LEVEL_FLAGS[w] for w in words[:lead] if w in _LEVEL_FLAGS]
    args = parser.parse_args([w for w in words[:lead] if w not in _LEVEL_FLAGS] + words[lead:])
    verbose = sum(v for v in levels if v > 0) + getattr(args, "sub_verbose", 0)
    quiet = -sum(v for v in levels if v < 0) + getattr(args, "quiet", 0)
    args.verbose, args.quiet = verbose, quiet
    args.verbosity = -min(quiet, 2) if quiet else min(verbose, 1)
    from bertgeom.progress import set_verbosity

    set_verbosity(args.verbosity)
    if args.version:
        print(_version_text(args.verbose > 0))
        return 0
    if args.command is None:
        parser.error("a COMMAND is required (see bertgeom --help)")
    _quiet_libraries(args.verbosity)
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            from bertgeom.model.distributed import check_command

            check_command(args.command)  # under torchrun: train only
            status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:  # the reader of stdout left (`predict --out - | head`): end quietly
        _silence_stdout()
        return failures.EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return failures.EXIT_INTERRUPTED
    except _Terminated:
        print("terminated", file=sys.stderr)
        return failures.EXIT_TERMINATED
    except Exception as exc:  # one place turns every failure into one line
        if os.environ.get("BERTGEOM_DEBUG") and not isinstance(exc, BertgeomError):
            raise
        message, status = failures.describe(exc)
        print(f"error: {message}", file=sys.stderr)
        return status
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _version_text(verbose: bool) -> str:
    """``bertgeom X``; verbose: also Python, torch, transformers, mappy and the default
    model (read from package metadata and the model's files, nothing heavy imported)."""
    if not verbose:
        return f"bertgeom {__version__}"
    from bertgeom.io.manifest import package_versions
    from bertgeom.model.shipped import DEFAULT_MODEL, installed_models

    versions = package_versions()
    lines = [f"bertgeom {__version__}"]
    for name in ("python", "torch", "transformers", "mappy", "numpy"):
        lines.append(f"{name} {versions.get(name, 'not installed')}")
    models = [m for m in installed_models() if m.name == DEFAULT_MODEL]
    model = max(models, key=lambda m: m.version).label if models else "not installed"
    lines.append(f"default model {DEFAULT_MODEL}: {model}")
    return "\n".join(lines)


def _quiet_libraries(verbosity: int) -> None:
    """Below --verbose, transformers says only errors (its loading notes are not ours)."""
    if verbosity < 1:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A library's warning on one line, ``warning: <message> (<category>)``, without the
    source line Python prints after it."""
    text = " ".join(str(message).split())
    print(f"warning: {text} ({category.__name__})", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush raises no second
    BrokenPipeError (Python's documented recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests capture it)
        pass


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
