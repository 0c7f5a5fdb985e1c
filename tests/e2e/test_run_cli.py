"""``bertgeom run``: chained stages, up-to-date skipping, resume after a kill."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertgeom.cli import main


def write_config(path: Path, run_dir: Path, shared_data: Path, epochs: int = 3) -> Path:
    path.write_text(f"""
[run]
dir = "{run_dir}"
stages = ["prepare", "train", "evaluate"]
inputs = ["{shared_data / "ci_genomes.fasta.gz"}"]
labels = "{shared_data / "labels.tsv"}"

[prepare]
jobs = 1

[train]
preset = "tiny"
epochs = {epochs}
batch_size = 8
k = 21
stride = 21
seed = 3

[evaluate]
split = "test"
""")
    return path


def test_rerun_of_a_finished_run_does_no_work(shared_data, tmp_path, capsys):
    cfg = write_config(tmp_path / "p.toml", tmp_path / "run", shared_data, epochs=1)
    assert main(["run", "--config", str(cfg), "--quiet"]) == 0
    first = capsys.readouterr().err
    assert "train: running" in first
    metrics = (tmp_path / "run" / "evaluate" / "metrics.json").read_text()
    assert main(["run", "--config", str(cfg), "--quiet"]) == 0
    second = capsys.readouterr().err
    for stage in ("prepare", "train", "evaluate"):
        assert f"{stage}: up to date" in second
    assert (tmp_path / "run" / "evaluate" / "metrics.json").read_text() == metrics


def test_killed_mid_training_resumes_to_the_same_metrics(shared_data, tmp_path):
    ref_cfg = write_config(tmp_path / "ref.toml", tmp_path / "ref", shared_data, epochs=4)
    assert main(["run", "--config", str(ref_cfg), "--quiet"]) == 0
    cfg = write_config(tmp_path / "k.toml", tmp_path / "killed", shared_data, epochs=4)
    cmd = [sys.executable, "-m", "bertgeom.cli", "run", "--config", str(cfg), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "model" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "training never wrote its first checkpoint"
    assert main(["run", "--config", str(cfg), "--quiet"]) == 0
    ref = json.loads((tmp_path / "ref" / "evaluate" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "evaluate" / "metrics.json").read_text())
    # the same weights; the calibration's float reductions may differ in the last bits
    assert got["calibrated"] == pytest.approx(ref["calibrated"], rel=1e-5, abs=1e-7)
    assert got["per_class"] == ref["per_class"]


def test_every_stage_has_a_subcommand():
    from bertgeom.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) >= {
        "simulate",
        "prepare",
        "train",
        "pretrain",
        "evaluate",
        "predict",
        "analyze",
        "report",
        "run",
        "demo",
    }


def test_changed_labels_retrain_instead_of_resuming_the_old_checkpoint(
    shared_data, tmp_path, capsys
):
    """After the labels change, prepare runs again, and train must not resume the finished
    checkpoint of the old data (its fingerprint holds the data's sha256): it trains again and
    the model's manifest and checkpoint name the new data."""
    import torch

    from bertgeom.io.files import sha256_file

    labels = tmp_path / "labels.tsv"
    shutil.copy(shared_data / "labels.tsv", labels)
    cfg = write_config(tmp_path / "p.toml", tmp_path / "run", shared_data, epochs=1)
    cfg.write_text(cfg.read_text().replace(str(shared_data / "labels.tsv"), str(labels)))
    assert main(["run", "--config", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    lines = labels.read_text().splitlines()
    ci_alpha = [i for i, ln in enumerate(lines) if ln.split("\t")[1::11][:2] == ["alpha", "1"]]
    for i in ci_alpha[:3]:  # three alpha genomes of the CI subset relabelled other
        lines[i] = lines[i].replace("\talpha\t", "\tother\t", 1)
    labels.write_text("\n".join(lines) + "\n")
    assert main(["run", "--config", str(cfg), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "prepare: running" in err and "train: not resuming" in err, err
    spikes = tmp_path / "run" / "prepared" / "spikes.parquet"
    model = tmp_path / "run" / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["inputs"][0]["sha256"] == sha256_file(spikes)
    ckpt = torch.load(model / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["data_sha256"] == sha256_file(spikes)
