"""``bertgeom report``: one self-contained HTML page from the saved artefacts of a run directory.

Reads the stage folders of ``run_dir`` (``data/``, ``prepared/``, ``model/``, ``evaluate/``,
``analyze/``; any may be missing, and the sections say which stage has not been run), builds the
sections (:mod:`bertgeom.report.sections`) and writes ``out_html`` atomically, with the figures
embedded as base64 PNG and no external resource. The machine-readable tables the sections refer
to are written beside it, in ``<out stem>_tables/``, and linked from the page. No model is run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from bertgeom.errors import ArtifactError, InputError, OutputError
from bertgeom.io.files import atomic_path, write_text
from bertgeom.io.outputs import check_output_path, check_outputs, writing
from bertgeom.report.artefacts import STAGES, load_run
from bertgeom.report.html import Section, TableFile, page
from bertgeom.report.sections import build_sections


def tables_dir(out_html: str | os.PathLike) -> Path:
    """The folder of tables beside ``out_html``: ``<stem>_tables``."""
    out = Path(out_html)
    return out.with_name(f"{out.stem}_tables")


def _check(run_dir: Path, out_html: Path) -> None:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory (a run directory with stage folders)")
    if not any((run_dir / name).is_dir() for name in STAGES):
        raise ArtifactError(
            f"{run_dir}: no stage outputs found; expected some of "
            f"{', '.join(f'{n}/' for n in STAGES)} (run `bertgeom demo` or the stages first)"
        )
    if out_html.is_dir():
        raise InputError(f"{out_html}: is a directory; give the path of the HTML file to write")
    if out_html.suffix.lower() not in (".html", ".htm"):
        raise OutputError(f"{out_html}: the report is an HTML file (give a path ending in .html)")
    if out_html.is_file() and not _is_html(out_html):
        raise OutputError(
            f"{out_html}: exists and is not an HTML file (it would be overwritten; remove it "
            "or choose another path)"
        )


def _is_html(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html")) or not head


def _write_tables(folder: Path, files: Sequence[TableFile]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for t in files:
        target = folder / t.name
        with atomic_path(target) as tmp:
            if t.source is not None:
                shutil.copyfile(t.source, tmp)
            elif t.frame is not None:
                t.frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        written.append(target)
    keep = {p.name for p in written}
    for old in folder.glob("*.tsv"):  # tables of an earlier report that this one no longer has
        if old.name not in keep:
            old.unlink()
    return written


def _unique(sections: Sequence[Section]) -> list[TableFile]:
    seen: dict[str, TableFile] = {}
    for s in sections:
        for t in s.tables:
            seen.setdefault(t.name, t)
    return list(seen.values())


def run(run_dir: str | os.PathLike, out_html: str | os.PathLike) -> Path:
    """Write the report of ``run_dir`` to ``out_html`` and its tables beside it.

    Parameters
    ----------
    run_dir : a run directory with some of data/, prepared/, model/, evaluate/, analyze/
    out_html : the HTML file to write (its folder is created)

    Returns
    -------
    The path of the HTML file.

    Raises
    ------
    InputError
        ``run_dir`` is not a directory, or ``out_html`` is one.
    ArtifactError
        ``run_dir`` holds none of the stage folders.
    """
    root, out = Path(run_dir), Path(out_html)
    _check(root, out)
    folder = tables_dir(out)
    inputs = [root / name for name in STAGES if (root / name).is_dir()]
    check_outputs(inputs, [out, folder])
    check_output_path(out, kind="file")
    check_output_path(folder)
    with writing(out, inputs=inputs, kind="file"):
        return _report(root, out, folder)


def _report(root: Path, out: Path, folder: Path) -> Path:
    artefacts = load_run(root)
    sections = build_sections(artefacts)
    html = page(
        "bertgeom report",
        f"Run directory: {root.resolve()}",
        sections,
        folder.name,
    )
    _write_tables(folder, _unique(sections))
    write_text(out, html)
    return out
