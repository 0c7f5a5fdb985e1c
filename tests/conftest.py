"""Shared fixtures: the real data in ../shared/data (tests fail, not skip, without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture()
def one_thread():
    """torch on one thread in this process (byte-identical outputs across engines, which run
    their workers on one), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; a missing folder is a test failure."""
    if not (SHARED_DATA / "genomes.fasta.gz").is_file():
        pytest.fail(f"real data missing: {SHARED_DATA} (CI must provide ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ci_prepared(shared_data, tmp_path_factory) -> Path:
    """``prepare`` run once on the 48 CI genomes with their labels."""
    from bertgeom.config import PrepareConfig
    from bertgeom.pipeline import prepare

    out = tmp_path_factory.mktemp("ci_prepared")
    prepare.run(
        [shared_data / "ci_genomes.fasta.gz"],
        out,
        PrepareConfig(jobs=1),
        labels_path=shared_data / "labels.tsv",
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(ci_prepared, tmp_path_factory) -> Path:
    """An untrained ``tiny`` classifier (seeded) with the CI vocabulary, saved as a model dir."""
    from bertgeom.model.data import load_split, sequences_for
    from bertgeom.model.presets import bert_config, build_classifier
    from bertgeom.model.store import save_model_dir
    from bertgeom.resources import CLASSES
    from bertgeom.tokens.kmers import KmerSpec
    from bertgeom.tokens.vocab import build_vocabulary

    train = load_split(ci_prepared, "train")
    vocab = build_vocabulary([sequences_for(train, "aligned")], KmerSpec(), 1)
    labels = [c for c in CLASSES if (train.label == c).any()]
    model = build_classifier(bert_config("tiny", vocab.size, vocab.n_positions(), labels), 0)
    out = tmp_path_factory.mktemp("tiny_model")
    save_model_dir(model, vocab, {"labels": labels, "preset": "tiny"}, out)
    return out


@pytest.fixture(scope="session")
def installed_tiny(ci_prepared, tmp_path_factory) -> Path:
    """A ``tiny`` model trained a few steps on the CI genomes and installed with `models install`
    as ``sc2-spike-small`` version ``test`` into a models folder of its own (returned)."""
    from bertgeom.config import TrainConfig
    from bertgeom.pipeline import ship, train

    run = tmp_path_factory.mktemp("tiny_run")
    (run / "prepared").symlink_to(ci_prepared, target_is_directory=True)
    config = TrainConfig(preset="tiny", max_steps=3, threads=1, seed=0)
    train.run(run / "prepared", run / "model", config, progress=False)
    models = tmp_path_factory.mktemp("models")
    ship.run(run, "sc2-spike-small", "test", out_root=models, device="cpu", progress=False)
    return models


@pytest.fixture()
def default_tiny(installed_tiny, monkeypatch) -> Path:
    """``installed_tiny`` as the default model (``BERTGEOM_MODELS``, searched first); its model
    directory."""
    monkeypatch.setenv("BERTGEOM_MODELS", str(installed_tiny))
    return installed_tiny / "sc2-spike-small"


@pytest.fixture(scope="session")
def tiny_with_ood(tiny_model, ci_prepared, tmp_path_factory) -> Path:
    """A copy of ``tiny_model`` with its open-set detector fitted (`evaluate --refit`), so
    predictions carry ``ood_distance`` whatever ran before (``tiny_model`` itself gets one only
    when a test refits it)."""
    import shutil

    from bertgeom.cli import main

    model = tmp_path_factory.mktemp("tiny_ood") / "model"
    shutil.copytree(tiny_model, model)
    out = tmp_path_factory.mktemp("tiny_ood_eval") / "eval"
    args = ["evaluate", str(model), str(ci_prepared), "--out", str(out), "--refit"]
    assert main(args) == 0
    assert (model / "ood.npz").is_file()
    return model
