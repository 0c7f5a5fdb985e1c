"""Helpers shared by the section builders: stage notes, table files, figure rendering."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from bertgeom.report.artefacts import StageArtefacts
from bertgeom.report.html import TableFile, bullets, esc, note


def unavailable(stage: StageArtefacts, what: str = "This section") -> str | None:
    """A note saying which stage has not been run, or None when its folder exists."""
    if stage.present:
        return None
    return note(
        f"{esc(what)} needs the <code>{esc(stage.name)}/</code> folder written by "
        f"<code>{esc(stage.command)}</code>, which is missing from this run directory: the "
        f"{esc(stage.command.split()[-1])} stage has not been run."
    )


def stage_notes(stage: StageArtefacts) -> str:
    """Notes on a present stage: a missing manifest, files that could not be read."""
    out = ""
    if stage.present and stage.manifest is None:
        out += note(
            f"<code>{esc(stage.name)}/manifest.json</code> is missing or unreadable: the "
            f"{esc(stage.command.split()[-1])} stage may not have finished, so its outputs may "
            "be incomplete."
        )
    if stage.problems:
        out += note(f"Files in <code>{esc(stage.name)}/</code> that could not be read:")
        out += bullets(esc(p) for p in stage.problems)
    return out


def missing_file(stage: StageArtefacts, name: str) -> str:
    """A note that one expected output of a present stage is missing."""
    return note(
        f"<code>{esc(stage.name)}/{esc(name)}</code> was not found, so this part is left out."
    )


def source_table(stage: StageArtefacts, stem: str, description: str) -> TableFile | None:
    """The stage's own TSV file ``stem`` (copied as ``<stage>_<stem>.tsv``), if it exists."""
    path = stage.table_files.get(stem)
    if path is None:
        return None
    return TableFile(f"{stage.name}_{path.name}", description, source=path)


def frame_table(name: str, description: str, frame: pd.DataFrame | None) -> TableFile | None:
    """A table computed by the report, written as ``report_<name>.tsv``."""
    if frame is None or frame.empty:
        return None
    return TableFile(f"report_{name}.tsv", description, frame=frame)


def tables(*items: TableFile | None) -> tuple[TableFile, ...]:
    """The table files that exist, in order."""
    return tuple(t for t in items if t is not None)


def render_png(fig: Any, dpi: int = 120) -> bytes:
    """PNG bytes of a matplotlib Figure (drawn by ``bertgeom.plots``), then close it."""
    from bertgeom.plots.geometry_common import pyplot

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return buf.getvalue()


def file_name(path: str | Path) -> str:
    """The last part of a path as written in a manifest."""
    return Path(str(path)).name or str(path)
