"""``bertgeom predict`` for a surveillance lab: the default model, Nextclade-joinable rows,
output formats, standard input and compressed inputs, and logs without a terminal."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.cli import main
from bertgeom.columns import PREDICT, parse_cell
from bertgeom.pipeline.predict import split_mutations
from bertgeom.resources import reference_genome

SRC = Path(__file__).resolve().parents[2] / "src"


def read_rows(path_or_text, delimiter="\t"):
    text = path_or_text if isinstance(path_or_text, str) else Path(path_or_text).read_text()
    rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    return [{k: parse_cell(k, v) for k, v in r.items()} for r in rows]


def ci_records(shared_data, n=None):
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    recs = [(lines[i][1:], lines[i + 1]) for i in range(0, len(lines), 2)]
    return recs if n is None else recs[:n]


@pytest.fixture()
def small_fasta(shared_data, tmp_path):
    """Four CI genomes (alpha, beta, ...) under NCBI-style and GISAID-style headers, and one
    genome without a spike."""
    recs = ci_records(shared_data)[::12][:4]
    headers = [
        "MW123456.1 Severe acute respiratory syndrome coronavirus 2 isolate "
        "SARS-CoV-2/human/USA/CA-1234/2021, complete genome",
        "hCoV-19/USA/CA-SEARCH-1/2021|EPI_ISL_1234567|2021-03-01",
        "OK091006.1 Severe acute respiratory syndrome coronavirus 2 isolate "
        "SARS-CoV-2/human/USA/MD-HP05285/2021 ORF1ab polyprotein",
        "hCoV-19/England/MILK-9E05B3/2020|EPI_ISL_601443|2020-09-20",
    ]
    path = tmp_path / "genomes.fasta"
    body = "".join(f">{h}\n{s}\n" for h, (_, s) in zip(headers, recs, strict=True))
    path.write_text(body + ">no spike here\n" + reference_genome()[:20000] + "\n")
    return path, [*headers, "no spike here"]


def test_predict_without_a_model_uses_the_installed_default(default_tiny, shared_data, tmp_path):
    out = tmp_path / "p.tsv"
    genomes = shared_data / "ci_genomes.fasta.gz"
    assert main(["predict", str(genomes), "--out", str(out), "--quiet"]) == 0
    rows = read_rows(out)
    assert len(rows) == 48 and list(rows[0]) == list(PREDICT)
    assert [r["index"] for r in rows] == list(range(48))
    assert [r["seqName"] for r in rows] == [n for n, _ in ci_records(shared_data)]
    assert {(r["model_name"], r["model_version"]) for r in rows} == {("sc2-spike-small", "test")}
    # the explicit forms give the same rows: --model NAME@VERSION, --model DIR, DIR first
    for args in (["--model", "sc2-spike-small@test"], ["--model", str(default_tiny)]):
        again = tmp_path / "again.tsv"
        assert main(["predict", *args, str(genomes), "--out", str(again), "--quiet"]) == 0
        assert read_rows(again) == rows
    assert main(["predict", str(default_tiny), str(genomes), "--out", str(out), "-q"]) == 0
    assert read_rows(out) == rows


def test_unknown_model_and_a_misplaced_directory_are_clear_errors(default_tiny, tmp_path, capsys):
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">x\nACGT\n")
    assert main(["predict", "--model", "nope", str(fasta), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model 'nope': not a model directory and not an installed")
    assert "installed: sc2-spike-small@test" in err
    assert main(["predict", str(fasta), str(default_tiny), "--quiet"]) == 2
    assert "is a directory, not a FASTA file" in capsys.readouterr().err


def test_rows_join_a_nextclade_table_on_seqname_and_on_index(default_tiny, small_fasta, tmp_path):
    fasta, headers = small_fasta
    out = tmp_path / "p.tsv"
    assert main(["predict", str(fasta), "--out", str(out), "--quiet"]) == 0
    ours = pd.read_csv(out, sep="\t", dtype={"seqName": str}, keep_default_na=False)
    # a Nextclade-shaped table: index and seqName as Nextclade writes them, in another order
    nextclade = pd.DataFrame(
        {"index": range(len(headers)), "seqName": headers, "clade": ["x"] * len(headers)}
    ).iloc[::-1]
    by_name = ours.merge(nextclade, on="seqName", how="inner", suffixes=("", "_nc"))
    assert len(by_name) == len(ours) == len(headers)
    assert (by_name["index"] == by_name["index_nc"]).all()
    by_index = ours.merge(nextclade, on="index", how="inner", suffixes=("", "_nc"))
    assert len(by_index) == len(headers)
    assert (by_index["seqName"] == by_index["seqName_nc"]).all()
    # the first word alone would not join the NCBI-style names
    assert not set(ours["seq_id"]) & set(headers[:1])
    last = ours.iloc[-1]
    assert last["predicted_class"] == "Unassigned" and last["qc_status"] == "bad"


def test_mutations_and_insertions_are_written_in_nextclades_notation(default_tiny, tmp_path):
    ref = reference_genome()
    # Alpha's H69-/V70- (21765-21770 deleted), BA.1's EPE insertion after 22204, N501Y (A23063T)
    genome = ref[:21764] + ref[21770:22204] + "GAGCCAGAA" + ref[22204:23062] + "T" + ref[23063:]
    fasta = tmp_path / "g.fasta"
    fasta.write_text(f">synthetic\n{genome}\n")
    out = tmp_path / "p.tsv"
    assert main(["predict", str(fasta), "--out", str(out), "--quiet"]) == 0
    (row,) = read_rows(out)
    assert row["mutations"] == "S:H69-,S:V70-,S:214:EPE,S:N501Y"
    assert row["aaSubstitutions"] == "S:N501Y"
    assert row["aaDeletions"] == "S:H69-,S:V70-"
    assert row["aaInsertions"] == "S:214:EPE"
    assert row["insertions"] == "22204:GAGCCAGAA"
    assert row["n_mutations"] == 4


def test_split_mutations_keeps_order_within_each_kind():
    assert split_mutations("S:T19R,S:E156-,S:F157-,S:143:T,S:R158G,S:214:EPE") == (
        "S:T19R,S:R158G",
        "S:E156-,S:F157-",
        "S:143:T,S:214:EPE",
    )
    assert split_mutations("") == ("", "", "")


def test_every_format_holds_the_same_rows(default_tiny, small_fasta, tmp_path):
    fasta, _ = small_fasta
    tsv = tmp_path / "p.tsv"
    assert main(["predict", str(fasta), "--out", str(tsv), "--quiet"]) == 0
    rows = read_rows(tsv)
    for fmt in ("ndjson", "json", "csv"):
        by_suffix = tmp_path / f"p.{fmt}"
        by_option = tmp_path / f"p_{fmt}.txt"
        assert main(["predict", str(fasta), "--out", str(by_suffix), "--quiet"]) == 0
        cmd = ["predict", str(fasta), "--out", str(by_option), "--output-format", fmt, "-q"]
        assert main(cmd) == 0
        assert by_suffix.read_bytes() == by_option.read_bytes(), fmt
        text = by_suffix.read_text()
        if fmt == "ndjson":
            got = [json.loads(line) for line in text.splitlines()]
        elif fmt == "json":
            got = json.loads(text)
        else:
            got = read_rows(text, delimiter=",")
        assert got == rows, fmt
    assert rows[0]["ood"] in (True, False) and isinstance(rows[0]["probability"], float)


def test_output_columns_chooses_and_orders_columns(default_tiny, small_fasta, tmp_path, capsys):
    fasta, _ = small_fasta
    out = tmp_path / "p.tsv"
    cols = "seqName,predicted_class,model_version"
    assert main(["predict", str(fasta), "--out", str(out), "--output-columns", cols, "-q"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == cols.replace(",", "\t") and len(lines) == 6
    assert main(["predict", str(fasta), "--output-columns", "seqName,bogus", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output-columns: unknown column(s) bogus (valid: index,")


def test_standard_input_and_bzip2_xz_inputs_give_the_same_rows(
    default_tiny, small_fasta, tmp_path, monkeypatch, capsys
):
    fasta, _ = small_fasta
    plain = tmp_path / "plain.tsv"
    assert main(["predict", str(fasta), "--out", str(plain), "--quiet"]) == 0
    expected = plain.read_text()
    for name, pack in (("g.fa.bz2", bz2.compress), ("g.fa.xz", lzma.compress)):
        packed = tmp_path / name
        packed.write_bytes(pack(fasta.read_bytes()))
        out = tmp_path / f"{name}.tsv"
        assert main(["predict", str(packed), "--out", str(out), "--quiet"]) == 0
        assert out.read_text() == expected, name
    stdin = io.TextIOWrapper(io.BytesIO(gzip.compress(fasta.read_bytes())))
    monkeypatch.setattr(sys, "stdin", stdin)
    capsys.readouterr()
    assert main(["predict", "-", "--quiet"]) == 0  # stdin in, stdout out
    assert capsys.readouterr().out == expected


def test_a_log_without_a_terminal_gets_plain_progress_lines(default_tiny, small_fasta, tmp_path):
    fasta, _ = small_fasta
    log = tmp_path / "predict.log"
    env = os.environ | {"PYTHONPATH": str(SRC), "BERTGEOM_PROGRESS_SECONDS": "0"}
    with open(log, "wb") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "bertgeom", "predict", str(fasta), "--out",
             str(tmp_path / "p.tsv")],
            stdout=fh, stderr=subprocess.STDOUT, env=env, check=False,
        )  # fmt: skip
    text = log.read_bytes()
    assert done.returncode == 0, text
    assert b"\r" not in text
    lines = text.decode().splitlines()
    progress = [ln for ln in lines if ln.startswith("predict: ")]
    assert progress and progress[-1].startswith("predict: done, 5/5 genomes (100%)")
    assert any(ln.startswith("5 genomes: 4 classified, 1 failed QC") for ln in lines)
