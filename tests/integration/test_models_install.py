"""``bertgeom models install`` and ``bertgeom models``: float16 weights, the model card, the
model found by name (on a tiny model; the shipped one is checked in test_shipped_model.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertgeom.cli import main
from bertgeom.errors import ArtifactError, ConfigError
from bertgeom.io.files import sha256_file
from bertgeom.model.shipped import find_model, installed_models
from bertgeom.pipeline import ship


def test_installed_model_has_half_weights_a_card_and_test_predictions(default_tiny, shared_data):
    from safetensors import safe_open

    meta = json.loads((default_tiny / "bertgeom_model.json").read_text())
    assert (meta["name"], meta["version"], meta["weights_dtype"]) == (
        "sc2-spike-small", "test", "float16",
    )  # fmt: skip
    weights = default_tiny / "model.safetensors"
    assert meta["weights_sha256"] == sha256_file(weights) == meta["card"]["weights"]["sha256"]
    with safe_open(str(weights), framework="np") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype("float16")}  # noqa: SIM118
    card = meta["card"]
    readme = (default_tiny / "README.md").read_text()
    assert readme.startswith("# sc2-spike-small test\n")
    for heading in ("Training data and provenance", "Split", "Test metrics", "Calibration",
                    "QC thresholds", "Weights and how they were made"):  # fmt: skip
        assert f"## {heading}" in readme, heading
    assert meta["weights_sha256"] in readme and f"{card['test']['ece']:.4f}" in readme
    for c in card["test"]["per_class"]:
        assert f"| {c['label']} | {c['support']} | {c['precision']:.4f} |" in readme
    rows = (default_tiny / "test_predictions.tsv").read_text().splitlines()
    assert rows[0] == "seq_id\tpredicted_class\tprobability"
    n = card["test"]["n"]
    assert len(rows) - 1 == n == sum(c["support"] for c in card["test"]["per_class"])
    with open(shared_data / "labels.tsv", encoding="utf-8") as fh:
        truth = dict(ln.split("\t")[:2] for ln in fh)
    accuracy = np.mean([truth[r.split("\t")[0]] == r.split("\t")[1] for r in rows[1:]])
    assert accuracy == pytest.approx(card["test"]["accuracy"])
    assert card["qc"]["max_n_mediocre"] == 0.05 and card["calibration"]["temperature"] > 0


def test_models_lists_and_finds_installed_models(default_tiny, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sc2-spike-small" in out and "test" in out and str(default_tiny) in out
    assert find_model(None) == default_tiny == find_model("sc2-spike-small@test")
    assert find_model(default_tiny) == default_tiny  # a directory is itself
    assert any(m.label == "sc2-spike-small@test" for m in installed_models())
    with pytest.raises(ArtifactError, match=r"installed: .*sc2-spike-small@test"):
        find_model("sc2-spike-small@1999-01")


def test_install_checks_names_and_inputs(tmp_path):
    with pytest.raises(ConfigError, match="invalid model name 'Bad Name'"):
        ship.run(tmp_path, "Bad Name", "1")
    with pytest.raises(ArtifactError, match=r"bertgeom_model\.json: no such file"):
        ship.run(tmp_path, "ok", "1")


def test_the_demo_ends_with_the_installed_models_prediction(default_tiny, tmp_path, monkeypatch):
    from bertgeom.config import SimulateConfig
    from bertgeom.pipeline import demo, simulate

    simulate.run(tmp_path / "data", SimulateConfig(per_class=1, seed=3), progress=False)
    lines = demo.shipped_prediction(tmp_path)
    assert lines[0].startswith("installed model sc2-spike-small test on 8 demo genomes: ")
    assert len(lines) == 9 and (tmp_path / demo.PREDICTIONS).is_file()
    monkeypatch.setenv("BERTGEOM_MODELS", str(tmp_path / "none"))
    monkeypatch.setattr("bertgeom.model.shipped.package_models_dir", lambda: tmp_path / "no_models")
    assert demo.shipped_prediction(tmp_path) == [
        "no installed sc2-spike-small model, so no prediction (`make model` installs it)"
    ]
