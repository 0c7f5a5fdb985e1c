"""Snapshots during training and the geometry over training, on ``tiny`` (k = stride = 21 keeps
every run a few seconds, as in test_train.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.config import AnalyzeConfig, TrainConfig
from bertgeom.errors import ArtifactError, ConfigError
from bertgeom.model.snapshots import (
    INDEX,
    INDEX_COLUMNS,
    SNAPSHOTS_DIR,
    Snapshots,
    load_snapshot,
    read_snapshots,
    snapshot_file,
    snapshot_steps,
)
from bertgeom.model.store import load_model_dir
from bertgeom.pipeline import analyze
from bertgeom.pipeline import train as train_stage
from bertgeom.pipeline.analyze_dynamics import (
    DEFAULT_MEASURES,
    FOLDER,
    SNAPSHOT_TABLE,
    snapshot_plan,
)

FAST = TrainConfig(
    preset="tiny", k=21, stride=21, threads=2, patience=0, hard_negatives=0.0, batch_size=16,
    warmup_ratio=0.0, balance="none", lr=2e-3,
)  # fmt: skip
#: the analysis and each snapshot with the same measures, options and statistics
ANALYZE = AnalyzeConfig(
    split="all",
    max_genomes=12,
    batch_size=12,
    all_genomes=True,
    only=",".join(DEFAULT_MEASURES),
    measures={"embeddings": {"maps": ""}},
    over_training=True,
)


def test_schedules():
    assert snapshot_steps(100, count=5) == (0, 1, 5, 22, 100)  # log-spaced: dense early
    assert snapshot_steps(6, every=4) == (0, 4, 6)  # the last step always
    assert snapshot_steps(3, count=8) == (0, 1, 2, 3)  # a short run keeps fewer
    assert snapshot_steps(3, count=2) == (0, 3)
    assert snapshot_steps(10) == ()
    with pytest.raises(ConfigError, match="give one of them"):
        TrainConfig(snapshots=3, snapshot_every=2)
    with pytest.raises(ConfigError, match="snapshot_dtype"):
        TrainConfig(snapshot_dtype="int8")


@pytest.fixture(scope="module")
def trained(ci_prepared, tmp_path_factory):
    """One epoch (its end is the best model, so the model directory holds the final weights),
    a snapshot every 3 steps (8 of the CI training genomes each) and at the last."""
    out = tmp_path_factory.mktemp("model")
    config = replace(FAST, epochs=1, batch_size=8, snapshot_every=3)
    result = train_stage.run(ci_prepared, out, config, progress=False)
    return out, result


def test_snapshots_at_the_requested_steps(trained):
    out, result = trained
    steps = int(result.history[-1]["step"])
    assert steps % 3 != 0  # the last step is off the schedule, and kept
    want = [*range(0, steps, 3), steps]
    snaps = read_snapshots(out)
    assert [s.step for s in snaps] == want
    index = pd.read_csv(out / SNAPSHOTS_DIR / INDEX, sep="\t")
    assert tuple(index.columns) == INDEX_COLUMNS
    assert list(index.file) == [snapshot_file(s) for s in want]
    # validation ran at the epoch's end only
    last = index.iloc[-1]
    assert last.val_macro_f1 == pytest.approx(result.history[-1]["val_macro_f1"])
    assert last.epoch == pytest.approx(1.0)
    assert index.val_loss.iloc[:-1].isna().all()
    # the last snapshot is the saved model, exactly (float32); step 0 differs from it
    bundle = load_model_dir(out)
    from safetensors.torch import load_file

    final, first = load_file(str(snaps[-1].path)), load_file(str(snaps[0].path))
    for name, value in bundle.model.state_dict().items():
        assert torch.equal(final[name], value), name
    assert not all(torch.equal(first[k], final[k]) for k in final)
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {o["path"] for o in manifest["outputs"]}
    assert f"{SNAPSHOTS_DIR}/{INDEX}" in listed and f"{SNAPSHOTS_DIR}/{snapshot_file(0)}" in listed


def test_float16_snapshots_load_into_the_model(trained, tmp_path):
    model_dir, _ = trained
    bundle = load_model_dir(model_dir)
    writer = Snapshots(tmp_path / SNAPSHOTS_DIR, frozenset({7}), 2, "float16")
    writer.maybe_save(bundle.model, 6)  # not a planned step
    writer.maybe_save(bundle.model, 7)
    writer.write_index([{"step": 7, "val_loss": 0.5, "val_accuracy": 1.0, "val_macro_f1": 1.0}])
    (snap,) = read_snapshots(tmp_path)
    assert (snap.step, snap.epoch, snap.val_accuracy) == (7, 3.5, 1.0)
    from safetensors.torch import load_file

    assert load_file(str(snap.path))["bert.pooler.dense.weight"].dtype == torch.float16
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    load_snapshot(bundle.model, snap)
    for name, value in bundle.model.state_dict().items():
        assert value.dtype == before[name].dtype
        assert torch.allclose(value, before[name], rtol=1e-3, atol=1e-4), name


@pytest.fixture(scope="module")
def over_training(trained, ci_prepared, tmp_path_factory):
    model, _ = trained
    out = tmp_path_factory.mktemp("analyze")
    return analyze.run(model, ci_prepared, out, ANALYZE, progress=False), out


def test_one_block_per_snapshot_and_the_last_equals_the_analysis(trained, over_training):
    model, _ = trained
    _, out = over_training
    steps = [s.step for s in read_snapshots(model)]
    folder = out / FOLDER
    compared = 0
    for path in sorted(folder.glob("*.parquet")):
        table = pd.read_parquet(path)
        if path.stem == SNAPSHOT_TABLE:
            assert list(table.step) == steps
            continue
        assert list(table.columns[:2]) == ["step", "epoch"]
        assert list(dict.fromkeys(table.step)) == steps, path.stem  # one block per snapshot
        sizes = table.groupby("step").size()
        if path.stem not in ("genomes",):
            assert sizes.nunique() == 1, path.stem  # same rows at every step
        last = table[table.step == steps[-1]].drop(columns=["step", "epoch"])
        mine = pd.read_parquet(out / path.name)
        pd.testing.assert_frame_equal(
            last.reset_index(drop=True), mine, check_exact=False, rtol=1e-6, atol=1e-9
        )
        compared += 1
    assert compared >= 8  # genomes, cone, cone_summary, gates, row_entropy, direction, ...
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {o["path"] for o in manifest["outputs"]}
    assert f"{FOLDER}/gates.tsv" in listed and f"{FOLDER}/figures/training_dynamics.png" in listed
    assert manifest["summary"]["over_training"]["steps"] == steps
    figures = {p.stem for p in (folder / "figures").glob("*.png")}
    assert figures == {"training_dynamics", "cone_over_training", "gate_mix_over_training"}


def test_training_moves_the_geometry(over_training):
    _, out = over_training
    cone = pd.read_parquet(out / FOLDER / "cone.parquet")
    first, last = (cone[cone.step == s].cone.to_numpy() for s in (cone.step.min(), cone.step.max()))
    assert first.shape == last.shape and not np.allclose(first, last)
    snaps = pd.read_parquet(out / FOLDER / f"{SNAPSHOT_TABLE}.parquet")
    assert snaps.sample_accuracy.between(0, 1).all()


def test_a_subsample_per_snapshot_is_stratified_within_the_analysis(trained, ci_prepared):
    model, _ = trained
    p = analyze.plan(model, ci_prepared, replace(ANALYZE, over_training_genomes=5))
    sp = snapshot_plan(p)
    assert sp.n == 5 and set(sp.df.id) <= set(p.df.id)
    assert sp.df.label.nunique() == min(5, p.df.label.nunique())  # every class it can hold
    assert sp.config.all_genomes and [m.name for m in sp.measures] == list(DEFAULT_MEASURES)
    assert sp.bundle.model is not p.bundle.model and sp.options["embeddings"].maps == ""


def test_a_model_without_snapshots_is_refused(tiny_model, ci_prepared, tmp_path):
    with pytest.raises(ArtifactError, match="trained without snapshots"):
        analyze.run(tiny_model, ci_prepared, tmp_path / "a", ANALYZE, progress=False)
    with pytest.raises(ConfigError, match="one process"):
        analyze.run_shard(
            tiny_model, ci_prepared, tmp_path / "s.pt", ANALYZE, (0, 2), progress=False
        )


def test_the_report_shows_the_training_dynamics(trained, over_training, tmp_path):
    from bertgeom.pipeline import report

    model, _ = trained
    _, out = over_training
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(model, target_is_directory=True)
    (run / "analyze").symlink_to(out, target_is_directory=True)
    html = report.run(run, tmp_path / "report.html").read_text()
    assert "Training dynamics" in html
    assert "linear-probe accuracy" in html
    assert html.count("data:image/png;base64") >= 3


def test_the_demo_trains_with_snapshots_and_analyses_them():
    from importlib import resources

    from bertgeom.config import read_toml, resolve

    with resources.as_file(resources.files("bertgeom.resources") / "demo.toml") as path:
        doc = read_toml(path)
    train_cfg = resolve(TrainConfig, doc["train"])
    analyze_cfg = resolve(AnalyzeConfig, doc["analyze"])
    assert train_cfg.snapshots >= 3 and analyze_cfg.over_training
    assert {"train", "analyze", "report"} <= set(doc["run"]["stages"])


def test_a_changed_snapshot_is_refused(trained, tmp_path):
    import shutil

    model, _ = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    last = read_snapshots(copy)[-1].path
    last.write_bytes(last.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="changed since bertgeom train wrote it"):
        read_snapshots(copy)


def test_command_line_errors_are_one_line(tiny_model, ci_prepared, tmp_path, capsys):
    from bertgeom.cli import main

    out = tmp_path / "out"
    code = main(
        ["analyze", str(tiny_model), str(ci_prepared), "--out", str(out), "--over-training"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "snapshots.tsv: no such file" in err
    assert not out.exists()
    both = [
        "train",
        str(ci_prepared),
        "--out",
        str(out),
        "--snapshots",
        "3",
        "--snapshot-every",
        "2",
    ]
    assert main(both) == 2
    assert "snapshots and snapshot_every are two schedules" in capsys.readouterr().err
