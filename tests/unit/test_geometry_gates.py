"""Gate scores and labels on synthetic attention built to be each pattern (science.md §4)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from bertgeom.errors import ConfigError
from bertgeom.geometry import head_measures as hm
from bertgeom.geometry.gates import (
    GATES,
    HEAD_STATS,
    MEASURES,
    GateOptions,
    GateThresholds,
    gate_scores,
    gate_stats,
    genome_measures,
    head_scores,
    label_heads,
)
from bertgeom.geometry.segmentation import cluster_score


def _noisy(a: torch.Tensor, g: torch.Generator, eps: float) -> torch.Tensor:
    r = torch.rand(a.shape, generator=g, dtype=a.dtype)
    return (1 - eps) * a + eps * r / r.sum(-1, keepdim=True)


def _matrix(kind: str, n: int, g: torch.Generator, shared: torch.Tensor) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n)
    if kind == "closed":
        a[:, [0, n - 1]] = 0.5
    elif kind == "open":
        a[:] = 1.0
    elif kind in ("backward", "forward"):
        for w in (1, 2, 3):
            j = idx - w if kind == "backward" else idx + w
            ok = (j >= 0) & (j < n)
            a[idx[ok], j[ok]] = 1.0
        a[a.sum(-1) == 0, 0 if kind == "backward" else n - 1] = 1.0
    elif kind == "directional":  # every row reads the same keys, in every genome
        a[:, shared] = 1.0
    elif kind == "instance":  # every row reads a few keys of its own genome
        a[:, torch.randperm(n - 2, generator=g)[:3] + 1] = 1.0
    elif kind == "cluster":  # contiguous blocks of 10-20 tokens read each other
        i = 1
        while i < n - 1:
            j = min(i + int(torch.randint(10, 21, (1,), generator=g)), n - 1)
            a[i:j, i:j] = 1.0
            i = j
        a[[0, n - 1], :] = 1.0
    return a / a.sum(-1, keepdim=True)


def pattern(kind, genomes=6, n=60, pad=5, eps=0.15, seed=0):
    """(genome, 1, pos, pos) attention of ``kind`` with n real tokens then ``pad`` PAD."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randperm(n - 2, generator=g)[:4] + 1
    out = torch.zeros(genomes, 1, n + pad, n + pad, dtype=torch.float64)
    for b in range(genomes):
        out[b, 0, :n, :n] = _noisy(_matrix(kind, n, g, shared), g, eps)
    mask = torch.zeros(genomes, n + pad, dtype=torch.bool)
    mask[:, :n] = True
    return out, mask


@pytest.mark.parametrize("kind", GATES)
def test_each_synthetic_pattern_gets_its_label(kind):
    attn, mask = pattern(kind)
    scores = gate_scores(gate_stats(attn, mask))
    assert scores.pooled_labels().tolist() == [kind]
    assert scores.labels().tolist() == [[kind]]
    assert ((scores.pooled >= 0) & (scores.pooled <= 1)).all()


def test_uniform_attention_is_open_with_exact_statistics():
    n = 20
    attn = torch.full((2, 3, n, n), 1.0 / n, dtype=torch.float64)
    scores = gate_scores(gate_stats(attn))
    assert (scores.pooled_labels() == "open").all()
    values = dict(zip(GATES, scores.pooled[:, 0].tolist(), strict=True))
    assert values["open"] == pytest.approx(1.0)
    assert values["closed"] == pytest.approx(2 / n)
    assert values["directional"] == pytest.approx(0.0, abs=1e-9)
    assert values["cluster"] == pytest.approx(0.0, abs=1e-9)
    stats = dict(zip(HEAD_STATS, scores.pooled_head_stats[:, 0].tolist(), strict=True))
    assert stats["cls"] == pytest.approx(1 / n)
    assert stats["metastable_k"] == pytest.approx(math.ceil(0.9 * n))
    dist = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).mean()
    assert stats["distance"] == pytest.approx(dist)


def test_thresholds_are_configurable_and_validated():
    attn, mask = pattern("backward")
    scores = gate_scores(gate_stats(attn, mask))
    assert scores.pooled_labels(GateThresholds(backward=0.95)).tolist() == ["mixed"]
    assert scores.pooled_labels(GateThresholds(backward=0.95, open=0.3)).tolist() == ["open"]
    with pytest.raises(ConfigError, match="open"):
        GateThresholds(open=1.0)
    with pytest.raises(ConfigError, match="window"):
        GateOptions(window=0)


def test_label_rule_uses_relative_excess():
    values = torch.zeros(len(GATES), 2)
    values[GATES.index("open"), :] = 0.95  # excess 0.5 of the room above 0.9
    values[GATES.index("closed"), 0] = 0.7  # excess 0.4 of the room above 0.5
    values[GATES.index("closed"), 1] = 0.9  # excess 0.8
    assert label_heads(values).tolist() == ["open", "closed"]
    values[:, 1] = torch.nan
    assert label_heads(values).tolist() == ["open", "empty"]


def test_contextual_window_is_configurable():
    attn, mask = pattern("backward", eps=0.0)
    one = head_scores(attn, mask, GateOptions(window=1))[GATES.index("backward"), 0]
    three = head_scores(attn, mask, GateOptions(window=3))[GATES.index("backward"), 0]
    assert float(three) == pytest.approx(59 / 60, abs=1e-9)  # [CLS] reads itself
    assert 0.3 < float(one) < 0.4  # a third of the mass is on i-1 (rows 1, 2 read fewer keys)


def test_padding_layout_does_not_matter():
    attn, mask = pattern("cluster", genomes=3, pad=0)
    n = attn.shape[-1]
    measures = genome_measures(attn, mask)[0]
    for pad in (7,):
        right = torch.zeros(3, 1, n + pad, n + pad, dtype=attn.dtype)
        right[..., :n, :n] = attn
        left = torch.zeros_like(right)
        left[..., pad:, pad:] = attn
        m_right = torch.arange(n + pad) < n
        m_left = torch.arange(n + pad) >= pad
        for big, m in ((right, m_right), (left, m_left)):
            got = genome_measures(big, m.expand(3, -1))[0]
            assert torch.allclose(got, measures, atol=1e-9)


def test_batched_equals_one_by_one_with_different_lengths():
    g = torch.Generator().manual_seed(7)
    lengths = [12, 30, 21]
    p = max(lengths)
    attn = torch.zeros(3, 2, p, p, dtype=torch.float64)
    mask = torch.zeros(3, p, dtype=torch.bool)
    for b, n in enumerate(lengths):
        attn[b, :, :n, :n] = (
            torch.randn(2, n, n, generator=g, dtype=torch.float64).mul(3).softmax(-1)
        )
        mask[b, :n] = True
    opts = GateOptions(drop_special=True)
    together = genome_measures(attn, mask, opts)[0]
    for b, n in enumerate(lengths):
        alone = genome_measures(attn[b : b + 1, :, :n, :n], None, opts)[0]
        assert torch.allclose(together[b : b + 1], alone, atol=1e-9)


def test_streamed_combine_equals_all_at_once():
    a1, m1 = pattern("instance", genomes=4, n=40, seed=1)
    a2, m2 = pattern("directional", genomes=3, n=50, seed=2)
    labels1, labels2 = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0])
    p = a2.shape[-1]
    a1p = torch.nn.functional.pad(a1, (0, p - a1.shape[-1], 0, p - a1.shape[-1]))
    m1p = torch.nn.functional.pad(m1, (0, p - m1.shape[-1]))
    whole = gate_stats(torch.cat([a1p, a2]), torch.cat([m1p, m2]), torch.cat([labels1, labels2]), 2)
    halves = gate_stats(a1, m1, labels1, 2).combine(gate_stats(a2, m2, labels2, 2))
    s_whole, s_halves = gate_scores(whole), gate_scores(halves)
    assert torch.allclose(s_whole.values, s_halves.values, atol=1e-12)
    assert torch.allclose(s_whole.pooled, s_halves.pooled, atol=1e-12)
    assert s_whole.n_genomes.tolist() == [3.0, 4.0]
    assert whole.sums.shape == (2, len(MEASURES), 1)


def test_class_specific_keys_are_directional_within_and_instance_across_classes():
    a0, m0 = pattern("directional", genomes=5, seed=3)
    a1, m1 = pattern("directional", genomes=5, seed=4)  # other shared keys
    labels = torch.tensor([0] * 5 + [1] * 5)
    scores = gate_scores(gate_stats(torch.cat([a0, a1]), torch.cat([m0, m1]), labels, 3))
    assert scores.labels()[:2].tolist() == [["directional"], ["directional"]]
    assert scores.labels()[2].tolist() == ["empty"]
    assert scores.pooled_variability[0] > scores.variability[0, 0] + 0.1


def test_metastable_k_and_top_singular_share():
    row = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert hm.metastable_k(row).tolist() == [3.0]
    assert hm.metastable_k(row, coverage=0.5).tolist() == [1.0]
    g = torch.Generator().manual_seed(8)
    m = torch.rand(4, 15, 15, generator=g, dtype=torch.float64) ** 4
    s = torch.linalg.svdvals(m)
    exact = s[:, 0] ** 2 / (s**2).sum(-1)
    assert torch.allclose(hm.top_singular_share(m, iterations=200), exact, atol=1e-8)
    assert torch.allclose(hm.top_singular_share(m), exact, atol=1e-8)  # 8 Lanczos steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_metastable_k_equals_the_definition(dtype):
    """Peaked, diffuse, tied (uniform) and PAD rows: k from torch's own sort."""
    g = torch.Generator().manual_seed(2)
    n = 50
    logits = torch.randn(6, 3, n, n, generator=g) * torch.rand(6, 3, n, 1, generator=g) * 12
    a = torch.softmax(logits, -1)
    a[0, 0, :5] = 1.0 / n  # ties across the whole row
    a[1, 1, 7:] = 0.0  # PAD query rows
    a[2, 2, :, 30:] = 0.0  # PAD keys (rows no longer sum to 1: coverage may be out of reach)
    a = a.to(dtype)
    for coverage in (0.5, 0.9, 1.0):
        ref = a.float() if dtype == torch.bfloat16 else a  # torch sorts bf16 as it is
        cum = ref.sort(-1, descending=True).values.cumsum(-1)
        k = torch.minimum((cum < coverage - 1e-6).sum(-1) + 1, (a > 0).sum(-1)).to(dtype)
        got = hm.metastable_k(a, coverage)
        assert got.shape == a.shape[:-1] and got.dtype == dtype
        torch.testing.assert_close(got, k, atol=0, rtol=0)
    assert hm.metastable_k(a[:0]).shape == (0, 3, n)


def test_top_singular_share_known_answers_and_masks():
    n = 12
    eye = torch.eye(n, dtype=torch.float64)[None]
    assert float(hm.top_singular_share(eye)) == pytest.approx(1 / n, abs=1e-12)
    rank_one = torch.outer(torch.rand(n, dtype=torch.float64), torch.rand(n, dtype=torch.float64))
    assert float(hm.top_singular_share(rank_one[None])) == pytest.approx(1.0, abs=1e-12)
    assert float(hm.top_singular_share(torch.zeros(1, n, n))) == 0.0
    g = torch.Generator().manual_seed(2)
    m = torch.rand(3, 2, n, n, generator=g, dtype=torch.float64)
    rows = torch.rand(3, n, generator=g) > 0.3
    cols = torch.rand(3, n, generator=g) > 0.3
    masked = m * rows[:, None, :, None] * cols[:, None, None, :]
    s = torch.linalg.svdvals(masked) ** 2
    got = hm.top_singular_share(m, n, rows[:, None], cols[:, None])
    assert torch.allclose(got, s[..., 0] / s.sum(-1), atol=1e-10)


def _segmentations(n: int):
    """Every split of range(n) into contiguous blocks, as lists of (start, end)."""
    for cuts in itertools.product([False, True], repeat=max(n - 1, 0)):
        edges = [0, *[i + 1 for i, c in enumerate(cuts) if c], n]
        yield list(itertools.pairwise(edges))


@pytest.mark.parametrize("fused", [False, True])
def test_best_blocks_equals_exhaustive_search(fused, monkeypatch):
    """Gain and the t-mass of the maximising segmentation against all 2^(n-1) segmentations,
    through both step kernels (argmax + gather, and CUDA's values-and-indices max into views)."""
    from bertgeom.geometry import segmentation as seg

    monkeypatch.setattr(seg, "_fused_max", lambda device: fused)
    g = torch.Generator().manual_seed(5)
    for n in range(1, 8):
        d = torch.randn(3, 2, n, n, generator=g, dtype=torch.float64)
        t = torch.rand(3, 2, n, n, generator=g, dtype=torch.float64)
        gain, inside = seg.best_blocks(d, t)
        for a, h in itertools.product(range(3), range(2)):
            scored = [
                (sum(float(d[a, h, i:j, i:j].sum()) for i, j in blocks), blocks)
                for blocks in _segmentations(n)
            ]
            best, blocks = max(scored, key=lambda x: x[0])
            assert float(gain[a, h]) == pytest.approx(best, abs=1e-12)
            want = sum(float(t[a, h, i:j, i:j].sum()) for i, j in blocks)
            assert float(inside[a, h]) == pytest.approx(want, abs=1e-12)


def test_chain_sum_follows_parents_to_the_root():
    from bertgeom.geometry.segmentation import chain_sum

    parent = torch.tensor([[0, 0, 1, 1, 3, 4, 0, 6]])  # chains 7->6->0, 5->4->3->1->0
    table = torch.arange(64, dtype=torch.float64).view(1, 8, 8)
    out = chain_sum(table, parent)
    want = [0.0]
    for k in range(1, 8):
        total, j = 0.0, k
        while j:
            total, j = total + float(table[0, j, parent[0, j]]), int(parent[0, j])
        want.append(total)
    assert out[0].tolist() == want


def test_cluster_score_is_one_for_perfect_blocks_and_zero_for_bands():
    n = 40
    blocks = torch.block_diag(*[torch.ones(10, 10) / 10] * 4).double()[None, None]
    content = torch.ones(1, n, dtype=torch.bool)
    assert float(cluster_score(blocks, content)) == pytest.approx(1.0, abs=1e-9)
    band = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() <= 2
    band = (band / band.sum(-1, keepdim=True)).double()[None, None]
    assert float(cluster_score(band, content)) < 0.05


def test_deferred_cluster_over_several_layers_equals_gate_stats():
    from bertgeom.geometry.gates import add_cluster, gate_stats_and_parts
    from bertgeom.geometry.segmentation import ClusterParts, cluster_from_parts

    g = torch.Generator().manual_seed(3)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 15:] = False  # padded genome: compaction must line up across layers
    labels = torch.tensor([0, 1, 0])
    layers = [torch.softmax(torch.randn(3, 2, 20, 20, generator=g) * 3, -1) for _ in range(2)]
    layers[1][:, 1] = 0
    layers[1][:, 1, :, 2:8] = 1 / 6  # a block-ish head
    pairs = [gate_stats_and_parts(a, mask, labels, 2) for a in layers]
    scores = cluster_from_parts(ClusterParts.cat([p for _, p in pairs])).split([2, 2], dim=1)
    for a, (stats, _), sc in zip(layers, pairs, scores, strict=True):
        direct = gate_stats(a, mask, labels, 2)
        merged = add_cluster(stats, sc, labels, 2)
        assert torch.allclose(merged.sums, direct.sums, atol=1e-12)
        assert bool((direct.sums[:, MEASURES.index("cluster")] != 0).any())
