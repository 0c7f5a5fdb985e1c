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
    code = main(["predict", str(tiny_model), str(fasta), "--out", str(out)])
    assert code == 0
    assert "7 genomes: 5 classified, 2 failed QC" in capsys.readouterr().out
    rows = read_tsv(out)
    assert list(rows[0]) == list(COLUMNS)
    expected_ids = [ln[1:] for ln in lines[:8:2]] + [n for n, _ in extra]
    assert [r["seq_id"] for r in rows] == expected_ids
    by_id = {r["seq_id"]: r for r in rows}
    no_spike = by_id["no_spike"]
    assert no_spike["predicted_class"] == "Unassigned" and no_spike["qc_status"] == "bad"
    assert no_spike["qc_reasons"] and no_spike["probability"] == ""
    ok = by_id["reference"]
    assert ok["predicted_class"] and 0 < float(ok["probability"]) <= 1
    gap = float(ok["probability"]) - float(ok["runner_up_probability"])
    assert abs(float(ok["margin"]) - gap) < 2e-4 and ok["runner_up"] != ok["predicted_class"]
    # the model's top class, unless the constellation check replaced it (then the note says so)
    assert float(ok["margin"]) >= 0 or "constellation check replaced" in ok["note"]
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


def _records(shared_data, n):
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    return [(lines[i][1:], lines[i + 1]) for i in range(0, 2 * n, 2)]


def test_predict_keep_first_gives_repeated_ids_a_row_in_place(
    tiny_model, shared_data, tmp_path, capsys
):
    (a, sa), (b, sb) = _records(shared_data, 2)
    fasta = tmp_path / "dup.fasta"
    fasta.write_text(f'>{a}\n{sa}\n>{b}\n{sb}\n>{a}\n{sb}\n>q"1\n{sa}\n')
    out = tmp_path / "p.tsv"
    cmd = ["predict", str(tiny_model), str(fasta), "--out", str(out)]
    assert main(cmd) == 2  # the default: a repeated id is an error
    assert "duplicate" in capsys.readouterr().err and not out.exists()
    assert main([*cmd, "--dedupe", "keep-first"]) == 0
    assert "4 genomes: 3 classified, 1 failed QC (1 of them duplicate ids)" in (
        capsys.readouterr().out
    )
    lines = out.read_text().splitlines()
    rows = [ln.split("\t") for ln in lines[1:]]
    seq_id = COLUMNS.index("seq_id")
    assert [r[seq_id] for r in rows] == [a, b, a, 'q"1']  # input order; a quote is not quoted
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]  # index, duplicates included
    dup = dict(zip(COLUMNS, rows[2], strict=True))
    assert dup["qc_status"] == "bad" and dup["predicted_class"] == "Unassigned"
    assert f"record 3 of {fasta} repeats an earlier record's id" in dup["qc_reasons"]
    assert all(len(r) == len(COLUMNS) for r in rows)


def test_predict_output_to_gzip_and_stdout(tiny_model, shared_data, tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{n}\n{s}\n" for n, s in _records(shared_data, 2)))
    gz = tmp_path / "p.tsv.gz"
    assert main(["predict", str(tiny_model), str(fasta), "--out", str(gz), "--quiet"]) == 0
    capsys.readouterr()
    with gzip.open(gz, "rt") as fh:
        packed = fh.read()
    first = gz.read_bytes()
    assert main(["predict", str(tiny_model), str(fasta), "--out", str(gz), "--quiet"]) == 0
    assert gz.read_bytes() == first  # no time or temporary name in the gzip header
    capsys.readouterr()
    assert main(["predict", str(tiny_model), str(fasta), "--out", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out == packed and len(packed.splitlines()) == 3
    assert "2 genomes: 2 classified" in captured.err and not (tmp_path / "-").exists()


def test_predict_bad_options_are_clear_errors_before_any_work(tiny_model, tmp_path, capsys):
    import torch

    fasta = tmp_path / "in.fasta"
    fasta.write_text(">x\nACGT\n")
    out = tmp_path / "p.tsv"
    base = ["predict", str(tiny_model), str(fasta), "--quiet"]
    cases = [
        (["--out", str(out), "--device", "bogus"], "device must be auto, cpu, cuda, cuda:N or mps"),
        (["--out", str(out), "--batch-size", "0"], "batch size must be an integer >= 1"),
        (["--out", str(out), "--batch-size", "-3"], "batch size must be an integer >= 1"),
        (["--out", str(tmp_path)], "is a directory"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--out", str(out), "--device", "cuda"], "CUDA is not available here"))
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (extra, err)
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.fasta"]


def test_sigterm_stops_a_command_and_removes_its_partial_output(tmp_path, monkeypatch, capsys):
    import os
    import signal

    from bertgeom.io.files import atomic_path
    from bertgeom.pipeline import predict

    def run(model_dir, genomes, out_path, **kwargs):
        with atomic_path(out_path) as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached")

    monkeypatch.setattr(predict, "run", run)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "p.tsv"
    assert main(["predict", "model", "x.fasta", "--out", str(out)]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored
