"""``bertgeom analyze --over-training``: the geometry of every training snapshot.

The analysis' own plan (:func:`bertgeom.pipeline.analyze.plan`: the class-stratified, seeded
genome sample in its seeded order; optionally a stratified subsample of it,
``over_training_genomes``) is streamed through the weights of every snapshot of the model
(``MODEL/snapshots/``, :mod:`bertgeom.model.snapshots`), loaded in turn into one copy of the
model, with the measures of ``over_training_only`` (by default
``geometry.dynamics.DEFAULT_MEASURES``, the cheap ones). Each measure's tables of every
snapshot are concatenated, tagged with the snapshot's ``step`` and ``epoch`` (first columns),
into ``OUT/over_training/<table>``; with ``snapshots.tsv`` (per step: epoch, validation
metrics, the sample's accuracy) and the figures in ``OUT/over_training/figures/``.

Per snapshot, statistics are over all the streamed genomes (``all_genomes``), whichever the
analysis uses: an early snapshot classifies few genomes correctly, and a fixed set of genomes
keeps the steps comparable. The embeddings measure draws no 2-D maps per snapshot (``maps``
empty). So, when the model directory holds the final weights (the best epoch is the last) and
the analysis itself runs with ``all_genomes`` and the same measures and options, the last
block of every table equals the analysis' table.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.geometry.dynamics import (
    DEFAULT_MEASURES,
    FIGURES,
    FOLDER,
    SNAPSHOT_COLUMNS,
    SNAPSHOT_TABLE,
)
from bertgeom.io.files import save_figure

__all__ = ["DEFAULT_MEASURES", "FOLDER", "SNAPSHOT_TABLE", "run", "snapshot_plan"]


def snapshot_plan(p: Any) -> Any:
    """The plan streamed through every snapshot: ``p``'s genomes (or a stratified subsample),
    the over-training measures, all genomes in the statistics, a copy of the model."""
    from bertgeom.geometry.measures import select
    from bertgeom.geometry.stream import run_info
    from bertgeom.pipeline.analyze import select_genomes

    cfg = p.config
    measures = [
        m
        for m in select(cfg.over_training_only or DEFAULT_MEASURES)
        if not (m.needs_domains and p.info.domains is None)
    ]
    options = dict(p.options)
    if "embeddings" in options:
        options["embeddings"] = replace(options["embeddings"], maps="")
    idx = np.arange(p.n)
    if cfg.over_training_genomes and cfg.over_training_genomes < p.n:
        frame = pd.DataFrame({"label": p.df.label.to_numpy(), "i": idx})
        idx = select_genomes(frame, cfg.over_training_genomes, cfg.seed)["i"].to_numpy()
    model = copy.deepcopy(p.bundle.model)
    info = run_info(model, p.classes, cfg.drop_special, p.info.domains, p.device)
    return replace(
        p,
        config=replace(cfg, all_genomes=True),
        bundle=replace(p.bundle, model=model),
        df=p.df.iloc[idx].reset_index(drop=True),
        ids=p.ids[idx],
        y=p.y[idx],
        keep_maps=np.zeros(len(idx), bool),
        info=info,
        measures=measures,
        options=options,
        notes=[],
    )


def run(
    p: Any, model_dir: str | os.PathLike, out: Path, progress: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """Stream ``p``'s genomes through every snapshot of ``model_dir`` and write
    ``out/over_training/``; returns the files written (relative to ``out``) and the manifest
    summary entry."""
    from bertgeom.model.snapshots import load_snapshot, read_snapshots
    from bertgeom.pipeline.analyze import measure_tables, new_stream, stream_genomes

    snapshots = read_snapshots(model_dir)
    sp = snapshot_plan(p)
    blocks: dict[str, list[pd.DataFrame]] = {}
    rows = []
    for snap in snapshots:
        t0 = time.perf_counter()
        load_snapshot(sp.bundle.model, snap)
        stream = new_stream(sp)
        state = stream_genomes(sp, stream, 0, sp.n, progress)
        preds = np.concatenate(state.preds) if state.preds else np.zeros(0, np.int64)
        tables, _arrays, correct, _included = measure_tables(sp, stream, preds)
        for name, table in tables.items():
            if table is not None and not table.empty:
                tagged = table.copy()
                tagged.insert(0, "epoch", snap.epoch)
                tagged.insert(0, "step", snap.step)
                blocks.setdefault(name, []).append(tagged)
        rows.append({
            "step": snap.step, "epoch": snap.epoch, "val_loss": snap.val_loss,
            "val_accuracy": snap.val_accuracy, "val_macro_f1": snap.val_macro_f1,
            "sample_accuracy": float(correct.mean()) if len(correct) else np.nan,
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
    tables = {name: pd.concat(parts, ignore_index=True) for name, parts in blocks.items()}
    tables[SNAPSHOT_TABLE] = pd.DataFrame(rows, columns=list(SNAPSHOT_COLUMNS))
    written = _write(out, sp, tables, _history(model_dir))
    summary = {
        "over_training": {
            "steps": [s.step for s in snapshots],
            "measures": [m.name for m in sp.measures],
            "n_genomes": sp.n,
            "seconds": round(float(sum(r["seconds"] for r in rows)), 1),
        }
    }
    return written, summary


def _history(model_dir: str | os.PathLike) -> pd.DataFrame | None:
    from bertgeom.model.train import HISTORY

    path = Path(model_dir) / HISTORY
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t")
    except (ValueError, pd.errors.ParserError):
        return None


def _write(
    out: Path, sp: Any, tables: dict[str, pd.DataFrame], history: pd.DataFrame | None
) -> list[str]:
    from bertgeom.pipeline.analyze import _write_table
    from bertgeom.plots import geometry_dynamics as gd
    from bertgeom.plots.geometry_common import pyplot

    plt = pyplot()

    folder = out / FOLDER
    parquet_only = {t for m in sp.measures for t in m.parquet_only}
    written = []
    for name, table in tables.items():
        names = _write_table(folder, name, table, tsv=name not in parquet_only)
        written += [f"{FOLDER}/{n}" for n in names]
    get = tables.get
    figures = {
        "training_dynamics": lambda: gd.training_dynamics(
            history, get("embeddings"), get("separability"), get("direction")
        ),
        "cone_over_training": lambda: gd.cone_over_training(tables["cone_summary"]),
        "gate_mix_over_training": lambda: gd.gate_mix_over_training(tables["gates"]),
    }
    needs = {"cone_over_training": "cone_summary", "gate_mix_over_training": "gates"}
    for stem in FIGURES:
        if needs.get(stem, SNAPSHOT_TABLE) not in tables:
            continue
        fig = figures[stem]()
        save_figure(fig, folder / "figures" / f"{stem}.png")
        plt.close(fig)
        written.append(f"{FOLDER}/figures/{stem}.png")
    return written
