"""The embeddings and flow measures of the engine v2: mergeable state, mean-pooled vectors
without [CLS]/[SEP] under drop_special, and the method fixes (k-NN k, exact anisotropy, the
one-vs-all probes solved together)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.errors import ConfigError
from bertgeom.geometry import embeddings as emb
from bertgeom.geometry.measures.base import Genomes, options_from
from bertgeom.geometry.measures.embeddings import Embeddings, EmbeddingsOptions
from bertgeom.geometry.measures.flow import Flow, flow_table
from bertgeom.geometry.stream import LAYER_POINTS, Stream, run_info


def tiny_bert():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    return transformers.BertModel(cfg).eval()


N, POS, BATCH = 12, 14, 4


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (N, POS), generator=g)
    mask = torch.ones_like(ids)
    for i in range(N):
        mask[i, POS - (i % 5) :] = 0  # lengths 14, 13, ..., 10
    ids[mask == 0] = 0
    labels = torch.arange(N) % 2
    return ids, mask, labels


def stream(model, info, lo, hi, options=None):
    ids, mask, labels = inputs()
    s = Stream(model, [Embeddings(info, options or EmbeddingsOptions(maps="pca"))], info)
    with s, torch.inference_mode():
        for a in range(lo, hi, BATCH):
            b = min(a + BATCH, hi)
            s.batch({"input_ids": ids[a:b], "attention_mask": mask[a:b]}, labels[a:b])
    return s


def genomes():
    labels = (np.arange(N) % 2).astype(np.int64)
    return Genomes(np.array([f"g{i}" for i in range(N)]), labels, np.ones(N, bool), True, 0)


def test_merge_of_two_streams_equals_one_stream():
    model = tiny_bert()
    info = run_info(model, ("a", "b"))
    whole = stream(model, info, 0, N)
    first, second = stream(model, info, 0, 8), stream(model, info, 8, N)
    restored = stream(model, info, 0, 0)
    restored.load_state_dict(first.state_dict())  # a saved shard state
    restored.merge(second)
    a, b = whole.measures[0], restored.measures[0]
    for name in ("cls", "mean", "n_content"):
        assert np.array_equal(a.rows.get(name), b.rows.get(name)), name
    for name, value in a.sums.values.items():
        assert torch.allclose(value, b.sums.get(name), rtol=1e-6, atol=0), name
    ta, tb = a.finish(genomes()), b.finish(genomes())
    assert set(ta) == {"cls_cone", "embeddings", "embedding_maps", "one_vs_all", "separability",
                       "output_histogram"}  # fmt: skip
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], rtol=1e-6, atol=1e-9)
    assert a.rows.get("cls").shape == (N, 3, 32)  # embeddings + 2 layers
    assert (ta["separability"].n == N).all() and set(ta["separability"].point) == set(LAYER_POINTS)


@pytest.mark.parametrize("drop_special", [False, True])
def test_mean_pooled_vectors_leave_special_tokens_out_with_drop_special(drop_special):
    """The mean-pooled vector of every hidden state is the mean of its content rows: with
    drop_special without [CLS] (first) and [SEP] (last real position)."""
    model = tiny_bert()
    info = run_info(model, ("a", "b"), drop_special=drop_special)
    m = stream(model, info, 0, N).measures[0]
    ids, mask, _ = inputs()
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    content = mask.bool().clone()
    if drop_special:
        lengths = mask.sum(1)
        content[:, 0] = False
        content[torch.arange(N), lengths - 1] = False
    n = content.sum(1, keepdim=True).double()
    for layer, h in enumerate(hidden.hidden_states):
        want = (h.double() * content[..., None]).sum(1) / n
        assert np.allclose(m.rows.get("mean")[:, layer], want.numpy(), atol=1e-5), layer
        assert np.allclose(m.rows.get("cls")[:, layer], h[:, 0].numpy(), atol=1e-6)
    assert m.rows.get("n_content").tolist() == n[:, 0].tolist()
    # the output histogram counts the token sums of the content rows of every genome
    hist = m.finish(genomes())["output_histogram"]
    assert (hist.groupby("layer")["count"].sum() == N * 32).all()


def test_knn_k_is_clipped_to_the_smallest_class_of_a_training_fold():
    """3 genomes per class, perfectly separated: 3 folds leave 2 per class in training; k = 4
    (the whole training fold) ties 2-2, k = 2 (per class) classifies every genome."""
    x = np.zeros((6, 1, 2))
    x[:3, 0, 0], x[3:, 0, 0] = [0.0, 0.1, 0.2], [10.0, 10.1, 10.2]
    y = np.array([0, 0, 0, 1, 1, 1])
    assert emb.knn_accuracy(x, y, clip="class")[0] == 1.0
    assert emb.probe_accuracy(x, y)[0] == 1.0
    assert emb.knn_accuracy(x, y, clip="fold")[0] < 1.0  # the behaviour before the fix
    with pytest.raises(ValueError, match="clip"):
        emb.knn_accuracy(x, y, clip="other")


def test_anisotropy_is_the_exact_mean_cosine_over_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 3, 5)) + np.array([0.0, 1.0, 5.0])[None, :, None]
    x[4, 1] = 0  # a zero vector counts as cosine 0
    unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
    cos = np.einsum("ild,jld->lij", unit, unit)
    off = ~np.eye(9, dtype=bool)
    assert np.allclose(emb.mean_pairwise_cosine(x), cos[:, off].mean(1), rtol=1e-12)
    assert emb.mean_pairwise_cosine(np.ones((4, 1, 3)))[0] == pytest.approx(1.0)
    assert np.isnan(emb.mean_pairwise_cosine(x[:1])).all()


def test_one_vs_all_probes_equal_the_scikit_learn_fits():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    centres = np.eye(3, 16) * np.array([0.0, 0.6, 10.0])[:, None, None]  # (layer, class, d)
    x = np.stack([centres[la][y] + rng.normal(size=(36, 16)) for la in range(3)], 1)
    a = emb.one_vs_all_accuracy(x, y, seed=1)
    b = emb.one_vs_all_probes(x, y, seed=1)
    assert np.array_equal(a.classes, b.classes)
    assert np.allclose(a.accuracy, b.accuracy) and np.allclose(
        a.balanced_accuracy, b.balanced_accuracy
    )
    assert (b.balanced_accuracy[2] > b.balanced_accuracy[0]).all()
    assert b.balanced_accuracy[2].min() > 0.85 and (b.balanced_accuracy[0] < 0.8).all()


def test_newton_step_through_the_genomes_equals_the_dense_solve():
    """More features than genomes: the step solved through the m x m system (Woodbury, the
    intercept by its Schur complement) is the dense (d + 1) x (d + 1) solve's, and the probes
    of such data equal scikit-learn's."""
    rng = np.random.default_rng(3)
    layers, m, d = 3, 12, 40
    z = np.concatenate([rng.normal(size=(layers, m, d)), np.ones((layers, m, 1))], -1)
    weight = rng.uniform(0.01, 0.25, size=(layers, m)) / m
    grad = rng.normal(size=(layers, d + 1))
    lam = 1.0 / m
    got = emb._newton_step(z, weight, grad, lam)
    expect = emb._dense_step(z, weight, grad, lam)
    np.testing.assert_allclose(got, expect, rtol=1e-8, atol=1e-10)
    hess = np.matmul(z.transpose(0, 2, 1), weight[..., None] * z)
    hess[:, np.arange(d), np.arange(d)] += lam
    np.testing.assert_allclose(np.matmul(hess, got[..., None])[..., 0], grad, atol=1e-9)

    y = np.repeat(np.arange(3), 10)
    centres = np.eye(3, 50) * np.array([0.0, 1.5, 10.0])[:, None, None]
    x = np.stack([centres[la][y] + rng.normal(size=(30, 50)) for la in range(3)], 1)
    a = emb.one_vs_all_accuracy(x, y, seed=1)
    b = emb.one_vs_all_probes(x, y, seed=1)
    assert np.allclose(a.accuracy, b.accuracy)
    assert np.allclose(a.balanced_accuracy, b.balanced_accuracy)


def test_options_are_validated():
    assert EmbeddingsOptions(maps="umap, pca").methods == ("pca", "umap")
    assert EmbeddingsOptions(maps="").methods == ()
    for bad in ({"maps": "pca,isomap"}, {"map_genomes": 4}, {"perplexity": 0},
                {"n_neighbors": 1}, {"histogram_bins": 0}, {"probe_genomes": 2}):  # fmt: skip
        with pytest.raises(ValueError):
            EmbeddingsOptions(**bad)
    with pytest.raises(ConfigError, match=r"embeddings\.perplexity"):
        options_from(EmbeddingsOptions, {"perplexity": "nan"}, "embeddings")
    opts = options_from(EmbeddingsOptions, {"map_genomes": "50"}, "embeddings")
    assert opts.map_genomes == 50 and Embeddings.stream_options == frozenset()


def test_flow_cone_is_the_mean_over_classes_of_the_class_medians():
    rows = []
    for cls, shift in (("a", 0.0), ("b", 0.2)):
        for i, p in enumerate(LAYER_POINTS):
            rows.append({"class": cls, "layer": 0, "point": p, "head": -1, "q50": 0.1 * i + shift,
                         "mean": 9.0})  # fmt: skip
    rows.append({"class": "a", "layer": 0, "point": "Z", "head": 0, "q50": 5.0, "mean": 9.0})
    flow = flow_table(pd.DataFrame(rows), None, None)
    assert set(flow.metric) == {"cone"} and len(flow) == len(LAYER_POINTS) - 1
    first = flow.iloc[0]
    assert first.transition == "X->C"
    assert first.before == pytest.approx(0.1) and first.after == pytest.approx(0.2)
    assert first.delta == pytest.approx(0.1) and first.relative == pytest.approx(1.0)
    derived = Flow(run_info(tiny_bert(), ("a", "b"))).derive({"cone_summary": pd.DataFrame(rows)})
    pd.testing.assert_frame_equal(derived["flow"], flow)
    assert flow_table(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()).empty
