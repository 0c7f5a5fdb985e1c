"""``bertgeom analyze-encoder``: the geometry of any local HF encoder on lines of text.

Reads a model directory that ``transformers`` loads offline with its own tokenizer
(:mod:`bertgeom.model.encoder_dir`: a sentence-transformers folder, a BERT-family checkpoint,
a bertgeom model directory) and a text file (:mod:`bertgeom.io.texts`: one sequence per line, an
optional label column), streams the sequences in file order through
:func:`bertgeom.geometry.encoder.measure_encoder` and writes, under ``--out DIR``:

- ``analyze/``: the tables, arrays and figures ``bertgeom analyze`` writes (minus the spike
  domains), a ``genomes`` table with one row per sequence, and ``manifest.json`` (stage
  ``analyze-encoder``);
- ``report.html`` and ``report_tables/``: the measures' report sections and the Methods, built
  from those files (``bertgeom report DIR`` renders the same folder with the spike pipeline's
  sections as well).

The options are ``analyze``'s (:class:`~bertgeom.config.AnalyzeConfig`): ``max_genomes`` keeps
the first N sequences, the statistics always cover every sequence (there are no predictions).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import ConfigError

#: The manifest's stage name.
STAGE = "analyze-encoder"
#: Folder of the tables under ``--out`` (a run directory's ``analyze/``, so the report reads it).
TABLES_DIR = "analyze"
REPORT = "report.html"


@dataclass(frozen=True)
class EncoderSummary:
    """What ``analyze-encoder`` did."""

    n_sequences: int
    n_classes: int
    n_truncated: int
    seconds: float
    report: Path
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tokenized:
    """Token ids of every sequence (unpadded), and what the tokenizer did."""

    ids: list[list[int]]
    types: list[list[int]] | None  # token_type_ids when the tokenizer gives them
    truncated: np.ndarray  # (sequence,) bool, cut to the model's longest input
    pad_id: int


def tokenize(tokenizer: Any, texts: tuple[str, ...] | list[str], max_length: int) -> Tokenized:
    """The model's own tokenization of ``texts`` ([CLS] ... [SEP] as the tokenizer adds them),
    cut to ``max_length`` tokens where longer."""
    full = tokenizer(list(texts), truncation=False, padding=False)
    ids = [list(x) for x in full["input_ids"]]
    truncated = np.array([len(x) > max_length for x in ids], bool)
    if truncated.any():
        cut = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
        full = {k: [cut[k][i] if t else v for i, (v, t) in enumerate(zip(full[k], truncated,
                                                                          strict=True))]
                for k in full}  # fmt: skip
        ids = [list(x) for x in full["input_ids"]]
    types = [list(x) for x in full["token_type_ids"]] if "token_type_ids" in full else None
    pad = tokenizer.pad_token_id
    return Tokenized(ids, types, truncated, 0 if pad is None else int(pad))


def batches(tok: Tokenized, batch_size: int) -> Iterator[dict[str, Any]]:
    """Right-padded batches of ``tok`` in input order (``input_ids``, ``attention_mask``,
    ``token_type_ids`` when the tokenizer gave them)."""
    import torch

    for a in range(0, len(tok.ids), batch_size):
        part = tok.ids[a : a + batch_size]
        width = max(len(x) for x in part)
        ids = torch.full((len(part), width), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        types = torch.zeros((len(part), width), dtype=torch.long)
        for i, x in enumerate(part):
            ids[i, : len(x)] = torch.as_tensor(x)
            mask[i, : len(x)] = 1
            if tok.types is not None:
                types[i, : len(x)] = torch.as_tensor(tok.types[a + i])
        out = {"input_ids": ids, "attention_mask": mask}
        if tok.types is not None:
            out["token_type_ids"] = types
        yield out


def encoder_config(config: AnalyzeConfig) -> tuple[AnalyzeConfig, list[str], list[str]]:
    """``config`` as ``analyze-encoder`` runs it (every sequence in the statistics), the
    measures it computes (those of ``--only`` that need no spike domains) and notes."""
    from bertgeom.geometry.measures import select

    config = replace(config, split="all", all_genomes=True)
    chosen = select(config.only)
    skipped = [m.name for m in chosen if m.needs_domains]
    kept = [m.name for m in chosen if not m.needs_domains]
    if not kept:
        raise ConfigError(
            f"only: {', '.join(skipped)} read the spike's token-domain map, which text inputs "
            "do not have (choose other measures)"
        )
    notes = [
        f"{name} skipped: it reads the spike's token-domain map, which text inputs do not have"
        for name in skipped
        if config.only
    ]
    return config, kept, notes


def run(
    model_dir: str | os.PathLike,
    text_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AnalyzeConfig,
    progress: bool = True,
) -> EncoderSummary:
    """Analyse the encoder of ``model_dir`` on the lines of ``text_file`` into ``out_dir``
    (see the module docstring)."""
    import time

    from bertgeom.geometry.encoder import measure_encoder
    from bertgeom.io.outputs import check_target, writing
    from bertgeom.io.texts import read_texts
    from bertgeom.model.encoder_dir import check_encoder_dir, load_encoder_dir
    from bertgeom.model.infer import resolve_device
    from bertgeom.progress import progress as progress_reporter

    root = Path(out_dir)
    sources = [model_dir, text_file]
    check_target(root, sources)
    check_target(root / TABLES_DIR, sources, stage=STAGE)
    check_target(root / REPORT, sources, kind="file")
    config, names, notes = encoder_config(config)
    check_encoder_dir(model_dir)
    texts = read_texts(text_file, config.max_genomes)
    dev = resolve_device(config.device)
    config = replace(config, batch_size=config.batch_size or (64 if dev.startswith("cuda") else 16))
    from bertgeom.geometry.measures import registry

    eager = any("A" in registry()[n].reads for n in names)
    enc = load_encoder_dir(model_dir, dev, "eager" if eager else "sdpa")
    tok = tokenize(enc.tokenizer, texts.texts, enc.max_length)
    if tok.truncated.any():
        notes.append(
            f"{int(tok.truncated.sum())} sequences cut to the model's {enc.max_length} tokens "
            f"(first: line {int(texts.lines[np.flatnonzero(tok.truncated)[0]])})"
        )
    ids = [f"line{n}" for n in texts.lines]
    t0 = time.perf_counter()
    bar = progress_reporter(total=len(texts), desc="analyze-encoder", unit="seq", enabled=progress)

    def fed() -> Iterator[dict[str, Any]]:
        for b in batches(tok, config.batch_size):
            yield b
            bar.update(len(b["input_ids"]))

    with bar:
        geo = measure_encoder(
            enc.model, fed(), texts.labels, texts.classes if texts.labels is not None else None,
            families=names, options=config.measures, drop_special=config.drop_special, ids=ids,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    results = geo.finish(config.seed)
    notes += [n for n in geo.measure_notes() if n not in notes]
    n_tokens = np.array([len(x) for x in tok.ids])
    genomes = pd.DataFrame({
        "seq_id": ids, "class": np.asarray(geo.class_names)[geo.labels], "included": True,
        "line": texts.lines, "n_tokens": n_tokens, "truncated": tok.truncated,
        "text": list(texts.texts),
    })  # fmt: skip
    summary = {
        "n_sequences": len(texts),
        "n_genomes": len(texts),
        "classes": list(geo.class_names),
        "labelled": texts.labels is not None,
        "model_type": enc.model_type,
        "n_layers": geo.stream.info.n_layers,
        "n_heads": geo.stream.info.n_heads,
        "max_length": enc.max_length,
        "seconds": seconds,
        "device": dev,
        "measures": [m.name for m in geo.stream.measures],
        **({"notes": notes} if notes else {}),
        **{m.name: m.summary for m in geo.stream.measures if m.summary},
    }
    from bertgeom.io.manifest import describe_inputs

    inputs = describe_inputs([Path(text_file), *enc.files])
    with writing(root / TABLES_DIR, inputs=sources, stage=STAGE) as out:
        _write(out, results, genomes, geo, inputs, config, summary)
    report = write_report(root)
    return EncoderSummary(
        len(texts),
        geo.n_classes_present,
        int(tok.truncated.sum()),
        seconds,
        report,
        tuple(notes),
    )


def _write(
    out: Path,
    results: dict[str, Any],
    genomes: pd.DataFrame,
    geo: Any,
    inputs: list[dict[str, Any]],
    config: AnalyzeConfig,
    summary: dict[str, Any],
) -> None:
    """The tables, arrays, figures and manifest, as ``analyze`` writes them."""
    from bertgeom.geometry.measures.base import Arrays
    from bertgeom.io.manifest import write_manifest
    from bertgeom.pipeline.analyze import (
        FigureContext,
        _write_arrays,
        _write_figures,
        _write_table,
    )

    tables = {"genomes": genomes} | {k: v for k, v in results.items() if not isinstance(v, Arrays)}
    arrays = {k: v for k, v in results.items() if isinstance(v, Arrays)}
    parquet_only = {t for m in geo.stream.measures for t in m.parquet_only}
    written: list[str] = []
    for name, table in tables.items():
        written += _write_table(out, name, table, tsv=name not in parquet_only)
    for name, value in arrays.items():
        written += _write_arrays(out, name, value)
    context = FigureContext(tuple(geo.class_names), None, True)
    written += _write_figures(out, geo.stream.measures, tables, context)
    write_manifest(out, STAGE, inputs, config.resolved(), written, summary)


def write_report(root: str | os.PathLike) -> Path:
    """``report.html`` (and ``report_tables/``) of an ``analyze-encoder`` output folder, from
    its ``analyze/`` files only."""
    from bertgeom.io.files import write_text
    from bertgeom.io.outputs import writing
    from bertgeom.pipeline.report import _unique, _write_tables, tables_dir
    from bertgeom.report.artefacts import load_run
    from bertgeom.report.encoder_sections import build_encoder_sections
    from bertgeom.report.html import page

    root = Path(root)
    out = root / REPORT
    folder = tables_dir(out)
    with writing(out, inputs=[root / TABLES_DIR], kind="file"):
        run = load_run(root)
        sections = build_encoder_sections(run)
        subtitle = f"Encoder analysis: {root.resolve()}"
        html = page("bertgeom analyze-encoder report", subtitle, sections, folder.name)
        _write_tables(folder, _unique(sections))
        write_text(out, html)
    return out
