"""The spikes table (``spikes.parquet``) written by ``prepare``: schema, writer, reader.

One row per input genome, failed ones included; columns are documented in docs/formats.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bertgeom.errors import ArtifactError
from bertgeom.io.files import reading
from bertgeom.io.manifest import verify_artifact

SPIKES_FILE = "spikes.parquet"

#: (column, pyarrow type name) in file order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "string"),
    ("label", "string"),
    ("label_raw", "string"),
    ("lineage", "string"),
    ("split", "string"),
    ("held_out", "bool_"),
    ("qc_status", "string"),
    ("qc_reasons", "string"),
    ("spike", "string"),
    ("insertions", "string"),
    ("raw_spike", "string"),
    ("mutations", "string"),
    ("n_mutations", "int32"),
    ("n_count", "int32"),
    ("n_fraction", "float64"),
    ("ambiguous_count", "int32"),
    ("coverage", "float64"),
    ("frameshift", "bool_"),
    ("premature_stop", "int32"),
    ("strand", "int8"),
    ("align_method", "string"),
    ("genome_length", "int32"),
    ("gap_chars_removed", "int32"),
    ("spike_key", "string"),
    ("source_file", "string"),
    ("source_index", "int32"),
)


def schema() -> Any:
    """The pyarrow schema of the spikes table."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])


class SpikesWriter:
    """Streams rows (dicts keyed by column) into a Parquet file, one row group per batch."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 256) -> None:
        import pyarrow.parquet as pq

        self._schema = schema()
        # an absolute path: pyarrow reads "cuda:99/x.parquet" as a URI of scheme "cuda"
        self._writer = pq.ParquetWriter(os.path.abspath(path), self._schema, compression="zstd")
        self._batch: list[dict[str, Any]] = []
        self._batch_size = batch_size
        self.n_rows = 0

    def write(self, row: dict[str, Any]) -> None:
        """Add one row."""
        self._batch.append(row)
        if len(self._batch) >= self._batch_size:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._batch:
            # column-wise construction: ~20x faster than Table.from_pylist on these rows
            table = pa.table(
                {name: [row[name] for row in self._batch] for name, _ in COLUMNS},
                schema=self._schema,
            )
            self._writer.write_table(table)
            self.n_rows += len(self._batch)
            self._batch = []

    def close(self) -> None:
        """Flush and close the file."""
        self._flush()
        self._writer.close()

    def __enter__(self) -> SpikesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_spike_batches(
    path: str | os.PathLike, columns: Sequence[str] | None = None, batch_size: int = 1024
) -> Iterator[list[dict[str, Any]]]:
    """Stream a spikes table as lists of row dicts (memory flat in the number of rows)."""
    import pyarrow.parquet as pq

    p = _checked(path)
    with reading(p, _WHAT):
        pf = pq.ParquetFile(os.path.abspath(p))
        missing = [c for c in (columns or ()) if c not in pf.schema_arrow.names]
        if missing:
            raise ArtifactError(f"{p}: missing columns {missing}; was it written by prepare?")
        batches = pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)
        for batch in batches:
            yield batch.to_pylist()


_WHAT = "Parquet spikes table"


def _checked(path: str | os.PathLike) -> Path:
    """``path`` if it exists and matches the sha256 its manifest records."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: no such file (run `bertgeom prepare` first)")
    return verify_artifact(p)


def read_spikes(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Any:
    """Read a spikes table (or some of its columns) into a pandas DataFrame."""
    import pyarrow.parquet as pq

    p = _checked(path)
    with reading(p, _WHAT):
        schema_names = pq.read_schema(os.path.abspath(p)).names
        missing = [c for c in (columns or ()) if c not in schema_names]
        if missing:
            raise ArtifactError(f"{p}: missing columns {missing}; was it written by prepare?")
        return pq.read_table(
            os.path.abspath(p), columns=list(columns) if columns else None
        ).to_pandas()
