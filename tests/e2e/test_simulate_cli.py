"""``bertgeom simulate`` then ``prepare``: the planted truth comes back."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq

from bertgeom.cli import main


def read_truth(path):
    with open(path, newline="") as fh:
        return {row["seq_id"]: row for row in csv.DictReader(fh, delimiter="\t")}


def test_simulate_then_prepare_recovers_the_planted_mutations(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "--out", str(sim), "--per-class", "4", "--seed", "7", "--quiet"]) == 0
    assert "simulated 32 genomes" in capsys.readouterr().out
    for name in ("genomes.fasta.gz", "labels.tsv", "truth.tsv", "manifest.json"):
        assert (sim / name).is_file()
    assert json.loads((sim / "manifest.json").read_text())["config"] == {"per_class": 4, "seed": 7}
    prep = tmp_path / "prep"
    code = main(
        [
            "prepare",
            str(sim / "genomes.fasta.gz"),
            "--labels",
            str(sim / "labels.tsv"),
            "--out",
            str(prep),
            "--quiet",
        ]
    )
    assert code == 0
    df = pq.read_table(prep / "spikes.parquet").to_pandas()
    truth = read_truth(sim / "truth.tsv")
    assert list(df.id) == list(truth)
    for row in df.itertuples():
        t = truth[row.id]
        assert row.label == t["class"]
        masked = {int(x) for x in t["masked_residues"].split(",") if x}
        called = {m for m in row.mutations.split(",") if m}
        planted = {m for m in t["planted"].split(",") if m}

        def unmasked(muts, masked=masked):
            return {m for m in muts if int("".join(c for c in m[2:] if c.isdigit())) not in masked}

        assert unmasked(called) == unmasked(planted), row.id


def test_simulate_is_reproducible(tmp_path, capsys):
    for name in ("a", "b"):
        main(
            [
                "simulate",
                "--out",
                str(tmp_path / name),
                "--per-class",
                "2",
                "--seed",
                "3",
                "--quiet",
            ]
        )
    capsys.readouterr()
    assert (tmp_path / "a" / "genomes.fasta.gz").read_bytes() == (
        tmp_path / "b" / "genomes.fasta.gz"
    ).read_bytes()
    assert (tmp_path / "a" / "truth.tsv").read_text() == (tmp_path / "b" / "truth.tsv").read_text()
