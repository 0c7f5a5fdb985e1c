"""train / pretrain on the 48 CI genomes with the tiny preset on CPU.

k = stride = 21 (182 tokens) instead of 12/9 (425 tokens) keeps every run a few seconds; the
code paths are the same.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bertgeom.config import TrainConfig
from bertgeom.errors import ArtifactError, ConfigError
from bertgeom.io.files import sha256_file
from bertgeom.model.checkpoint import StaleCheckpointError
from bertgeom.model.data import collate, load_split, sequences_for
from bertgeom.model.pretrain import PRETRAIN_META
from bertgeom.model.store import load_model_dir, read_meta
from bertgeom.model.train import CHECKPOINT, HISTORY_COLUMNS
from bertgeom.pipeline import train as train_stage
from bertgeom.tokens.kmers import kmers_reference
from bertgeom.tokens.vocab import load_vocabulary

#: The loop's mechanics on the CI genomes as they are: no hard negatives (they add rows, so
#: steps per epoch; tests/unit/test_constellation.py covers them).
FAST = TrainConfig(preset="tiny", k=21, stride=21, threads=2, patience=0, hard_negatives=0.0)


@pytest.fixture(scope="module")
def prepared(ci_prepared):
    """The 48 CI genomes, prepared once per session (tests/conftest.py)."""
    return ci_prepared


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """15 full-batch epochs at a high rate: long enough for the loss to leave ln(8)."""
    out = tmp_path_factory.mktemp("model")
    config = replace(FAST, epochs=15, batch_size=32, lr=2e-2, warmup_ratio=0.0, balance="none")
    return train_stage.run(prepared, out, config, progress=False), config


def _logits(model, ids):
    with torch.inference_mode():
        return model(**collate(ids)).logits


def test_training_lowers_the_loss_and_writes_its_files(trained):
    result, _ = trained
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 15
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2
    out = result.out_dir
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                 "bertgeom_model.json", "history.tsv", "manifest.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / CHECKPOINT).is_file()
    with open(out / "history.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert tuple(rows[0]) == HISTORY_COLUMNS and len(rows) == 16
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "train" and manifest["config"]["preset"] == "tiny"
    meta = read_meta(out)
    assert meta["labels"] == ["alpha", "beta", "gamma", "delta", "omicron", "lambda", "mu", "other"]
    assert meta["token"] == {"k": 21, "stride": 21, "mode": "aligned"}
    assert meta["best_epoch"] == result.best_epoch
    assert (meta["n_train"], meta["n_val"]) == (result.n_train, result.n_val) == (31, 9)


def test_saved_model_reloads_with_bertgeom_and_transformers(trained, prepared):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result, _ = trained
    bundle = load_model_dir(result.out_dir)
    val = load_split(prepared, "val")
    ids = bundle.vocab.encode(sequences_for(val, "aligned"))
    ours = _logits(bundle.model, ids)
    # the saved weights are the best epoch's: its validation loss comes back
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    target = torch.tensor([bundle.labels.index(c) for c in val.label])
    loss = torch.nn.functional.cross_entropy(ours, target)
    assert float(loss) == pytest.approx(best["val_loss"], abs=1e-5)
    hf = AutoModelForSequenceClassification.from_pretrained(result.out_dir).eval()
    assert torch.allclose(_logits(hf, ids), ours, atol=1e-5)
    import bertgeom.model.hf_tokenizer  # noqa: F401 - registers bertgeom's tokenizer class

    tok = AutoTokenizer.from_pretrained(result.out_dir)
    spike = val.spike.iloc[0]
    words = " ".join(kmers_reference(spike, bundle.vocab.spec, length=3822))
    assert tok(words)["input_ids"] == ids[0].tolist()


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(prepared, tmp_path):
    config = replace(FAST, epochs=2, batch_size=8, lr=1e-3, balance="sampler")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_stage.run(prepared, whole, config, progress=False)
    # interrupted in the middle of epoch 2 (4 batches per epoch), then resumed
    first = train_stage.run(prepared, parts, replace(config, max_steps=6), progress=False)
    assert first.history[-1]["step"] == 6
    resumed = train_stage.run(prepared, parts, config, resume=True, progress=False)
    assert resumed.history[-1]["step"] == 8
    a = torch.load(whole / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(parts / CHECKPOINT, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name


def test_resume_refuses_a_changed_config_and_a_fresh_run_an_old_checkpoint(prepared, tmp_path):
    config = replace(FAST, epochs=1, batch_size=32, max_steps=1)
    train_stage.run(prepared, tmp_path, config, progress=False)
    with pytest.raises(ArtifactError, match="exists"):
        train_stage.run(prepared, tmp_path, config, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        train_stage.run(prepared, tmp_path, replace(config, lr=1.0), resume=True, progress=False)
    with pytest.raises(ArtifactError, match="no checkpoint"):
        train_stage.run(prepared, tmp_path / "new", config, resume=True, progress=False)
    with pytest.raises(ArtifactError, match="run `bertgeom prepare` first"):
        train_stage.run(tmp_path / "nothing", tmp_path / "x", config, progress=False)


def test_pretrain_then_train_from_it(prepared, tmp_path):
    from transformers import BertForMaskedLM

    # stride 20: 194 ids, padded to 200 columns (masks and targets must follow the padding)
    config = replace(FAST, stride=20, epochs=1, batch_size=16, max_steps=3, lr=1e-3)
    pre = train_stage.run_pretrain(prepared, tmp_path / "pre", config, progress=False)
    meta = json.loads((pre / PRETRAIN_META).read_text())
    assert meta["n_spikes"] == 40  # 48 genomes minus the 8 test ones (all pass QC)
    assert np.isfinite(meta["final_train_loss"])
    encoder = BertForMaskedLM.from_pretrained(pre).bert.embeddings.word_embeddings.weight
    # a vanishing rate: the classifier's encoder must still hold the pre-trained weights
    fine = replace(config, init_from=str(pre), lr=1e-12, max_steps=1)
    result = train_stage.run(prepared, tmp_path / "clf", fine, progress=False)
    bundle = load_model_dir(result.out_dir)
    assert bundle.vocab == load_vocabulary(pre)
    got = bundle.model.bert.embeddings.word_embeddings.weight
    assert torch.allclose(got, encoder, atol=1e-6)
    with pytest.raises(ConfigError, match="pre-trained with"):
        train_stage.run(prepared, tmp_path / "k12", replace(fine, k=12, stride=9), progress=False)


def test_compiled_training_takes_the_same_steps_as_eager(prepared, tmp_path, monkeypatch):
    """--compile trains through the torch.compile wrapper and saves the plain model. The
    compiler backend is swapped for dynamo's "eager" one (CPU inductor codegen takes minutes on
    2 cores): same graph capture and wrapper, same numerics, so the losses equal eager ones."""
    real_compile = torch.compile
    calls = []

    def eager_backend(model, **kwargs):
        calls.append(model)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_backend)
    config = replace(FAST, epochs=1, batch_size=16, lr=1e-3, max_steps=3)
    eager = train_stage.run(prepared, tmp_path / "eager", config, progress=False)
    assert not calls
    compiled = train_stage.run(
        prepared, tmp_path / "compiled", replace(config, compile=True), progress=False
    )
    assert len(calls) == 1
    assert compiled.history[-1]["train_loss"] == pytest.approx(
        eager.history[-1]["train_loss"], rel=1e-5
    )
    bundle = load_model_dir(tmp_path / "compiled")
    assert not any(k.startswith("_orig_mod") for k in bundle.model.state_dict())


def test_resume_accepts_an_older_checkpoint_and_a_compile_switch(prepared, tmp_path):
    from bertgeom.model.checkpoint import load_checkpoint

    config = replace(FAST, epochs=1, batch_size=32, max_steps=1)
    train_stage.run(prepared, tmp_path, config, progress=False)
    path = tmp_path / CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["compile"]  # written before the option existed
    torch.save(ckpt, path)
    data_sha = sha256_file(prepared / "spikes.parquet")
    load_checkpoint(path, config, data_sha)
    load_checkpoint(path, replace(config, compile=True), data_sha)
    with pytest.raises(ConfigError, match="lr"):
        load_checkpoint(path, replace(config, lr=1.0), data_sha)


def test_resume_on_other_data_is_refused(prepared, tmp_path):
    """The checkpoint's fingerprint holds the prepared data's sha256: resuming a finished or
    interrupted run on other data (other labels, other genomes) is refused, naming both."""
    import shutil

    config = replace(FAST, epochs=1, batch_size=32, max_steps=1)
    model = tmp_path / "model"
    train_stage.run(prepared, model, config, progress=False)
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    spikes = other / "spikes.parquet"
    table = pq.read_table(spikes).to_pandas()
    table.loc[table["label"] == "alpha", "label"] = "beta"  # relabelled genomes
    table.to_parquet(spikes)
    (other / "manifest.json").unlink()  # prepared by hand: no manifest to verify against
    weights = sha256_file(model / "model.safetensors")
    with pytest.raises(StaleCheckpointError, match="cannot resume: it was trained on sha256"):
        train_stage.run(other, model, replace(config, max_steps=2), resume=True, progress=False)
    assert sha256_file(model / "model.safetensors") == weights  # nothing overwritten
    assert (model / "manifest.json").is_file()  # refused before the folder was touched
