"""The ``maps`` measure: class-mean maps independent of batching, kept maps, merge, rollout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.geometry.measures.base import Arrays, BatchInfo
from bertgeom.geometry.measures.maps import Maps
from tests.unit import tiny_stream as ts


@pytest.fixture(scope="module")
def setup():
    model = ts.tiny_classifier()
    ids, labels = ts.genomes()
    return model, ids, labels, ts.info(model)


def make(info, keep=1):
    return lambda: Maps(info, Maps.Options(keep=keep))


def alone(model, x):
    """Each layer's attention of one genome streamed alone (no padding)."""
    with torch.inference_mode():
        out = model(input_ids=torch.as_tensor(x)[None], output_attentions=True)
    return torch.stack([a[0] for a in out.attentions])  # (layer, head, q, k)


@pytest.mark.parametrize("all_genomes", [True, False])
def test_class_means_do_not_depend_on_batching(setup, all_genomes):
    """Row q of a class's mean map is the mean over the class's genomes that have position q,
    from each genome streamed alone; kept maps are the genome's own maps."""
    model, ids, labels, info = setup
    keep = ts.kept(labels, 1)
    m, preds = ts.streamed(model, make(info), ids, labels, keep)
    g = ts.genomes_of(labels, preds, all_genomes)
    out = m.finish(g)
    arrays = out["maps"]
    assert isinstance(arrays, Arrays) and set(arrays.describe) >= set(arrays.arrays)
    mean = m._mean
    width = max(len(x) for x in ids)
    assert mean.shape == (2, 4, 3, width, width)
    for c in range(3):
        rows = np.flatnonzero((labels == c) & g.included)
        total = torch.zeros(2, 4, width, width, dtype=torch.float64)
        count = torch.zeros(width, dtype=torch.float64)
        for i in rows:
            a = alone(model, ids[i]).double()
            n = a.shape[-1]
            total[..., :n, :n] += a
            count[:n] += 1
        want = total / count.clamp(min=1)[:, None]
        assert np.allclose(mean[:, :, c], want.numpy(), atol=1e-5), c
    assert arrays.arrays["class_mean"].dtype == np.float16
    # kept: the first genome of each class, in stream order, its own map padded with zeros
    at = np.flatnonzero(keep)
    assert arrays.arrays["genome_ids"].tolist() == [f"g{i}" for i in at]
    assert arrays.arrays["genome_classes"].tolist() == [ts.CLASSES[labels[i]] for i in at]
    assert arrays.arrays["genome_lengths"].tolist() == [len(ids[i]) for i in at]
    for j, i in enumerate(at):
        got, n = arrays.arrays["genome_maps"][j], len(ids[i])
        assert got.dtype == np.float16
        assert np.allclose(got[..., :n, :n], alone(model, ids[i]).numpy(), atol=2e-3)
        assert not got[..., n:, :].any() and not got[..., :, n:].any()
    rollout = out["rollout"]
    assert set(rollout["class"]) <= set(ts.CLASSES)
    shares = rollout.groupby("class").rollout_share
    assert (rollout.rollout_share >= 0).all() and (shares.max() <= 1 + 1e-9).all()


@pytest.mark.parametrize(("cuts", "via_state"), [((8,), False), ((4, 12), True)])
def test_merge_of_parts_equals_one_stream(setup, cuts, via_state):
    """Streams over parts cut at batch boundaries (the first part narrower than the second:
    the sums grow), merged in order, equal the stream over all genomes."""
    model, ids, labels, info = setup
    keep = ts.kept(labels, 2)
    whole, preds = ts.streamed(model, make(info, 2), ids, labels, keep)
    parts, preds2 = ts.streamed(model, make(info, 2), ids, labels, keep, cuts, via_state)
    assert (preds == preds2).all()
    g = ts.genomes_of(labels, preds, True)
    a, b = whole.finish(g), parts.finish(g)
    assert np.allclose(whole._mean, parts._mean, rtol=1e-6, atol=1e-7)
    for k, v in a["maps"].arrays.items():
        if k != "class_mean":
            assert np.array_equal(v, b["maps"].arrays[k]), k
    pd.testing.assert_frame_equal(a["rollout"], b["rollout"], rtol=1e-6)


def test_empty_state_is_the_identity_and_abort_drops_the_batch(setup):
    from types import SimpleNamespace

    model, ids, labels, info = setup
    keep = ts.kept(labels, 1)
    m, preds = ts.streamed(model, make(info), ids, labels, keep)
    g = ts.genomes_of(labels, preds, True)
    want = m.finish(g)["maps"].arrays
    empty = Maps(info, Maps.Options())
    empty.merge(m)
    got = empty.finish(g)["maps"].arrays
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert Maps(info, Maps.Options()).finish(g) == {}
    # a batch interrupted before end_batch leaves no trace
    before = {k: v.clone() for k, v in m.sums.values.items()}
    inputs = ts.batch_inputs(ids[:4])
    b = BatchInfo(
        mask=inputs["attention_mask"].bool(),
        labels=torch.as_tensor(labels[:4]),
        keep_maps=torch.ones(4, dtype=torch.bool),
    )
    m.begin_batch(b)
    w = inputs["input_ids"].shape[1]
    m.update(0, SimpleNamespace(A=torch.rand(4, 4, w, w)), b)
    m.abort_batch()
    assert all(torch.equal(before[k], v) for k, v in m.sums.values.items())
    got = m.finish(g)["maps"].arrays
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_attention_figures_only_for_aligned_tokens(setup):
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from bertgeom.tokens.kmers import KmerSpec

    model, ids, labels, info = setup
    m, preds = ts.streamed(model, make(info, 0), ids, labels, np.zeros(len(ids), bool))
    out = m.finish(ts.genomes_of(labels, preds, True))
    assert "genome_maps" not in out["maps"].arrays
    raw = SimpleNamespace(classes=ts.CLASSES, spec=KmerSpec(mode="raw"), all_genomes=True)
    assert list(m.figures(out, raw)) == []
    # one heat map per class with genomes (class "a" alone here: drawing costs 2 s a figure)
    aligned = SimpleNamespace(classes=ts.CLASSES[:1], spec=KmerSpec(), all_genomes=True)
    figs = list(m.figures(out, aligned))
    assert [name for name, _ in figs] == ["attention_a"]
    for _, fig in figs:
        plt.close(fig)


@pytest.mark.parametrize(
    "bad", [{"keep": -1}, {"rollout_residual": 1.5}, {"rollout_residual": float("nan")}]
)
def test_options_are_validated(bad):
    with pytest.raises(ValueError):
        Maps.Options(**bad)


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_sums_by_genome_equal_the_masked_index_add(threads):
    """The CPU path (each genome's real rows added in place, heads split among threads) gives
    the sums of the masked batch added with index_add_, bitwise, for prefix masks, a mask with
    a hole and buckets shared by several genomes."""
    from bertgeom.geometry.measures.maps import _add_by_genome

    g = torch.Generator().manual_seed(0)
    batch, heads, p, width, n_buckets = 5, 3, 7, 9, 4
    held = [torch.rand(batch, heads, p, p, generator=g) for _ in range(2)]
    mask = torch.ones(batch, p, dtype=torch.bool)
    mask[1, 5:] = False
    mask[3, 2] = False  # not a prefix
    mask[4, 1:] = False
    buckets = torch.tensor([2, 0, 2, 3, 2])
    start = torch.rand(2, heads, n_buckets, width, width, generator=g)
    expect = start.clone()
    real = mask.float()[:, None, :, None]
    for layer, maps in enumerate(held):
        src = torch.nn.functional.pad(maps * real, (0, width - p, 0, width - p))
        expect[layer].index_add_(1, buckets, src.transpose(0, 1))
    got = start.clone()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _add_by_genome(got, held, mask, buckets.tolist())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, expect)
