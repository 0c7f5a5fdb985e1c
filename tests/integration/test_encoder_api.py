"""``measure_encoder``: the geometry of any BERT-family encoder on any inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from bertgeom.config import AnalyzeConfig
from bertgeom.geometry.encoder import encoder_measures, measure_encoder
from bertgeom.model.data import collate, load_split, sequences_for
from bertgeom.model.store import load_model_dir
from bertgeom.pipeline import analyze


def _text_encoder(attn="eager"):
    cfg = transformers.BertConfig(
        vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=48, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertModel._from_config(cfg, attn_implementation=attn).eval()


def _batches(lengths, seed=0):
    """Padded batches of random 'sentences' of the given lengths ([CLS] ... [SEP])."""
    rng = np.random.default_rng(seed)
    out = []
    for group in lengths:
        width = max(group)
        ids = np.zeros((len(group), width), np.int64)
        for i, n in enumerate(group):
            ids[i, :n] = rng.integers(5, 60, n)
            ids[i, 0], ids[i, n - 1] = 2, 3
        mask = torch.from_numpy(ids > 0)
        out.append({"input_ids": torch.from_numpy(ids), "attention_mask": mask})
    return out


def test_same_tables_as_analyze_on_our_model(tiny_model, ci_prepared, tmp_path):
    only = "cone,gates,direction"
    cfg = AnalyzeConfig(split="test", all_genomes=True, only=only, batch_size=4)
    analyze.run(tiny_model, ci_prepared, tmp_path, cfg, progress=False)
    genomes = pd.read_csv(tmp_path / "genomes.tsv", sep="\t")
    bundle = load_model_dir(tiny_model)
    test = load_split(ci_prepared, "test").set_index("id").loc[genomes.seq_id]
    ids = bundle.vocab.encode(sequences_for(test, "aligned"))
    labels = [bundle.labels.index(c) for c in genomes["class"]]
    batches = [collate(ids[a : a + 4]) for a in range(0, len(ids), 4)]
    geo = measure_encoder(bundle.model, batches, labels, bundle.labels, families=only.split(","))
    mine = geo.tables()
    for name in ("gates", "direction", "cone_summary"):
        theirs = pd.read_csv(tmp_path / f"{name}.tsv", sep="\t")
        ours = mine[name].reset_index(drop=True)
        assert list(ours.columns) == list(theirs.columns), name
        num = theirs.select_dtypes("number").columns
        assert ours.drop(columns=num).astype(str).equals(theirs.drop(columns=num).astype(str))
        assert np.allclose(ours[num].to_numpy(float), theirs[num].to_numpy(float), rtol=1e-4,
                           atol=1e-6, equal_nan=True), name  # fmt: skip


def test_any_encoder_on_inputs_of_any_length():
    model = _text_encoder()
    batches = _batches([[10, 7, 12], [5, 12], [9, 9, 6]])
    labels = [0, 1, 0, 1, 1, 0, 0, 1]
    geo = measure_encoder(model, batches, labels, ("neg", "pos"))
    t = geo.tables()
    assert set(t) >= {"cone", "cone_summary", "gates", "direction", "spectra", "embeddings"}
    gates = t["gates"]
    assert len(gates) == 2 * 3 * 3  # layers x heads x (2 classes + all)
    assert set(gates["class"]) == {"neg", "pos", "all"}
    scores = gates[["closed", "open", "backward", "forward", "cluster", "instance"]]
    assert ((scores >= 0) & (scores <= 1 + 1e-9)).all().all()
    assert t["direction"]["index"].between(0, 1).all()
    cone = t["cone"]
    assert set(cone.seq_id) == {f"s{i}" for i in range(8)} and cone.cone.between(0, 1 + 1e-6).all()
    maps = geo.class_mean_maps()
    assert maps.shape[:3] == (2, 3, 2) and maps.shape[-1] >= 12
    # every real query row of a class-mean map sums to 1 (PAD keys get no attention)
    assert np.allclose(maps[:, :, :, 0].sum(-1), 1.0, atol=1e-5)
    # without labels: one class
    one = measure_encoder(model, batches, families=("gates",)).tables()["gates"]
    assert set(one["class"]) == {"all"}


def test_mean_maps_do_not_depend_on_batching_of_different_lengths():
    """PAD query rows are left out and each row is averaged over the sequences that have it:
    lengths 5 and 12 in one padded batch or in two batches give the same class-mean map."""
    model = _text_encoder()
    together = _batches([[5, 12]], seed=3)
    apart = [{k: v[i : i + 1, : [5, 12][i]] for k, v in together[0].items()} for i in range(2)]
    maps = [
        measure_encoder(model, b, families=("maps",)).class_mean_maps() for b in (together, apart)
    ]
    assert maps[0].shape == maps[1].shape
    assert np.allclose(maps[0], maps[1], atol=1e-6)
    rows = maps[0].sum(-1)  # (layer, head, class, q)
    assert np.allclose(rows[..., :12], 1.0, atol=1e-5)  # rows 5..11 come from one sequence


def test_clear_errors():
    batches = _batches([[6, 6]])
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        measure_encoder(_text_encoder("sdpa"), batches)
    model = _text_encoder()
    with pytest.raises(ValueError, match="unknown measures"):
        measure_encoder(model, batches, families=("domains",))
    with pytest.raises(ValueError, match="3 labels for 2 sequences"):
        measure_encoder(model, batches, labels=[0, 1, 0])
    with pytest.raises(ValueError, match="3 labels for more sequences"):
        measure_encoder(model, batches + batches, labels=[0, 1, 0])
    with pytest.raises(ValueError, match=r"class ids in 0\.\.1"):
        measure_encoder(model, batches, labels=[0, 2], class_names=("a", "b"))
    with pytest.raises(TypeError, match="not a BERT-family model"):
        measure_encoder(torch.nn.Linear(2, 2), batches)
    with pytest.raises(ValueError, match="class_names without labels"):
        measure_encoder(model, batches, class_names=("a", "b"))
    other = _text_encoder()
    del other.encoder.layer[0].attention.self.query  # e.g. DeBERTa's query_proj layout
    with pytest.raises(TypeError, match=r"no attention\.self\.query"):
        measure_encoder(other, batches)
    assert "domains" not in encoder_measures() and "cone" in encoder_measures()
