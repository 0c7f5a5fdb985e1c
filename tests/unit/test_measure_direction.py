"""The direction measure: per-genome asymmetry and score antisymmetry from the forward pass's
own Q and K (Gram-matrix form equal to the dense one), [CLS]/[SEP] left out as queries and
keys with drop_special, merge of consecutive parts, tables from the weights."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.geometry.capture import Capture
from bertgeom.geometry.direction import attention_asymmetry, score_directionality
from bertgeom.geometry.masking import content_mask
from bertgeom.geometry.measures.base import BatchInfo, Genomes
from bertgeom.geometry.measures.direction import Direction
from bertgeom.geometry.stream import LayerView, run_info

N = 10


def _tiny_bert():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        attn_implementation="eager",
    )
    return transformers.BertModel(cfg).eval()


@pytest.fixture(scope="module")
def captured():
    model = _tiny_bert()
    g = torch.Generator().manual_seed(3)
    pos = 12
    ids = torch.randint(5, 50, (N, pos), generator=g)
    mask = torch.ones_like(ids)
    for i in range(N):
        mask[i, pos - (i % 3) :] = 0
    ids[mask == 0] = 0
    seen: dict[int, object] = {}
    with Capture(model, seen.__setitem__, frozenset({"A", "QK"})), torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    return model, mask.bool(), [seen[i] for i in sorted(seen)]


def _slice(t, rows):
    return type(t)(**{k: None if v is None else v[rows] for k, v in vars(t).items()})


def stream(captured, lo, hi, cuts=(), drop_special=False):
    model, mask, layers = captured
    info = run_info(model, ["a", "b"], drop_special=drop_special)
    m = Direction(info)
    edges = [lo, *cuts, hi]
    with torch.inference_mode():
        for a, b in itertools.pairwise(edges):
            labels = torch.arange(a, b) % 2
            batch = BatchInfo(mask=mask[a:b], labels=labels,
                              keep_maps=torch.zeros(b - a, dtype=torch.bool), start=a)  # fmt: skip
            m.begin_batch(batch)
            for i, t in enumerate(layers):
                m.update(i, LayerView(i, _slice(t, slice(a, b)), batch, info), batch)
            batch.buckets = labels
            m.end_batch(batch)
    return m


def _dense_score(q, k, keep):
    w = keep[:, None, :, None].double()
    m = (q.double() * w) @ (k.double() * w).transpose(-1, -2)
    return torch.linalg.matrix_norm(m - m.transpose(-1, -2)) / 2 / torch.linalg.matrix_norm(m)


def _dense_asym(a, keep):
    w = (keep[:, None, :, None] & keep[:, None, None, :]).double()
    a = a.double() * w
    d, s = a - a.transpose(-1, -2), a + a.transpose(-1, -2)
    return torch.linalg.matrix_norm(d) / torch.linalg.matrix_norm(s)


@pytest.mark.parametrize("drop_special", [False, True])
def test_per_genome_values_are_the_dense_definitions_on_the_models_own_q_k(captured, drop_special):
    model, mask, layers = captured
    m = stream(captured, 0, N, cuts=(4,), drop_special=drop_special)
    keep = content_mask(mask, drop_special)
    score, asym = m.rows.get("score_antisymmetry"), m.rows.get("attention_asymmetry")
    assert score.shape == asym.shape == (N, 2, 2)
    for layer, t in enumerate(layers):
        sa = model.encoder.layer[layer].attention.self
        with torch.inference_mode():  # the old engine's recomputation from X
            q = sa.query(t.X).view(N, -1, 2, 8).transpose(1, 2)
            k = sa.key(t.X).view(N, -1, 2, 8).transpose(1, 2)
        assert torch.equal(q, t.Q) and torch.equal(k, t.K)
        np.testing.assert_allclose(score[:, layer], _dense_score(q, k, keep), rtol=1e-6)
        np.testing.assert_allclose(asym[:, layer], _dense_asym(t.A, keep), rtol=1e-6)


def test_drop_special_leaves_cls_and_sep_out_as_queries_and_keys():
    """With drop_special the measures are those of the content block alone (rows and
    columns), not of the content rows against every key."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 2, 9, 9, generator=g).softmax(-1)
    q, k = torch.randn(3, 2, 9, 4, generator=g), torch.randn(3, 2, 9, 4, generator=g)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 7:] = False
    for i, n in enumerate((9, 7, 9)):  # real lengths; content = 1 .. n-2
        inner = slice(1, n - 1)
        block = a[i : i + 1, :, inner, inner]
        got = attention_asymmetry(a[i : i + 1], mask[i : i + 1], drop_special=True)
        torch.testing.assert_close(got, attention_asymmetry(block).double())
        got = score_directionality(q[i : i + 1], k[i : i + 1], mask[i : i + 1], drop_special=True)
        want = score_directionality(q[i : i + 1, :, inner], k[i : i + 1, :, inner])
        torch.testing.assert_close(got, want)


def test_symmetric_and_one_way_attention_give_zero_and_one():
    sym = torch.rand(1, 1, 6, 6)
    sym = sym + sym.transpose(-1, -2)
    assert float(attention_asymmetry(sym)) == pytest.approx(0.0, abs=1e-7)
    lower = torch.tril(torch.rand(6, 6), diagonal=-1)[None, None]
    assert float(attention_asymmetry(lower)) == pytest.approx(1.0)
    q = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    assert torch.allclose(score_directionality(q, q), torch.zeros(2, 3).double(), atol=1e-7)


def test_merge_of_parts_equals_one_stream(captured):
    genomes = Genomes(np.arange(N).astype(str), np.arange(N) % 2, np.arange(N) % 3 > 0, False)
    whole = stream(captured, 0, N, cuts=(3, 6))
    parts = [stream(captured, 0, 3), stream(captured, 3, 6), stream(captured, 6, N)]
    left = parts[0]
    left.merge(parts[1])
    left.merge(parts[2])
    for name in ("attention_asymmetry", "score_antisymmetry"):
        np.testing.assert_array_equal(left.rows.get(name), whole.rows.get(name))
    a, b = left.finish(genomes), whole.finish(genomes)
    for name in ("direction", "head_overlap"):
        pd.testing.assert_frame_equal(a[name], b[name])
    d = b["direction"]
    assert len(d) == 4 and d[["data_antisymmetry", "attention_asymmetry"]].notna().all().all()
    assert ((d["index"] >= 0) & (d["index"] <= 1)).all()
    overlap = b["head_overlap"]
    diag = overlap[overlap["head"] == overlap["other"]]
    np.testing.assert_allclose(diag[["query_overlap", "key_overlap"]], 1.0)
    none = left.finish(Genomes(genomes.ids, genomes.labels, np.zeros(N, bool), False))
    assert none["direction"]["data_antisymmetry"].isna().all()  # no included genome: NaN
