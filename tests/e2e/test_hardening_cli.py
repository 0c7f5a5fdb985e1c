"""No traceback, no silent wrong result, no destroyed input: one test per class of issue 18.

Each test drives ``bertgeom.cli.main`` in-process and checks the exit status, that standard
error is one line starting with ``error:`` (or warnings), and that inputs are unchanged.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from bertgeom.cli import main
from bertgeom.io.manifest import write_manifest


def sha(path: Path) -> str:
    """sha256 of a file, or of every file below a folder (names included)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path.parent)).encode() + p.read_bytes())
    return h.hexdigest()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The ``error:`` line of ``err``; every other line must be a warning."""
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert all(ln.startswith("error: ") or "warning" in ln for ln in lines), err
    assert "Traceback" not in err
    return errors[0]


@pytest.fixture
def fasta(shared_data, tmp_path) -> Path:
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    path = tmp_path / "in.fasta"
    path.write_text("\n".join(lines[:4]) + "\n")
    return path


@pytest.fixture
def model(tiny_model, tmp_path) -> Path:
    """A copy of the session's tiny model with a manifest, as `train` leaves it."""
    d = tmp_path / "model"
    shutil.copytree(tiny_model, d, ignore=shutil.ignore_patterns("ood.npz", "manifest.json"))
    names = sorted(p.name for p in d.iterdir() if p.is_file())
    write_manifest(d, "train", [], {}, names)
    return d


# --- 1. inputs are never written ---------------------------------------------------------------


def test_predict_out_onto_its_input_is_refused_and_the_input_unchanged(
    model, fasta, tmp_path, capsys
):
    (tmp_path / "link.fasta").symlink_to(fasta)
    before = sha(fasta), sha(model)
    for out in (fasta, tmp_path / "link.fasta", model / "p.tsv"):
        code, _, err = run_cli(["predict", model, fasta, "--out", out, "--quiet"], capsys)
        assert code == 2
        assert "(it would be overwritten; choose an output outside the inputs)" in one_error_line(
            err
        )
    assert (sha(fasta), sha(model)) == before


def test_every_stage_refuses_an_output_onto_its_inputs(model, ci_prepared, fasta, capsys):
    prep_before, model_before = sha(ci_prepared), sha(model)
    cases = [
        ["train", ci_prepared, "--out", ci_prepared, "--preset", "tiny"],
        ["train", ci_prepared, "--out", ci_prepared / "model", "--preset", "tiny"],
        ["pretrain", ci_prepared, "--out", ci_prepared, "--preset", "tiny"],
        ["evaluate", model, ci_prepared, "--out", model],
        ["evaluate", model, ci_prepared, "--out", ci_prepared / "eval"],
        ["analyze", model, ci_prepared, "--out", ci_prepared, "--quiet"],
        ["prepare", fasta, "--out", fasta.parent],
        ["prepare", fasta, "--out", fasta],
    ]
    for args in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2, args
        line = one_error_line(err)
        assert "the output" in line or "exists and is not a folder" in line, (args, line)
    assert (sha(ci_prepared), sha(model)) == (prep_before, model_before)


def test_report_never_overwrites_what_is_not_its_own_html(ci_prepared, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ci_prepared, run / "prepared")
    before = sha(run)
    for out in (run / "prepared" / "spikes.parquet", run / "prepared" / "r.html", tmp_path / "x"):
        code, _, err = run_cli(["report", run, "--out", out], capsys)
        assert code == 2 and one_error_line(err), out
    assert sha(run) == before
    assert run_cli(["report", run, "--out", run / "report.html"], capsys)[0] == 0


# --- 2. provenance that cannot lie -------------------------------------------------------------


def test_a_bit_flipped_table_or_shuffled_vocabulary_is_named_not_used(
    model, ci_prepared, tmp_path, capsys
):
    prep = tmp_path / "prep"
    shutil.copytree(ci_prepared, prep)
    data = bytearray((prep / "spikes.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01
    (prep / "spikes.parquet").write_bytes(bytes(data))
    code, _, err = run_cli(["evaluate", model, prep, "--out", tmp_path / "ev"], capsys)
    assert code == 2
    assert one_error_line(err).startswith(f"error: {prep / 'spikes.parquet'}: changed since")
    vocab = (model / "vocab.txt").read_text().splitlines()
    (model / "vocab.txt").write_text("\n".join(vocab[:5] + vocab[6:] + vocab[5:6]) + "\n")
    code, _, err = run_cli(["evaluate", model, ci_prepared, "--out", tmp_path / "ev"], capsys)
    assert code == 2
    assert one_error_line(err).startswith(f"error: {model / 'vocab.txt'}: changed since")
    assert not (tmp_path / "ev").exists()  # a failed run leaves no empty folder


# --- 3. finite or fail -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        ["--lr", "inf"],
        ["--lr", "nan"],
        ["--lr=-1e-3"],
        ["--epochs", "0"],
        ["--batch-size", "0"],
        ["--seed", "-1"],
        ["--seed", str(2**40)],
        ["--threads", "-2"],
        ["--max-steps", "-1"],
        ["--k", "0"],
    ],
)
def test_options_that_must_be_finite_and_positive_are_refused(
    option, ci_prepared, tmp_path, capsys
):
    code, _, err = run_cli(["train", ci_prepared, "--out", tmp_path / "m", *option], capsys)
    assert code == 2
    assert one_error_line(err).startswith("error: config: ")
    assert not (tmp_path / "m").exists()


def test_a_nan_model_gives_no_call(model, fasta, ci_prepared, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    weights = load_file(model / "model.safetensors")
    name = next(k for k in weights if k.endswith("classifier.weight"))
    weights[name][:] = float("nan")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    (model / "manifest.json").unlink()  # the damage is the point: no manifest to catch it
    out = tmp_path / "p.tsv"
    code, _, err = run_cli(["predict", model, fasta, "--out", out, "--quiet"], capsys)
    assert code == 0 and "warning: 2 genomes got no call" in err
    rows = [ln.split("\t") for ln in out.read_text().splitlines()]
    header = rows[0]
    for row in rows[1:]:
        cells = dict(zip(header, row, strict=True))
        assert cells["predicted_class"] == "" and cells["probability"] == ""
        assert cells["ood"] == "true" and "no call" in cells["qc_reasons"]
    code, _, err = run_cli(["evaluate", model, ci_prepared, "--out", tmp_path / "ev"], capsys)
    assert code == 2
    assert "non-finite logits" in one_error_line(err)


def test_a_non_finite_loss_stops_training(ci_prepared, tmp_path, capsys):
    args = ["train", ci_prepared, "--out", tmp_path / "m", "--preset", "tiny", "--k", "21"]
    args += ["--stride", "21", "--lr", "1e30", "--max-steps", "20", "--quiet"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert one_error_line(err).startswith("error: training diverged: the ")
    assert not (tmp_path / "m" / "model.safetensors").exists()


# --- 4. every failure is one line --------------------------------------------------------------


def test_a_truncated_model_file_is_one_line(model, fasta, tmp_path, capsys):
    (model / "manifest.json").unlink()
    for name in ("model.safetensors", "config.json", "bertgeom_tokens.json", "bertgeom_model.json"):
        damaged = tmp_path / f"m_{name}"
        shutil.copytree(model, damaged)
        data = (damaged / name).read_bytes()
        (damaged / name).write_bytes(data[: len(data) // 3])
        code, _, err = run_cli(
            ["predict", damaged, fasta, "--out", tmp_path / "p.tsv", "--quiet"], capsys
        )
        assert code == 2, name
        assert one_error_line(err).startswith(f"error: {damaged}"), err
    assert not (tmp_path / "p.tsv").exists()


@pytest.mark.parametrize(
    ("code_", "words"),
    [
        (errno.ENOSPC, "no space left on the device (free some space, or write elsewhere)"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_operating_system_errors_on_output_are_one_line(
    code_, words, ci_prepared, model, tmp_path, capsys, monkeypatch
):
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise OSError(code_, os.strerror(code_), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "new" / "ev"
    code, _, err = run_cli(["evaluate", model, ci_prepared, "--out", out], capsys)
    assert code == 2
    assert one_error_line(err) == f"error: {out}: {words}" or words in err
    assert not (tmp_path / "new").exists()


def test_labels_and_config_read_gzip_and_name_a_wrong_encoding(
    fasta, shared_data, tmp_path, capsys
):
    name = fasta.read_text().splitlines()[0][1:]
    labels = tmp_path / "labels.tsv.gz"
    labels.write_bytes(gzip.compress(f"seq_id\tclass\n{name}\talpha\n".encode()))
    config = tmp_path / "c.toml.gz"
    config.write_bytes(gzip.compress(b"[prepare]\njobs = 1\n"))
    args = ["prepare", fasta, "--labels", labels, "--config", config, "--quiet"]
    assert run_cli([*args, "--out", tmp_path / "p"], capsys)[0] == 0
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(f"seq_id\tclass\n{name}\talpha\n# G\xe9nome\n".encode("latin-1"))
    code, _, err = run_cli(["prepare", fasta, "--labels", latin, "--out", tmp_path / "q"], capsys)
    assert code == 2
    assert one_error_line(err) == (
        f"error: {latin}: not a UTF-8 labels TSV file (line 3: byte 0xe9; save it as UTF-8)"
    )
    bad_config = tmp_path / "c.toml"
    bad_config.write_bytes("# r\xe9glages\n[prepare]\n".encode("latin-1"))
    code, _, err = run_cli([*args[:-3], "--config", bad_config, "--out", tmp_path / "q"], capsys)
    assert code == 2 and "not a UTF-8 TOML config file (line 1" in one_error_line(err)
    assert not (tmp_path / "q").exists()


def test_a_one_class_training_set_is_one_line(shared_data, tmp_path, capsys):
    genomes = shared_data / "ci_genomes.fasta.gz"
    with gzip.open(genomes, "rt") as fh:
        ids = [ln[1:].strip() for ln in fh if ln.startswith(">")]
    labels = tmp_path / "labels.tsv"
    labels.write_text("seq_id\tclass\n" + "".join(f"{i}\talpha\n" for i in ids))
    prep = tmp_path / "prep"
    assert (
        run_cli(["prepare", genomes, "--labels", labels, "--out", prep, "--quiet"], capsys)[0] == 0
    )
    code, _, err = run_cli(["train", prep, "--out", tmp_path / "m", "--preset", "tiny"], capsys)
    assert code == 2
    assert one_error_line(err) == (
        f"error: {prep / 'spikes.parquet'}: the train split holds one class (alpha); a "
        "classifier needs genomes of at least 2 classes (prepare more labelled genomes)"
    )
    assert not (tmp_path / "m").exists()


def test_a_closed_standard_output_ends_quietly(model, fasta, capsys, monkeypatch):
    import sys

    class Closed:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["predict", str(model), str(fasta), "--out", "-", "--quiet"]) == 0
    assert "error" not in capsys.readouterr().err


def test_argument_errors_are_one_line(capsys):
    for args in (["train"], ["train", "p", "--out", "m", "--epochs", "x"], ["bogus"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.endswith("--help)")


# --- 5. one writer per output folder -----------------------------------------------------------


def _exit_with(args: list[str]) -> None:
    os._exit(main(args))


def test_a_second_prepare_into_a_folder_being_written_is_refused(fasta, tmp_path, capsys):
    import multiprocessing as mp

    from bertgeom.io.outputs import output_lock

    out = tmp_path / "prep"
    assert run_cli(["prepare", fasta, "--out", out, "--quiet"], capsys)[0] == 0
    before = sha(out)
    with output_lock(out):  # a run is writing the folder: a second one (another process)
        child = mp.get_context("fork").Process(
            target=_exit_with, args=(["prepare", str(fasta), "--out", str(out), "--quiet"],)
        )
        child.start()
        child.join(120)
    assert child.exitcode == 2
    assert sha(out) == before  # nothing replaced, nothing corrupt
    assert json.loads((out / "manifest.json").read_text())["stage"] == "prepare"


def test_an_evaluate_into_an_old_folder_keeps_no_stale_output(model, ci_prepared, tmp_path, capsys):
    out = tmp_path / "ev"
    assert run_cli(["evaluate", model, ci_prepared, "--out", out], capsys)[0] == 0
    listed = [o["path"] for o in json.loads((out / "manifest.json").read_text())["outputs"]]
    (out / "history.png").write_bytes(b"an older run's figure")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"].append({"path": "history.png", "sha256": "0" * 64})
    (out / "manifest.json").write_text(json.dumps(manifest))
    (model / "history.tsv").unlink(missing_ok=True)  # this run draws no history
    assert run_cli(["evaluate", model, ci_prepared, "--out", out], capsys)[0] == 0
    assert not (out / "history.png").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([*listed, "manifest.json"])


def test_analyze_only_cone_into_an_old_analysis_leaves_no_stale_table_for_report(
    model, ci_prepared, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(ci_prepared, run / "prepared")
    shutil.copytree(model, run / "model")
    base = ["analyze", run / "model", run / "prepared", "--out", run / "analyze", "--quiet"]
    base += ["--max-genomes", "8", "--embeddings-maps", "", "--maps-keep", "0"]
    assert run_cli([*base, "--only", "cone,gates"], capsys)[0] == 0
    assert run_cli([*base, "--only", "cone"], capsys)[0] == 0
    listed = {
        o["path"] for o in json.loads((run / "analyze" / "manifest.json").read_text())["outputs"]
    }
    assert not any("gate" in name for name in listed)
    assert run_cli(["report", run, "--out", run / "report.html"], capsys)[0] == 0
    tables = sorted(p.name for p in (run / "report_tables").iterdir())
    assert "analyze_cone_summary.tsv" in tables
    assert not [t for t in tables if "gate" in t or "row_entropy" in t], tables
    on_disk = {
        str(p.relative_to(run / "analyze")) for p in (run / "analyze").rglob("*") if p.is_file()
    }
    assert on_disk == listed | {"manifest.json"}  # analyze pruned the earlier run's outputs
