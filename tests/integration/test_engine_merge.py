"""The engine's associative merge: merge(stream(x), stream(y)) == stream(x ++ y).

For every registered measure, on a tiny model: the stream over all genomes equals the merge of
the streams over 2-4 consecutive parts cut on batch boundaries (per-genome values and counts
exactly, float sums to 1e-6); the merge is associative and the empty state is its identity; and
``analyze --shard K/N`` over 3 shards then ``--merge`` writes the same tables as one run.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertgeom.cli import main
from bertgeom.config import AnalyzeConfig
from bertgeom.geometry.measures import names
from bertgeom.geometry.measures.base import Arrays
from bertgeom.pipeline import analyze

#: every default measure, with options that keep the test small
OPTIONS = {"spectra": {"genomes": 6}, "embeddings": {"maps": "pca"}, "maps": {"keep": 1}}


def _config(batch: int, **kw) -> AnalyzeConfig:
    measures = {k: v for k, v in OPTIONS.items() if k in names()}
    return AnalyzeConfig(split="all", max_genomes=14, batch_size=batch, measures=measures, **kw)


@functools.cache
def _plan(model, prepared, batch: int):
    return analyze.plan(model, prepared, _config(batch))


def _stream(p, lo: int, hi: int):
    s = analyze.new_stream(p)
    state = analyze.stream_genomes(p, s, lo, hi, progress=False)
    return s, np.concatenate(state.preds) if state.preds else np.zeros(0, np.int64)


def _tables(p, stream, preds) -> dict[str, object]:
    from bertgeom.geometry.measures.base import Genomes

    correct = p.to_class[preds] == p.y
    genomes = Genomes(p.df.id.to_numpy(), p.y, correct, all_genomes=False, seed=1)
    out: dict[str, object] = {}
    for m in stream.measures:
        out |= m.finish(genomes)
    for m in stream.measures:
        out |= m.derive(out)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, Arrays):
            assert x.arrays.keys() == y.arrays.keys(), name
            for k in x.arrays:
                u, v = np.asarray(x.arrays[k]), np.asarray(y.arrays[k])
                if u.dtype.kind in "fc":
                    np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6, err_msg=f"{name}.{k}")
                else:
                    assert (u == v).all(), f"{name}.{k}"
        else:
            pd.testing.assert_frame_equal(x, y, rtol=1e-6, atol=1e-9, check_dtype=False)


def _cuts(draw, n_batches: int, parts: int) -> list[int]:
    inner = sorted(draw(st.sets(st.integers(1, n_batches - 1), min_size=parts - 1,
                                max_size=parts - 1)))  # fmt: skip
    return [0, *inner, n_batches]


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), batch=st.integers(2, 5), parts=st.integers(2, 4))
def test_merge_of_parts_equals_one_stream(data, batch, parts, tiny_model, ci_prepared):
    p = _plan(tiny_model, ci_prepared, batch)
    n_batches = -(-p.n // batch)
    parts = min(parts, n_batches)
    cuts = _cuts(data.draw, n_batches, parts)
    whole, preds = _stream(p, 0, p.n)
    merged = analyze.new_stream(p)
    merged_preds = []
    for a, b in itertools.pairwise(cuts):
        s, pr = _stream(p, min(a * batch, p.n), min(b * batch, p.n))
        merged.merge(s)
        merged_preds.append(pr)
    assert merged.n_done == whole.n_done == p.n
    assert (np.concatenate(merged_preds) == preds).all()
    _assert_same(_tables(p, merged, preds), _tables(p, whole, preds))


def test_merge_is_associative_and_the_empty_state_is_its_identity(tiny_model, ci_prepared):
    p = _plan(tiny_model, ci_prepared, 4)
    a, pa = _stream(p, 0, 4)
    b, pb = _stream(p, 4, 8)
    c, pc = _stream(p, 8, p.n)
    preds = np.concatenate([pa, pb, pc])

    def copy(s):
        out = analyze.new_stream(p)
        out.load_state_dict(s.state_dict())
        return out

    left = copy(a)
    left.merge(copy(b))
    left.merge(copy(c))
    bc = copy(b)
    bc.merge(copy(c))
    right = copy(a)
    right.merge(bc)
    _assert_same(_tables(p, left, preds), _tables(p, right, preds))
    empty = analyze.new_stream(p)
    empty.merge(copy(left))
    _assert_same(_tables(p, empty, preds), _tables(p, left, preds))
    with_empty = copy(left)
    with_empty.merge(analyze.new_stream(p))
    _assert_same(_tables(p, with_empty, preds), _tables(p, left, preds))


def test_state_survives_a_round_trip_through_torch_save(tiny_model, ci_prepared, tmp_path):
    p = _plan(tiny_model, ci_prepared, 4)
    s, preds = _stream(p, 0, p.n)
    torch.save(s.state_dict(), tmp_path / "s.pt")
    back = analyze.new_stream(p)
    back.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    _assert_same(_tables(p, back, preds), _tables(p, s, preds))


def _cli_tables(out) -> dict[str, pd.DataFrame]:
    return {f.stem: pd.read_parquet(f) for f in sorted(out.glob("*.parquet"))}


def test_three_shards_merged_equal_one_run(tiny_model, ci_prepared, tmp_path):
    common = [str(tiny_model), str(ci_prepared), "--split", "all", "--max-genomes", "14",
              "--batch-size", "3", "--quiet"]  # fmt: skip
    for measure, opts in OPTIONS.items():
        if measure in names():
            for k, v in opts.items():
                common += [f"--{measure}-{k}", str(v)]
    assert main(["analyze", *common, "--out", str(tmp_path / "one")]) == 0
    states = []
    for k in (1, 2, 3):
        f = tmp_path / f"part{k}.pt"
        assert main(["analyze", *common, "--shard", f"{k}/3", "--state-out", str(f)]) == 0
        states.append(str(f))
    merged = tmp_path / "merged"
    assert main(["analyze", *common, "--merge", *reversed(states), "--out", str(merged)]) == 0
    one, two = _cli_tables(tmp_path / "one"), _cli_tables(merged)
    assert one.keys() == two.keys() and "genomes" in one
    for name in one:
        pd.testing.assert_frame_equal(one[name], two[name], rtol=1e-6, atol=1e-9, obj=name)
    # a missing shard is an error that says so
    rc = main(["analyze", *common, "--merge", *states[:2], "--out", str(tmp_path / "bad")])
    assert rc == 2


def test_shard_ranges_are_whole_batches_covering_everything():
    for n in (0, 1, 7, 48, 100):
        for batch in (1, 3, 16):
            for parts in (1, 2, 3, 5):
                ranges = [analyze.shard_range(n, batch, k, parts) for k in range(parts)]
                assert ranges[0][0] == 0 and ranges[-1][1] == n
                for (_, hi), (lo, _) in itertools.pairwise(ranges):
                    assert hi == lo
                assert all(lo % batch == 0 for lo, _ in ranges)


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/0", "2"])
def test_bad_shard_spec_is_one_line_error(bad, tiny_model, ci_prepared, tmp_path, capsys):
    rc = main(["analyze", str(tiny_model), str(ci_prepared), "--only", "cone", "--shard", bad,
               "--state-out", str(tmp_path / "s.pt")])  # fmt: skip
    assert rc == 2
    assert capsys.readouterr().err.startswith("error: --shard")
