"""``bertgeom analyze-encoder``: its arguments and its handler. Argument parsing only; the work
is ``pipeline.analyze_encoder``. The measure flags are ``analyze``'s (added only when the
command line names the command, as for ``analyze``)."""

from __future__ import annotations

import argparse
from typing import Any

#: The subcommand's name.
COMMAND = "analyze-encoder"


def add_parser(sub: Any, with_measures: bool) -> argparse.ArgumentParser:
    """Add the ``analyze-encoder`` subcommand to ``sub`` (``with_measures``: one flag per option
    of every registered measure)."""
    from bertgeom.cli_analyze import DEVICE_HELP, _add_measure_flags

    pa = sub.add_parser(
        COMMAND,
        help="the geometry of any local HF encoder (BERT layout) on lines of text",
        description="Stream the lines of a text file (TEXT or TEXT<TAB>LABEL; '#' comments) "
        "through a local HF model directory with its own tokenizer (offline) and write the "
        "tables, figures and report sections of `analyze` (without the spike domains) to "
        "DIR/analyze/ and DIR/report.html. DistilBERT's layer layout is not supported.",
    )
    pa.add_argument("model", metavar="MODEL_DIR", help="local HF model directory")
    pa.add_argument(
        "texts", metavar="TEXT_OR_TOKENS_FILE", help="one sequence per line, optional label"
    )
    pa.add_argument("--out", required=True, help="output directory (required)")
    pa.add_argument(
        "--max-sequences", type=int, help="only the first N sequences (default: 0 = all)"
    )
    pa.add_argument(
        "--only", help="comma-separated measures (default: every default measure but domains)"
    )
    pa.add_argument(
        "--drop-special",
        action="store_true",
        default=None,
        help="leave [CLS] and [SEP] out of every token statistic (default: off)",
    )
    pa.add_argument(
        "--batch-size", type=int, help="sequences per forward pass (default: 64 GPU, 16 CPU)"
    )
    pa.add_argument("--device", help=DEVICE_HELP)
    pa.add_argument("--seed", type=int, help="seed of the post-stream analyses (default: 42)")
    pa.add_argument(
        "--config",
        help="TOML file with an [analyze] table and [analyze.<measure>] tables (default: none)",
    )
    from bertgeom.cli import _add_quiet

    _add_quiet(pa)
    if with_measures:
        _add_measure_flags(pa)
    pa.set_defaults(func=command)
    return pa


def command(args: argparse.Namespace) -> int:
    """Run ``bertgeom analyze-encoder``."""
    from bertgeom.cli_analyze import _config_table, measure_overrides
    from bertgeom.config import AnalyzeConfig, resolve
    from bertgeom.pipeline import analyze_encoder

    config = resolve(
        AnalyzeConfig,
        _config_table(args.config),
        {
            "max_genomes": args.max_sequences,
            "only": args.only,
            "batch_size": args.batch_size,
            "device": args.device,
            "drop_special": args.drop_special,
            "seed": args.seed,
            "measures": measure_overrides(args) or None,
        },
        source=args.config or "options",
    )
    quiet = getattr(args, "verbosity", 0) < 0
    s = analyze_encoder.run(args.model, args.texts, args.out, config, progress=not quiet)
    if getattr(args, "verbosity", 0) > -2:
        labels = f"{s.n_classes} classes" if s.n_classes > 1 else "no classes"
        print(
            f"analysed {s.n_sequences} sequences ({labels}, {s.n_truncated} cut to the model's "
            f"length) in {s.seconds:.1f} s -> {args.out} (report: {s.report})"
        )
    for line in s.notes:
        print(f"note: {line}")
    return 0
