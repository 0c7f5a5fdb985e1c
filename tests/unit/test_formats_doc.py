"""docs/formats.md lists exactly the registered measures, each with its tables."""

from __future__ import annotations

import re
from pathlib import Path

from bertgeom.geometry.measures import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def _analyze_parts() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## `analyze` output")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    parts = re.split(r"^### (.+)$", section, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_registered_measure_has_its_part_with_its_tables():
    parts = _analyze_parts()
    reg = registry()
    documented = {name for name in parts if re.fullmatch(r"[a-z_]+", name)}
    assert documented == set(reg), "docs/formats.md measure parts differ from the registry"
    assert [n for n in parts if n in reg] == list(reg), "parts not in registry order"
    for name, measure in reg.items():
        for table in measure.tables:  # a table, or arrays written as <name>.npz
            text = parts[name]
            assert f"`{table}`" in text or f"`{table}.npz`" in text, f"{name}: {table} undocumented"
