"""Shared fixtures: the real data in ../shared/data (tests fail, not skip, without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; a missing folder is a test failure."""
    if not (SHARED_DATA / "genomes.fasta.gz").is_file():
        pytest.fail(f"real data missing: {SHARED_DATA} (CI must provide ../shared/data)")
    return SHARED_DATA
