"""The gates measure of the engine v2: merge of split streams, its kernels against the
definitions (banded-null segmentation, one-pass row statistics), options and Methods rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.errors import ConfigError
from bertgeom.geometry import head_measures as hm
from bertgeom.geometry import segmentation as seg
from bertgeom.geometry.gates import GateOptions, is_right_padded, layer_measures
from bertgeom.geometry.measures.base import Genomes, options_from
from bertgeom.geometry.measures.gates import Gates, GatesOptions
from bertgeom.geometry.spectra import row_entropy

CLASSES = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def model():
    from bertgeom.model.presets import bert_config, build_classifier

    return build_classifier(bert_config("tiny", 60, 40, CLASSES), seed=3).eval()


def _batches(n_batches=3, size=4, width=40, seed=0):
    """Right-padded token batches of mixed lengths (one left-padded batch last)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        ids = torch.randint(5, 60, (size, width), generator=g)
        lengths = torch.randint(width - 12, width + 1, (size,), generator=g)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        if b == n_batches - 1:
            mask = mask.flip(-1)  # left padding: the compaction path
        ids[:, 0] = 2
        ids = torch.where(mask, ids, 0)
        labels = torch.randint(0, len(CLASSES), (size,), generator=g)
        out.append(({"input_ids": ids, "attention_mask": mask.long()}, labels))
    return out


def _stream(model, batches, drop_special, options=None):
    from bertgeom.geometry.stream import Stream, run_info

    info = run_info(model, CLASSES, drop_special=drop_special)
    stream = Stream(model, [Gates(info, options)], info, to_class=np.arange(len(CLASSES)))
    preds = []
    with stream, torch.inference_mode():
        for inputs, labels in batches:
            preds.append(stream.batch(inputs, labels).numpy())
    return stream, np.concatenate(preds) if preds else np.zeros(0, int)


def _genomes(batches, preds, all_genomes):
    labels = np.concatenate([y.numpy() for _, y in batches])
    ids = np.array([f"g{i}" for i in range(len(labels))])
    included = np.ones(len(labels), bool) if all_genomes else preds == labels
    return Genomes(ids=ids, labels=labels, included=included, all_genomes=all_genomes)


@pytest.mark.parametrize("drop_special", [False, True])
def test_merged_parts_equal_one_stream(model, drop_special):
    batches = _batches()
    whole, preds = _stream(model, batches, drop_special)
    first, _ = _stream(model, batches[:1], drop_special)
    second, _ = _stream(model, batches[1:], drop_special)
    restored, _ = _stream(model, [], drop_special)  # empty: loads the first part's state
    restored.load_state_dict(first.state_dict())
    restored.merge(second)
    assert restored.n_done == whole.n_done == 12
    for all_genomes in (True, False):
        genomes = _genomes(batches, preds, all_genomes)
        want = whole.measures[0].finish(genomes)
        got = restored.measures[0].finish(genomes)
        assert set(want) == {"gates", "row_entropy"}
        for name in want:
            if want[name].empty:
                assert got[name].empty
                continue
            pd.testing.assert_frame_equal(got[name], want[name], rtol=1e-6, atol=1e-9)
        if all_genomes:  # every class has genomes: nothing NaN in the pooled scores
            pooled = want["gates"][want["gates"]["class"] == "all"]
            assert len(pooled) == 2 * 4 and pooled.drop(columns="label").notna().all().all()


def test_per_genome_row_entropy_is_exact_across_the_merge(model):
    batches = _batches()
    whole, _ = _stream(model, batches, False)
    first, _ = _stream(model, batches[:2], False)
    second, _ = _stream(model, batches[2:], False)
    with torch.inference_mode():  # live streams' sums are inference tensors
        first.merge(second)
    a, b = (s.measures[0].rows.get("row_entropy") for s in (whole, first))
    assert a.shape == (12, 2, 4)
    np.testing.assert_array_equal(a, b)


def _reference_cluster(a: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The cluster score through the banded null matrix and the (pos+1)² block tables."""
    pair = content[:, :, None] & content[:, None, :]
    x = a.clamp(min=0) * pair[:, None]
    s = (x * x.transpose(-1, -2)).sqrt()
    total = s.sum((-1, -2), keepdim=True)
    rows = x.sum(-1).gt(0).sum(-1)
    r = (total[..., 0, 0] / rows.clamp(min=1)).clamp(max=1.0)
    s = s / torch.where(total > 0, total, 1.0)
    t = seg.toeplitz_null(s, pair)
    gain, inside = seg.best_blocks(s - t, t)
    room = 1 - inside
    return torch.where(room > 1e-6, gain / room.clamp(min=1e-6), 0.0).clamp(0, 1) * r


@pytest.mark.parametrize("fused", [False, True])
def test_reciprocal_programme_equals_block_tables(fused, monkeypatch):
    """The segmentation without tables against ``best_blocks`` on S - T, in float64: random
    attention, blocks, lengths 0..n, content starting at 1 ([CLS]) or 0."""
    monkeypatch.setattr(seg, "_fused_max", lambda device: fused)
    g = torch.Generator().manual_seed(11)
    p = 24
    a = torch.softmax(torch.randn(6, 3, p, p, generator=g, dtype=torch.float64) * 3, -1)
    a[1, 0] = torch.block_diag(*[torch.ones(6, 6) / 6] * 4).double()
    a[2, 1] = 1.0 / p
    lengths = torch.tensor([24, 20, 13, 3, 2, 0])
    idx = torch.arange(p)
    for first in (0, 1):
        content = (idx >= first) & (idx < lengths[:, None])
        want = _reference_cluster(a, content)
        got = seg.cluster_score(a, content)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert float(want[1, 0]) > 0.5 and float(want[2, 1]) == pytest.approx(0.0, abs=1e-12)


def test_float32_segmentation_is_close_to_float64():
    g = torch.Generator().manual_seed(4)
    a = torch.softmax(torch.randn(4, 2, 50, 50, generator=g) * 0.05, -1)  # near uniform
    content = torch.ones(4, 50, dtype=torch.bool)
    content[:, [0, 49]] = False
    got = seg.cluster_score(a, content).double()
    want = _reference_cluster(a.double(), content)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)


def test_row_statistics_equal_the_separate_measures():
    g = torch.Generator().manual_seed(6)
    a = torch.softmax(torch.randn(3, 2, 30, 30, generator=g) * 4, -1)
    a[0, 0, 25:] = 0  # PAD rows
    a[1, 1, :, 20:] = 0  # rows that no longer reach the coverage
    for coverage in (0.9, 0.5, 1.0):
        s = hm.row_statistics(a, coverage)
        torch.testing.assert_close(s.entropy, hm.row_entropy(a), rtol=1e-6, atol=1e-6)
        # the CPU path sums in numpy (another summation order than torch's): float32 rounding
        torch.testing.assert_close(s.distance, hm.mean_distance(a), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(s.metastable_k, hm.metastable_k(a, coverage), rtol=0, atol=0)
    # the matrices split among threads: the same values as in one thread
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hm.row_statistics(a, 0.9)
        torch.set_num_threads(3)
        three = hm.row_statistics(a, 0.9)
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(
        (one.entropy, one.distance, one.metastable_k),
        (three.entropy, three.distance, three.metastable_k),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_padding_side_and_compaction_do_not_change_the_measures():
    g = torch.Generator().manual_seed(9)
    n, p = 17, 21
    core = torch.softmax(torch.randn(2, 2, n, n, generator=g) * 2, -1)
    right = torch.zeros(2, 2, p, p)
    right[..., :n, :n] = core
    left = torch.zeros(2, 2, p, p)
    left[..., p - n :, p - n :] = core
    m_right = (torch.arange(p) < n).expand(2, p)
    m_left = (torch.arange(p) >= p - n).expand(2, p)
    assert is_right_padded(m_right) and not is_right_padded(m_left)
    fast = layer_measures(right, m_right, right_padded=True)
    slow = layer_measures(right, m_right, right_padded=False)
    moved = layer_measures(left, m_left)
    for other in (slow, moved):
        torch.testing.assert_close(other.measures, fast.measures, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(other.row_entropy, fast.row_entropy, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            seg.cluster_from_parts(other.parts), seg.cluster_from_parts(fast.parts)
        )


def test_row_entropy_matches_the_spectra_definition():
    g = torch.Generator().manual_seed(2)
    a = torch.softmax(torch.randn(3, 2, 16, 16, generator=g), -1)
    mask = torch.arange(16)[None, :] < torch.tensor([[16], [9], [1]])
    for drop in (False, True):
        got = layer_measures(a, mask, GateOptions(drop_special=drop)).row_entropy
        want = row_entropy(a, mask, drop_special=drop).normalised
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"thresholds": "open=0.85,bogus=0.1"}, "bogus=0.1"),
        ({"thresholds": "open=high"}, "'high' is not a number"),
        ({"thresholds": "cluster=1.0"}, "cluster must be in"),
        ({"window": 0}, "window must be >= 1"),
        ({"coverage": 1.5}, r"coverage must be in \(0, 1\]"),
        ({"iterations": 0}, "iterations must be >= 1"),
    ],
)
def test_bad_options_are_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        options_from(GatesOptions, values, "config: [analyze.gates]")


def test_options_reach_the_kernel_and_the_labels():
    opts = options_from(
        GatesOptions, {"thresholds": "open=0.85, cluster=0.5", "window": "2"}, "flags"
    )
    assert opts.gate_thresholds().open == 0.85 and opts.gate_thresholds().closed == 0.5
    assert opts.gate_options(True) == GateOptions(window=2, drop_special=True)
    assert Gates.stream_options == {"window", "coverage", "iterations"}


def test_methods_rows_show_the_thresholds_the_run_used():
    rows = {name: (value, source) for name, value, source in Gates.parameters(
        {"window": 3, "coverage": 0.8, "thresholds": "open=0.85", "iterations": 8}
    )}  # fmt: skip
    assert rows["open threshold"] == (0.85, "analyze config")
    assert rows["cluster threshold"] == (0.4, "default")
    assert rows["metastable coverage c"] == (0.8, "analyze config")
    assert rows["contextual window w"] == (3, "default")
    assert "gate thresholds" not in rows
