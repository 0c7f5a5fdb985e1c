"""``analyze`` end to end on a tiny model: files, table invariants, batch-size independence."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import ConfigError
from bertgeom.geometry.embeddings import import_umap
from bertgeom.geometry.gates import GATES
from bertgeom.pipeline import analyze

FAST = "cone,gates,domains,direction"


@pytest.fixture(scope="module")
def full_run(tiny_model, ci_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze")
    cfg = AnalyzeConfig(
        split="all",
        all_genomes=True,
        max_genomes=12,
        batch_size=6,
        measures={"spectra": {"genomes": 4}, "maps": {"keep": 1}},
    )
    return analyze.run(tiny_model, ci_prepared, out, cfg, progress=False), out


def test_every_family_writes_its_tables_and_figures(full_run):
    summary, out = full_run
    assert summary.n_genomes >= 8
    for name in (
        "cone.parquet",
        "cone_summary.tsv",
        "cls_cone.tsv",
        "gates.tsv",
        "direction.tsv",
        "spectra.tsv",
        "domains.tsv",
        "embeddings.tsv",
        "one_vs_all.tsv",
        "flow.tsv",
        "genomes.tsv",
        "maps.npz",
        "manifest.json",
    ):
        assert (out / name).is_file(), name
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"gate_grid.png", "cone_curves.png", "directionality.png", "spectra.png"} <= figures
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "analyze" and manifest["config"]["max_genomes"] == 12


def test_embedding_maps_pca_tsne_and_umap_or_a_note(full_run):
    summary, out = full_run
    pca = pd.read_csv(out / "embedding_maps.tsv", sep="\t")
    maps = pd.read_parquet(out / "nonlinear_maps.parquet")
    assert list(maps.columns) == ["seq_id", "class", "layer", "kind", "method", "dim1", "dim2"]
    assert pd.read_csv(out / "nonlinear_maps.tsv", sep="\t").shape == maps.shape
    umap = import_umap() is not None
    assert set(maps.method) == ({"tsne", "umap"} if umap else {"tsne"})
    tsne = maps[maps.method == "tsne"]
    # the same genomes, hidden states and kinds as the PCA map (12 genomes < the 2,000 cap)
    key = ["seq_id", "layer", "kind"]
    assert (
        tsne[key]
        .sort_values(key)
        .reset_index(drop=True)
        .equals(pca[key].sort_values(key).reset_index(drop=True))
    )
    assert np.isfinite(maps[["dim1", "dim2"]].to_numpy()).all()
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"embedding_maps.png", "embedding_maps_tsne.png"} <= figures
    assert ("embedding_maps_umap.png" in figures) == umap
    manifest = json.loads((out / "manifest.json").read_text())["summary"]
    n = len(tsne.seq_id.unique())
    assert f"tsne: perplexity 30 clipped to {(n - 1) / 3:.3g} for {n} genomes" in manifest["notes"]
    assert any("umap-learn is not installed" in x for x in manifest["notes"]) == (not umap)
    assert manifest["embeddings"]["map_seconds"]["tsne"] > 0
    assert summary.notes == tuple(manifest["notes"])


def test_maps_can_be_turned_off(tiny_model, ci_prepared, tmp_path):
    cfg = AnalyzeConfig(
        split="all",
        all_genomes=True,
        max_genomes=8,
        only="embeddings",
        measures={"embeddings": {"maps": ""}},
    )
    summary = analyze.run(tiny_model, ci_prepared, tmp_path, cfg, progress=False)
    assert (tmp_path / "embeddings.tsv").is_file() and summary.notes == ()
    made = {p.name for p in tmp_path.rglob("*")}
    assert not {n for n in made if "embedding_maps" in n or "nonlinear_maps" in n}, made
    # batch_size 0 (the default) is resolved by device and saved as resolved: 16 on CPU
    config = json.loads((tmp_path / "manifest.json").read_text())["config"]
    assert AnalyzeConfig().batch_size == 0 and config["batch_size"] == 16


def test_table_invariants(full_run):
    _, out = full_run
    gates = pd.read_csv(out / "gates.tsv", sep="\t")
    assert set(gates.label) <= {*GATES, "mixed", "empty"}
    scores = gates[list(GATES)].to_numpy()
    assert np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1
    cone = pd.read_parquet(out / "cone.parquet")
    assert cone.cone.between(0, 1 + 1e-6).all()
    domains = pd.read_csv(out / "domains.tsv", sep="\t")
    assert domains.attention_share.between(0, 1 + 1e-6).all()
    direction = pd.read_csv(out / "direction.tsv", sep="\t")
    assert direction["index"].between(0, 1).all()
    with np.load(out / "maps.npz") as z:
        mean = z["class_mean"].astype(np.float64)  # (layer, head, class, q, k)
        rows = mean.sum(-1)
        present = rows.sum(-1) > 0  # classes with genomes, real query rows
        assert np.allclose(rows[..., 0][present], 1.0, atol=1e-2)  # [CLS] row sums to 1
        assert z["genome_maps"].shape[1:3] == mean.shape[:2]


def test_one_batch_equals_many(tiny_model, ci_prepared, tmp_path):
    """Batch sizes 8, 3 and 5: the same tables."""
    tables = []
    for bs in (8, 3, 5):
        out = tmp_path / f"bs{bs}"
        cfg = AnalyzeConfig(split="all", all_genomes=True, max_genomes=8, only=FAST, batch_size=bs)
        analyze.run(tiny_model, ci_prepared, out, cfg, progress=False)
        tables.append(
            {
                n: pd.read_csv(out / f"{n}.tsv", sep="\t")
                for n in ("gates", "domains", "cone_summary", "direction")
            }
        )
    for name, other in itertools.product(tables[0], (1, 2)):
        a, b = tables[0][name], tables[other][name]
        num = a.select_dtypes("number").columns
        assert a.drop(columns=num).equals(b.drop(columns=num)), name
        assert np.allclose(
            a[num].to_numpy(float), b[num].to_numpy(float), atol=1e-5, equal_nan=True
        ), name


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown measure\(s\) gatez \(valid: cone"):
        AnalyzeConfig(only="cone,gatez")
    with pytest.raises(ConfigError, match=r"\[analyze.gates\]: unknown option\(s\) windw"):
        AnalyzeConfig(measures={"gates": {"windw": 2}})


class _Interrupt(Exception):
    pass


def _tables(out):
    names = ("gates", "domains", "cone_summary", "direction", "spectra", "embeddings", "genomes")
    return {n: pd.read_csv(out / f"{n}.tsv", sep="\t") for n in names}


@pytest.mark.parametrize("how", ["periodic", "on_interrupt"])
def test_interrupted_run_resumes_from_its_checkpoint_to_the_same_outputs(
    how, tiny_model, ci_prepared, tmp_path, monkeypatch, capsys
):
    """A run stopped in its third batch resumes at genome 6, streams only the batches after
    it, and writes what an uninterrupted run writes: with a checkpoint after every batch
    (stopped by an error), and with no periodic checkpoint (stopped by Ctrl-C in the forward
    pass: the finished batches are saved on the way out)."""
    from bertgeom.geometry.stream import Stream
    from bertgeom.pipeline.analyze_resume import CHECKPOINT

    cfg = AnalyzeConfig(
        split="all", all_genomes=True, max_genomes=12, batch_size=3,
        checkpoint_minutes=0 if how == "periodic" else 600,
        measures={"spectra": {"genomes": 8}, "embeddings": {"maps": ""}},
    )  # fmt: skip
    analyze.run(tiny_model, ci_prepared, tmp_path / "whole", cfg, progress=False)
    assert not (tmp_path / "whole" / CHECKPOINT).exists()

    batch, on_layer = Stream.batch, Stream._on_layer
    calls = []
    stop = _Interrupt if how == "periodic" else KeyboardInterrupt

    def counting(self, inputs, labels, keep_maps=None):
        out = batch(self, inputs, labels, keep_maps)
        calls.append(len(labels))
        return out

    def interrupted(self, layer, t):
        if len(calls) == 2 and layer == 1:  # the third batch's forward pass, its last layer
            raise stop
        on_layer(self, layer, t)

    out = tmp_path / "resumed"
    monkeypatch.setattr(Stream, "batch", counting)
    monkeypatch.setattr(Stream, "_on_layer", interrupted)
    with pytest.raises(stop):
        analyze.run(tiny_model, ci_prepared, out, cfg, progress=False)
    monkeypatch.setattr(Stream, "_on_layer", on_layer)
    assert (out / CHECKPOINT).is_file() and not (out / "gates.tsv").exists()

    calls.clear()
    summary = analyze.run(tiny_model, ci_prepared, out, cfg, progress=False)
    assert "resuming at genome 6" in capsys.readouterr().err
    assert calls[0] == 3 and sum(calls) == summary.n_genomes - 6  # only the rest streamed
    assert not (out / CHECKPOINT).exists()
    whole, resumed = _tables(tmp_path / "whole"), _tables(out)
    for name in whole:
        pd.testing.assert_frame_equal(whole[name], resumed[name], obj=name)
    with np.load(tmp_path / "whole" / "maps.npz") as a, np.load(out / "maps.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key


def test_checkpoint_of_another_run_is_ignored(tiny_model, ci_prepared, tmp_path, capsys):
    from bertgeom.pipeline import analyze_resume

    cfg = AnalyzeConfig(split="all", max_genomes=6, batch_size=3, only="cone")
    out = tmp_path / "a"
    out.mkdir()
    (out / analyze_resume.CHECKPOINT).write_bytes(b"not a checkpoint")
    analyze.run(tiny_model, ci_prepared, out, cfg, progress=False)
    assert "unreadable checkpoint" in capsys.readouterr().err
    assert not (out / analyze_resume.CHECKPOINT).exists()

    class FakeStream:  # the stream's resume interface
        n_done = 3

        def state_dict(self):
            return {"n_done": 3, "measures": {"sums": torch.arange(3.0)}}

        def load_state_dict(self, state):
            if "sums" not in state["measures"]:
                raise ValueError("stream state lacks measures ['sums']")
            self.loaded = state

    s = FakeStream()
    ids = np.array(["x"])
    # a checkpoint written by a run with another gate window is not resumed by this one
    fp = analyze_resume.fingerprint(cfg, {"gates": {"window": 5}}, "cpu", [], ids)
    # predictions may run ahead of the finished batches: the rest is dropped
    analyze_resume.save(out, fp, s, [np.zeros(3, np.int64), np.ones(2, np.int64)], 1.0)
    mine = analyze_resume.fingerprint(cfg, {"gates": {"window": 3}}, "cpu", [], ids)
    assert analyze_resume.load(out, mine, s) is None
    assert "measures differ" in capsys.readouterr().err
    assert not hasattr(s, "loaded")
    resumed = analyze_resume.load(out, fp, s)
    assert np.concatenate(resumed.preds).tolist() == [0, 0, 0]
    assert torch.equal(s.loaded["measures"]["sums"], torch.arange(3.0))
    # a checkpoint whose contents do not fit is reported and ignored, the stream untouched
    del s.loaded
    s.state_dict = lambda: {"n_done": 3, "measures": {}}
    analyze_resume.save(out, fp, s, [np.zeros(3, np.int64)], 1.0)
    assert analyze_resume.load(out, fp, s) is None and not hasattr(s, "loaded")
    assert "unusable checkpoint (ValueError: stream state lacks" in capsys.readouterr().err
    # options read only after the stream may change
    again = analyze_resume.fingerprint(replace(cfg, all_genomes=True), {"gates": {"window": 3}},
                                       "cpu", [], ids)  # fmt: skip
    assert again == mine


def test_a_roberta_checkpoint_trained_elsewhere_is_analysed(tiny_model, ci_prepared, tmp_path):
    """A RoBERTa classifier with our tokenizer files, PyTorch weights, labels LABEL_0.. and no
    bertgeom_model.json: loaded through AutoModel, grouped by the data's classes over all
    genomes (noted), its predictions those of the model itself."""
    import shutil

    import transformers

    from bertgeom.model.data import collate, load_split, sequences_for
    from bertgeom.model.store import load_model_dir
    from bertgeom.tokens.vocab import load_vocabulary

    vocab = load_vocabulary(tiny_model)
    cfg = transformers.RobertaConfig(
        vocab_size=len(vocab.tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=440, pad_token_id=0, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    d = tmp_path / "roberta"
    d.mkdir()
    cfg.save_pretrained(d)  # PyTorch-format weights, as older checkpoints have them
    model = transformers.RobertaForSequenceClassification(cfg)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    for name in ("vocab.txt", "bertgeom_tokens.json"):
        shutil.copy(tiny_model / name, d / name)
    assert not (d / "model.safetensors").exists() and (d / "pytorch_model.bin").exists()

    out = tmp_path / "out"
    run_cfg = AnalyzeConfig(split="test", only=FAST, batch_size=4)
    summary = analyze.run(d, ci_prepared, out, run_cfg, progress=False)
    assert summary.n_included == summary.n_genomes
    assert any("LABEL_0, LABEL_1, LABEL_2" in n for n in summary.notes)
    genomes = pd.read_csv(out / "genomes.tsv", sep="\t")
    assert genomes.included.all() and not genomes.correct.any()
    test = load_split(ci_prepared, "test")
    assert set(genomes["class"]) == set(test.label)
    gates = pd.read_csv(out / "gates.tsv", sep="\t")
    assert set(gates["class"]) - {"all"} <= set(test.label)

    bundle = load_model_dir(d)
    assert type(bundle.model).__name__ == "RobertaForSequenceClassification"
    loaded = bundle.model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())
    order = genomes.seq_id.tolist()
    test = test.set_index("id").loc[order]
    with torch.inference_mode():
        logits = bundle.model(**collate(vocab.encode(sequences_for(test, "aligned")))).logits
    expected = np.asarray(bundle.labels)[logits.argmax(-1).numpy()]
    assert genomes.predicted.tolist() == expected.tolist()
