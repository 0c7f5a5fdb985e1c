"""Loading the saved artefacts of a run directory for the report (never runs a model).

A run directory holds one folder per stage (any may be missing); what is read from each:

- ``data/`` (``bertgeom simulate``): manifest.json (labels.tsv and truth.tsv are copied);
- ``prepared/`` (``bertgeom prepare``): manifest.json, counts.tsv, spikes.parquet without the
  sequence columns (``SPIKE_COLUMNS``);
- ``model/`` (``bertgeom train``): manifest.json, bertgeom_model.json, config.json,
  history.tsv;
- ``evaluate/`` (``bertgeom evaluate``): manifest.json, metrics.json, per_class.tsv,
  confusion.tsv, predictions.tsv and its figures;
- ``analyze/`` (``bertgeom analyze``): manifest.json, the ``genomes`` table and the tables of
  the measures the manifest lists (:func:`analyze_tables`; Parquet, else TSV) and
  figures/*.png; with ``--over-training``, ``over_training/`` (the tables of
  ``geometry.dynamics.REPORT_TABLES`` and figures/*.png, keyed ``over_training/<name>``).

A file that exists but cannot be read is recorded as a *problem* of its stage (shown in the
report) instead of stopping the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bertgeom.errors import ArtifactError
from bertgeom.io.manifest import verify_artifact

#: Stage folder -> the command that writes it.
STAGES: dict[str, str] = {
    "data": "bertgeom simulate",
    "prepared": "bertgeom prepare",
    "model": "bertgeom train",
    "evaluate": "bertgeom evaluate",
    "analyze": "bertgeom analyze",
}
#: Columns of ``spikes.parquet`` the report reads (the sequences are never loaded).
SPIKE_COLUMNS = (
    "id", "label", "split", "qc_status", "qc_reasons", "mutations", "n_mutations", "n_fraction",
    "ambiguous_count", "coverage", "frameshift", "premature_stop", "strand", "align_method",
)  # fmt: skip
#: Columns always read as text (identifiers, labels, mutation lists).
TEXT_COLUMNS = frozenset(
    {"seq_id", "id", "class", "label", "predicted", "predicted_class", "mutations", "split",
     "point", "domain", "kind", "metric", "source", "target", "transition"}
)  # fmt: skip
EVALUATE_FIGURES = ("confusion", "reliability", "history")


@dataclass
class StageArtefacts:
    """What one stage folder holds.

    Attributes
    ----------
    name : folder name (``prepared``)
    path : the folder
    present : the folder exists
    manifest : its ``manifest.json`` (None when missing or unreadable)
    documents : other JSON files by stem (``metrics``)
    tables : tables by stem (``counts``, ``gates``)
    table_files : machine-readable files by stem, to copy beside the report
    figures : PNG files by stem (``gate_grid``)
    problems : files that exist but could not be read, with the reason
    """

    name: str
    path: Path
    present: bool
    manifest: dict[str, Any] | None = None
    documents: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    table_files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The command that writes this folder."""
        return STAGES.get(self.name, self.name)

    def table(self, name: str) -> pd.DataFrame | None:
        """A loaded table, None when absent or empty."""
        t = self.tables.get(name)
        return t if t is not None and not t.empty else None

    def figure(self, name: str) -> bytes | None:
        """The bytes of a figure, None when absent or unreadable."""
        path = self.figures.get(name)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as err:
            self.problems.append(f"{path.name}: {err}")
            return None

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config from the manifest ({} when unknown)."""
        return dict((self.manifest or {}).get("config") or {})

    def measure_options(self, measure: str) -> dict[str, Any]:
        """The options ``analyze`` used for ``measure`` (its manifest's ``config.measures``;
        empty when not recorded)."""
        measures = self.config.get("measures")
        opts = measures.get(measure) if isinstance(measures, dict) else None
        return opts if isinstance(opts, dict) else {}

    @property
    def summary(self) -> dict[str, Any]:
        """The stage summary from the manifest ({} when unknown)."""
        return dict((self.manifest or {}).get("summary") or {})


@dataclass
class RunArtefacts:
    """Every stage folder of one run directory."""

    run_dir: Path
    stages: dict[str, StageArtefacts]

    @property
    def data(self) -> StageArtefacts:
        """``data/`` (simulate)."""
        return self.stages["data"]

    @property
    def prepared(self) -> StageArtefacts:
        """``prepared/`` (prepare)."""
        return self.stages["prepared"]

    @property
    def model(self) -> StageArtefacts:
        """``model/`` (train)."""
        return self.stages["model"]

    @property
    def evaluate(self) -> StageArtefacts:
        """``evaluate/`` (evaluate)."""
        return self.stages["evaluate"]

    @property
    def analyze(self) -> StageArtefacts:
        """``analyze/`` (analyze)."""
        return self.stages["analyze"]

    @property
    def present(self) -> list[str]:
        """Names of the stage folders that exist."""
        return [n for n, s in self.stages.items() if s.present]


def read_json(path: Path) -> Any:
    """Parse a JSON file (UTF-8)."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_tsv_frame(path: Path) -> pd.DataFrame:
    """A TSV table: text columns (``TEXT_COLUMNS``) kept verbatim, others numeric when every
    non-empty cell is a number (empty cells -> NaN), ``True``/``False`` columns as booleans."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for col in frame.columns:
        if col in TEXT_COLUMNS:
            continue
        cells = frame[col]
        if len(cells) and cells.isin(["True", "False"]).all():
            frame[col] = cells == "True"
            continue
        numbers = pd.to_numeric(cells.replace("", None), errors="coerce")
        if numbers.notna().sum() == (cells != "").sum():
            frame[col] = numbers.astype("float64") if numbers.isna().any() else numbers
    return frame


def read_parquet_frame(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A Parquet table, restricted to the ``columns`` it has (all when None)."""
    if columns is None:
        return pd.read_parquet(os.path.abspath(path))
    import pyarrow.parquet as pq

    have = set(pq.read_schema(path).names)
    return pd.read_parquet(os.path.abspath(path), columns=[c for c in columns if c in have])


def _try(stage: StageArtefacts, path: Path, reader: Any) -> Any:
    """``reader(path)``, or None (with a problem noted) when the file is missing, is not one
    its stage's manifest lists (a leftover of an earlier run), differs from the sha256 the
    manifest records, or cannot be parsed."""
    if not path.is_file() or not _current(stage, path):
        return None
    try:
        return reader(verify_artifact(path))
    except (OSError, ValueError, ArtifactError) as err:
        stage.problems.append(f"{path.name}: {' '.join(str(err).split())}")
        return None


def _current(stage: StageArtefacts, path: Path) -> bool:
    """Whether ``path`` belongs to the stage's last run: listed by its manifest (every file
    counts when there is no manifest, or one that lists no outputs, to ask)."""
    if path.name == "manifest.json" or stage.manifest is None:
        return True
    outputs = stage.manifest.get("outputs")
    listed = {str(o.get("path")) for o in outputs or [] if isinstance(o, dict)}
    return not listed or str(path.relative_to(stage.path)) in listed


def _load_common(stage: StageArtefacts) -> None:
    manifest = _try(stage, stage.path / "manifest.json", read_json)
    stage.manifest = manifest if isinstance(manifest, dict) else None


def _load_tables(stage: StageArtefacts, names: tuple[str, ...]) -> None:
    for name in names:
        tsv, parquet = stage.path / f"{name}.tsv", stage.path / f"{name}.parquet"
        if tsv.is_file() and _current(stage, tsv):
            stage.table_files[name] = tsv
        frame = _try(stage, parquet, read_parquet_frame)
        if frame is None:
            frame = _try(stage, tsv, read_tsv_frame)
        if frame is not None:
            stage.tables[name] = frame


def _load_data(stage: StageArtefacts) -> None:
    for name in ("labels", "truth"):  # copied beside the report, not read
        tsv = stage.path / f"{name}.tsv"
        if tsv.is_file() and _current(stage, tsv):
            stage.table_files[name] = tsv


def _load_prepared(stage: StageArtefacts) -> None:
    _load_tables(stage, ("counts",))
    spikes = _try(
        stage, stage.path / "spikes.parquet", lambda p: read_parquet_frame(p, SPIKE_COLUMNS)
    )
    if spikes is not None:
        stage.tables["spikes"] = spikes


def _load_model(stage: StageArtefacts) -> None:
    for stem in ("bertgeom_model", "config"):
        value = _try(stage, stage.path / f"{stem}.json", read_json)
        if value is not None:
            stage.documents[stem] = value
    _load_tables(stage, ("history",))


def _load_evaluate(stage: StageArtefacts) -> None:
    value = _try(stage, stage.path / "metrics.json", read_json)
    if value is not None:
        stage.documents["metrics"] = value
    _load_tables(stage, ("per_class", "confusion", "predictions"))
    for name in EVALUATE_FIGURES:
        png = stage.path / f"{name}.png"
        if png.is_file() and _current(stage, png):
            stage.figures[name] = png


def analyze_tables(measures: list[str] | None) -> tuple[str, ...]:
    """Tables of ``analyze`` the report reads: ``genomes`` and those of ``measures`` (the
    manifest's list; None = every registered measure), less the per-genome ones (only drawn,
    never loaded)."""
    from bertgeom.geometry.measures import registry

    reg = registry()
    names = reg if measures is None else [m for m in measures if m in reg]
    tables = [t for m in names for t in reg[m].tables if t not in reg[m].per_genome]
    return ("genomes", *tables)


def report_measures(run: RunArtefacts) -> list[Any]:
    """The measures whose sections the report shows: those the analyze manifest lists (in
    registry order), or every default measure when there is no analysis to read (each section
    then says the stage has not run)."""
    from bertgeom.geometry.measures import registry

    reg = registry()
    listed = ((run.analyze.manifest or {}).get("summary") or {}).get("measures")
    if run.analyze.present and isinstance(listed, list):
        return [m for name, m in reg.items() if name in listed]
    return [m for m in reg.values() if m.default]


def _load_analyze(stage: StageArtefacts) -> None:
    measures = ((stage.manifest or {}).get("summary") or {}).get("measures")
    _load_tables(stage, analyze_tables(measures if isinstance(measures, list) else None))
    figures = stage.path / "figures"
    if figures.is_dir():
        stage.figures = {p.stem: p for p in sorted(figures.glob("*.png")) if _current(stage, p)}
    _load_over_training(stage)


def _load_over_training(stage: StageArtefacts) -> None:
    """The tables and figures of ``analyze --over-training`` (``over_training/``), keyed
    ``over_training/<name>``."""
    from bertgeom.geometry.dynamics import FOLDER, REPORT_TABLES

    if not (stage.path / FOLDER).is_dir():
        return
    _load_tables(stage, tuple(f"{FOLDER}/{name}" for name in REPORT_TABLES))
    figures = stage.path / FOLDER / "figures"
    if figures.is_dir():
        for p in sorted(figures.glob("*.png")):
            if _current(stage, p):
                stage.figures[f"{FOLDER}/{p.stem}"] = p


_LOADERS = {
    "data": _load_data,
    "prepared": _load_prepared,
    "model": _load_model,
    "evaluate": _load_evaluate,
    "analyze": _load_analyze,
}


def load_run(run_dir: str | os.PathLike) -> RunArtefacts:
    """Load every stage folder of ``run_dir`` that exists (nothing is computed).

    Parameters
    ----------
    run_dir : a run directory with some of data/, prepared/, model/, evaluate/, analyze/

    Returns
    -------
    RunArtefacts
    """
    root = Path(run_dir)
    stages = {}
    for name, loader in _LOADERS.items():
        path = root / name
        stage = StageArtefacts(name, path, path.is_dir())
        if stage.present:
            _load_common(stage)
            loader(stage)
        stages[name] = stage
    return RunArtefacts(root, stages)
