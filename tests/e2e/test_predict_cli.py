"""``bertgeom predict`` and ``evaluate`` end to end with a tiny model."""

from __future__ import annotations

import csv
import gzip
import json

from bertgeom.cli import main
from bertgeom.pipeline.predict import COLUMNS
from bertgeom.resources import reference_genome


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_predict_writes_one_row_per_input_genome_in_order(
    tiny_model, shared_data, tmp_path, capsys
):
    ref = reference_genome()
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    fasta = tmp_path / "in.fasta"
    extra = [("no_spike", ref[:20000]), ("tiny", "ACGT"), ("reference", ref)]
    fasta.write_text("\n".join(lines[:8]) + "\n" + "".join(f">{n}\n{s}\n" for n, s in extra))
    out = tmp_path / "predictions.tsv"
    code = main(["predict", str(tiny_model), str(fasta), "--out", str(out), "--quiet"])
    assert code == 0
    assert "7 genomes: 5 classified, 2 failed QC" in capsys.readouterr().out
    rows = read_tsv(out)
    assert list(rows[0]) == list(COLUMNS)
    expected_ids = [ln[1:] for ln in lines[:8:2]] + [n for n, _ in extra]
    assert [r["seq_id"] for r in rows] == expected_ids
    by_id = {r["seq_id"]: r for r in rows}
    assert by_id["no_spike"]["predicted_class"] == "" and by_id["no_spike"]["qc_status"] == "bad"
    assert by_id["no_spike"]["qc_notes"]
    ok = by_id["reference"]
    assert ok["predicted_class"] and 0 < float(ok["probability"]) <= 1
    assert float(ok["margin"]) >= 0 and ok["runner_up"] != ok["predicted_class"]
    assert len({r["model_id"] for r in rows}) == 1 and rows[0]["bertgeom_version"]


def test_predict_bad_input_is_a_clear_error(tiny_model, tmp_path, capsys):
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    code = main(["predict", str(tiny_model), str(empty), "--out", str(tmp_path / "p.tsv")])
    assert code == 2
    assert capsys.readouterr().err == f"error: {empty}: file is empty\n"
    assert not (tmp_path / "p.tsv").exists()
    notfasta = tmp_path / "x.txt"
    notfasta.write_text("hello\n")
    code = main(["predict", str(tiny_model), str(notfasta), "--out", str(tmp_path / "p.tsv")])
    assert code == 2
    assert "not a FASTA file" in capsys.readouterr().err


def test_evaluate_writes_metrics_and_figures(tiny_model, ci_prepared, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", str(tiny_model), str(ci_prepared), "--out", str(out), "--refit"])
    assert code == 0
    assert "accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["calibrated"]["accuracy"] <= 1
    assert {c["label"] for c in metrics["per_class"]} >= {"alpha", "delta"}
    assert metrics["temperature"] > 0
    for name in (
        "per_class.tsv",
        "confusion.tsv",
        "predictions.tsv",
        "confusion.png",
        "reliability.png",
        "manifest.json",
    ):
        assert (out / name).is_file(), name
    assert (tiny_model / "ood.npz").is_file()
