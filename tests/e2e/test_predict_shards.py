"""``predict --records A:B`` (the shard of a workflow manager) and ``--work-dir`` on the local
engine: parts concatenated (one header) equal the whole run byte for byte, the index stays
global, a rerun reuses finished parts; ``--engine ray`` without Ray names the extra."""

from __future__ import annotations

import gzip
import sys

import pytest

from bertgeom.cli import main


@pytest.fixture(scope="module")
def twelve(shared_data, tmp_path_factory):
    """12 real CI genomes, the 11th repeating the id of the 3rd."""
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    recs = list(zip(lines[::2], lines[1::2], strict=True))[:11]
    recs.insert(10, (recs[2][0], recs[5][1]))
    path = tmp_path_factory.mktemp("twelve") / "g.fasta"
    path.write_text("".join(f"{h}\n{s}\n" for h, s in recs))
    return str(path)


def _run(model, genomes, out, *extra):
    args = ["predict", str(model), genomes, "--dedupe", "keep-first", "--device", "cpu"]
    assert main([*args, "--out", str(out), "--quiet", *extra]) == 0
    return out.read_text()


def test_record_ranges_concatenated_equal_the_whole(one_thread, tiny_with_ood, twelve, tmp_path):
    whole = _run(tiny_with_ood, twelve, tmp_path / "whole.tsv")
    parts = [
        _run(
            tiny_with_ood,
            twelve,
            tmp_path / f"p{a}.tsv",
            "--records",
            f"{a}:{b}",
            "--shard-size",
            "2",
        )
        for a, b in [(0, 5), (5, 11), (11, 40)]
    ]
    header = whole.splitlines(keepends=True)[0]
    assert all(p.startswith(header) for p in parts)
    joined = header + "".join(p.removeprefix(header) for p in parts)  # `tail -n +2` of each
    assert joined == whole
    assert len(whole.splitlines()) == 13
    rows = [dict(zip(header.split(), line.split("\t"), strict=True))
            for line in whole.splitlines()[1:]]  # fmt: skip
    assert sum(bool(r["ood_distance"]) for r in rows) == 11  # the detector's column is filled
    last = parts[1].splitlines()[-1].split("\t")
    assert last[0] == "10" and "duplicate id" in parts[1]  # global index, the dup decided


def test_work_dir_rerun_reads_finished_parts(one_thread, tiny_with_ood, twelve, tmp_path, capsys):
    whole = _run(tiny_with_ood, twelve, tmp_path / "whole.tsv")
    work = tmp_path / "work"
    assert _run(tiny_with_ood, twelve, tmp_path / "a.tsv", "--work-dir", str(work),
                "--shard-size", "5") == whole  # fmt: skip
    parts = sorted((work / "parts").iterdir())
    assert len(parts) == 3 and (work / "work.json").is_file()
    parts[1].unlink()
    capsys.readouterr()
    assert _run(tiny_with_ood, twelve, tmp_path / "b.tsv", "--work-dir", str(work),
                "--shard-size", "5") == whole  # fmt: skip
    assert "2 of 3 shards already finished" in capsys.readouterr().err


def test_engine_ray_without_ray_names_the_extra(tiny_model, twelve, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "p.tsv"
    rc = main(["predict", str(tiny_model), twelve, "--engine", "ray", "--out", str(out)])
    assert rc == 2
    assert capsys.readouterr().err == (
        "error: --engine ray needs Ray, which is not installed: pip install 'bertgeom[ray]'\n"
    )
    assert not out.exists()
    rc = main(["analyze", str(tiny_model), str(tmp_path), "--engine", "ray", "--out",
               str(tmp_path / "a")])  # fmt: skip
    assert rc == 2 and "pip install 'bertgeom[ray]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--records", "5:2"], "--records 5:2: A must not exceed B"),
        (["--shard-size", "0"], "shard size must be an integer >= 1 (got 0)"),
        (["--address", "auto"], "--address needs --engine ray"),
    ],
)
def test_bad_scale_options_are_one_line_errors(extra, message, tiny_model, twelve, tmp_path,
                                               capsys):  # fmt: skip
    rc = main(["predict", str(tiny_model), twelve, "--out", str(tmp_path / "p.tsv"), *extra])
    assert rc == 2
    assert capsys.readouterr().err == f"error: {message}\n"
