"""A work folder of finished predict shards (``predict --work-dir``), so a rerun skips them.

Layout (see docs/formats.md): ``work.json`` holds the fingerprint of the run (inputs, model,
options); ``parts/<shard name>.ndjson.gz`` holds one finished shard, one JSON object per output
row (``outcome``, ``label``, ``ood``, ``duplicate`` and the row's ``values`` without ``index``).
A part is written atomically, so a part that exists is complete.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertgeom.errors import InputError
from bertgeom.io.files import atomic_path, read_json, reading, write_json

#: Format tag of ``work.json``.
WORK_FORMAT = "bertgeom-predict-work/1"


class PartStore:
    """The finished shards of one run in ``work_dir``.

    Parameters
    ----------
    work_dir
        The folder (created when missing).
    fingerprint
        What must be equal for parts to be reused (compared with the folder's ``work.json``;
        a folder made for another run is refused rather than mixed).
    """

    def __init__(self, work_dir: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
        self.root = Path(work_dir)
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder (--work-dir names a folder)")
        manifest = self.root / "work.json"
        if manifest.is_file():
            old = read_json(manifest, "predict work folder manifest")
            if not isinstance(old, dict) or old.get("format") != WORK_FORMAT:
                raise InputError(f"{manifest}: not a predict work folder (format differs)")
            if old.get("fingerprint") != fingerprint:
                changed = sorted(
                    k for k in fingerprint if old.get("fingerprint", {}).get(k) != fingerprint[k]
                )
                raise InputError(
                    f"{self.root}: holds the parts of another run ({', '.join(changed)} differ): "
                    "remove the folder or use another --work-dir"
                )
        else:
            (self.root / "parts").mkdir(parents=True, exist_ok=True)
            write_json(manifest, {"format": WORK_FORMAT, "fingerprint": fingerprint})

    def path(self, name: str) -> Path:
        """The part file of the shard called ``name``."""
        return self.root / "parts" / f"{name}.ndjson.gz"

    def has(self, name: str) -> bool:
        """Whether the shard ``name`` is finished."""
        return self.path(name).is_file()

    def save(self, name: str, items: Sequence[dict[str, Any]]) -> None:
        """Write one finished shard's rows (atomically)."""
        with atomic_path(self.path(name)) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")

    def load(self, name: str) -> list[dict[str, Any]]:
        """The rows of a finished shard."""
        path = self.path(name)
        fix = "remove it, and the run makes it again"
        with reading(path, "predict work part", fix), gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]
