"""The progress helper (bar on a terminal, plain lines in logs) and the column vocabulary."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from bertgeom import progress as prog
from bertgeom.columns import COLUMNS, EVALUATE_PREDICTIONS, PREDICT, cell, parse_cell, select
from bertgeom.errors import ConfigError
from bertgeom.io.rows import format_for

FORMATS_DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_writes_lines_without_carriage_returns():
    out = io.StringIO()
    with prog.PlainProgress(total=10, desc="predict", unit="genome", file=out, interval=0) as bar:
        for _ in range(10):
            bar.update()
            bar.set_postfix(loss="0.1234")
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 11  # one per update (interval 0) and the final one
    assert lines[0].startswith("predict: 1/10 genomes (10%), ")
    assert "about" in lines[0] and lines[1].endswith("loss 0.1234")
    assert lines[-1].startswith("predict: done, 10/10 genomes (100%), ")


def test_plain_progress_waits_for_its_interval():
    out = io.StringIO()
    with prog.PlainProgress(total=None, desc="x", unit="step", file=out, interval=3600) as bar:
        for _ in range(100):
            bar.update()
    assert out.getvalue().splitlines() == [
        ln for ln in out.getvalue().splitlines() if ln.startswith("x: done, 100 steps")
    ]


def test_progress_picks_a_bar_only_on_a_terminal(monkeypatch):
    from tqdm import tqdm

    assert isinstance(prog.progress(10, file=io.StringIO()), prog.PlainProgress)
    bar = prog.progress(10, file=_Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    assert not isinstance(prog.progress(10, enabled=False), prog.PlainProgress)
    monkeypatch.setattr(prog, "_VERBOSITY", -1)
    silent = prog.progress(10, file=io.StringIO())
    silent.update()
    assert not isinstance(silent, prog.PlainProgress | tqdm)


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(prog.INTERVAL_ENV, "5")
    assert prog.PlainProgress(1, "d", "u", file=io.StringIO()).interval == 5.0
    monkeypatch.setenv(prog.INTERVAL_ENV, "soon")
    assert prog.PlainProgress(1, "d", "u", file=io.StringIO()).interval == 30.0


def test_track_yields_every_item():
    assert list(prog.track(range(5), total=5, enabled=False)) == list(range(5))


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [("probability", 0.98765, "0.9877"), ("ood", True, "true"), ("ood", False, "false"),
     ("ood", None, ""), ("index", 3, "3"), ("seqName", "a b|c", "a b|c"),
     ("ood_distance", 12.3456, "12.35")],
)  # fmt: skip
def test_cells_round_trip(name, value, text):
    assert cell(name, value) == text
    back = parse_cell(name, text)
    assert back == (round(value, COLUMNS[name].digits) if isinstance(value, float) else value)


def test_every_column_is_documented_in_formats_md():
    doc = FORMATS_DOC.read_text(encoding="utf-8")
    for name in [*PREDICT, *EVALUATE_PREDICTIONS]:
        assert re.search(rf"`{re.escape(name)}`", doc), name


def test_select_checks_names():
    assert select(None) == PREDICT
    assert select("seqName, predicted_class") == ("seqName", "predicted_class")
    with pytest.raises(ConfigError, match="unknown column"):
        select("seqName,nope")
    with pytest.raises(ConfigError, match="named twice"):
        select("index,index")


def test_format_by_suffix_or_option():
    assert format_for("p.tsv") == "tsv" and format_for("p.csv.gz") == "csv"
    assert format_for("p.ndjson") == "ndjson" and format_for("-") == "tsv"
    assert format_for("p.txt", "json") == "json" and format_for("p.out") == "tsv"
    with pytest.raises(ConfigError, match="not one of"):
        format_for("p.tsv", "xml")
