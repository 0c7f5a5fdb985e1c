"""The accumulator's measures beyond the stream itself: precision under autocast, the spectra
subset, kept maps, separability over stream points, output histograms, rollout, head overlap,
and the analyze options that reach them."""

from __future__ import annotations

import itertools
import json
import types

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import ConfigError
from bertgeom.geometry.accumulate import (
    CONE_POINTS,
    AccumulatorOptions,
    GeometryAccumulator,
)
from bertgeom.geometry.capture import Capture, LayerTensors
from bertgeom.geometry.flow import STREAM_POINTS
from bertgeom.geometry.gates import GATES, GateThresholds, label_heads
from bertgeom.geometry.tables import measure_tables, separability_table
from bertgeom.pipeline import analyze
from bertgeom.pipeline.analyze import stratified_counts


def tiny_bert(layers: int = 2):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        attn_implementation="eager",
    )
    return transformers.BertModel(cfg).eval()


def padded_batch(n: int = 4, pos: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (n, pos), generator=g)
    mask = torch.ones_like(ids)
    for i in range(1, n):
        mask[i, pos - 2 * i :] = 0
    ids[mask == 0] = 0
    return ids, mask


def captured(model, ids, mask) -> list[LayerTensors]:
    seen: dict[int, LayerTensors] = {}
    with Capture(model, seen.__setitem__), torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    return [seen[i] for i in sorted(seen)]


def feed(acc, layers, mask, labels, buckets=None, keep=None):
    with torch.inference_mode():  # as in analyze (the tensors were captured in it)
        acc.begin_batch(mask.bool(), labels, keep)
        for i, t in enumerate(layers):
            acc.on_layer(i, t)
        acc.end_batch(labels if buckets is None else buckets)


FAMILIES = ("cone", "gates", "direction", "spectra", "embeddings", "maps")


def _tables(acc, labels):
    keep = np.ones(len(labels), bool)
    ids = [f"g{i}" for i in range(len(labels))]
    return measure_tables(acc, ids, labels.numpy(), keep, ("a", "b"), True, seed=0)


def _assert_tables_close(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        num = x.select_dtypes("number").columns
        assert x.drop(columns=num).equals(y.drop(columns=num)), name
        assert np.allclose(
            x[num].to_numpy(float), y[num].to_numpy(float), atol=atol, equal_nan=True
        ), name


def test_measures_run_in_float32_under_autocast_and_on_low_precision_inputs():
    """The same captured tensors give the same tables inside a bf16 autocast region (as the
    GPU forward pass runs) as outside; bf16 tensors are measured in float32, exactly as their
    float32 copies."""
    model = tiny_bert()
    ids, mask = padded_batch()
    labels = torch.tensor([0, 1, 0, 1])
    layers = captured(model, ids, mask)
    opts = AccumulatorOptions(families=FAMILIES, spectra_genomes=4)

    plain = GeometryAccumulator(model, 2, None, opts)
    feed(plain, layers, mask, labels)
    auto = GeometryAccumulator(model, 2, None, opts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feed(auto, layers, mask, labels)
    _assert_tables_close(_tables(plain, labels), _tables(auto, labels), atol=1e-6)

    def bf16(t: LayerTensors, cast) -> LayerTensors:
        return LayerTensors(**{k: cast(v) for k, v in vars(t).items()})

    low = GeometryAccumulator(model, 2, None, opts)
    feed(low, [bf16(t, lambda v: v.bfloat16()) for t in layers], mask, labels)
    rounded = GeometryAccumulator(model, 2, None, opts)
    feed(rounded, [bf16(t, lambda v: v.bfloat16().float()) for t in layers], mask, labels)
    assert low.per_genome["cone"][0].dtype == np.float32
    _assert_tables_close(_tables(low, labels), _tables(rounded, labels), atol=1e-6)


def test_missing_attention_probabilities_are_an_error_for_attention_families():
    model = tiny_bert()
    ids, mask = padded_batch()
    layers = [LayerTensors(**{**vars(t), "A": None}) for t in captured(model, ids, mask)]
    labels = torch.zeros(4, dtype=torch.long)
    acc = GeometryAccumulator(model, 1, None, AccumulatorOptions(families=("gates",)))
    with pytest.raises(RuntimeError, match=r"no attention probabilities.*gates.*eager"):
        feed(acc, layers, mask, labels)
    cone_only = GeometryAccumulator(model, 1, None, AccumulatorOptions(families=("cone",)))
    feed(cone_only, layers, mask, labels)  # the cone index of X .. Y needs no attention
    assert np.isfinite(cone_only.per_genome["cone"][0]).all()


def _spectra_run(model, batch_size, buckets, quota_total=4, n_classes=2):
    """Stream ``buckets`` (class, or n_classes + class if misclassified) in batches."""
    opts = AccumulatorOptions(families=("spectra",), spectra_genomes=quota_total)
    acc = GeometryAccumulator(model, n_classes, None, opts)
    ids, mask = padded_batch(len(buckets))
    buckets = torch.tensor(buckets)
    for a in range(0, len(buckets), batch_size):
        rows = slice(a, a + batch_size)
        layers = captured(model, ids[rows], mask[rows])
        feed(acc, layers, mask[rows], buckets[rows] % n_classes, buckets=buckets[rows])
    return acc


def test_spectra_subset_is_the_first_correct_genomes_whatever_the_batch_size():
    """Per class the first quota (2) correctly classified genomes in stream order, plus the
    misclassified ones met before those: the same subset, values included, in batches of 1, 3
    and 8."""
    model = tiny_bert()
    buckets = [2, 0, 1, 0, 0, 3, 1, 1]  # class 0: wrong, right, right, right; class 1: ...
    runs = [_spectra_run(model, bs, buckets) for bs in (1, 3, 8)]
    for acc in runs:
        assert np.concatenate(acc.spectra_buckets).tolist() == [2, 0, 1, 0, 3, 1]
        assert acc.spectra_correct.tolist() == [2, 2] and acc.spectra_wrong.tolist() == [1, 1]
    for acc in runs[1:]:
        for point, values in acc.spectra.items():
            want = np.concatenate(runs[0].spectra[point])
            assert np.allclose(np.concatenate(values), want, equal_nan=True)
    labels = np.array(buckets) % 2
    keep = np.ones(8, bool)
    correct = measure_tables(runs[0], [], labels, keep, ("a", "b"), False, 0)["spectra"]
    every = measure_tables(runs[0], [], labels, keep, ("a", "b"), True, 0)["spectra"]
    assert correct.groupby("class").n.first().to_dict() == {"a": 2, "b": 2}
    assert every.groupby("class").n.first().to_dict() == {"a": 3, "b": 3}
    assert set(correct.point) == {"A", "Z", *CONE_POINTS}
    assert "histogram_entropy_compat" not in correct.columns  # compat off by default


def test_a_class_never_right_stops_offering_spectra_candidates():
    model = tiny_bert()
    acc = _spectra_run(model, 4, [2] * 12, quota_total=2, n_classes=2)  # quota 1 per class
    assert acc.spectra_seen.tolist() == [GeometryAccumulator.SPECTRA_LOOK, 0]
    assert np.concatenate(acc.spectra_buckets).tolist() == [2]  # one misclassified kept


def test_a_batch_that_fails_while_being_added_is_not_checkpointed():
    model = tiny_bert()
    opts = AccumulatorOptions(families=("cone", "embeddings"))
    acc = GeometryAccumulator(model, 1, None, opts)
    ids, mask = padded_batch(2)
    labels = torch.zeros(2, dtype=torch.long)
    feed(acc, captured(model, ids, mask), mask, labels)
    assert acc.abort_batch()  # between batches: nothing to drop, the state is whole
    ids, mask = padded_batch(2, seed=1)
    with torch.inference_mode():
        acc.begin_batch(mask.bool(), labels)
        for i, t in enumerate(captured(model, ids, mask)):
            acc.on_layer(i, t)
    assert acc.abort_batch() and acc.n_done == 2  # a forward pass dropped: whole
    with torch.inference_mode():
        acc.begin_batch(mask.bool(), labels)
        for i, t in enumerate(captured(model, ids, mask)):
            acc.on_layer(i, t)
        acc._add_pooled = None  # end_batch fails part-way (per-genome results added)
        with pytest.raises(TypeError):
            acc.end_batch(labels)
    assert not acc.abort_batch()  # part of the batch may be in the sums: no checkpoint


def test_compat_entropies_on_request():
    model = tiny_bert()
    opts = AccumulatorOptions(families=("spectra",), spectra_genomes=4, compat=True)
    acc = GeometryAccumulator(model, 1, None, opts)
    ids, mask = padded_batch(4)
    feed(acc, captured(model, ids, mask), mask, torch.zeros(4, dtype=torch.long))
    t = measure_tables(acc, [], np.zeros(4, int), np.ones(4, bool), ("a",), True, 0)["spectra"]
    assert (t.histogram_entropy_compat.between(0, np.log(20) + 1e-9)).all()
    a = t[t.point == "A"]
    assert np.isfinite(a.eigen_entropy_compat).all() and (a.eigen_entropy_compat > 0).all()
    assert t[t.point != "A"].eigen_entropy_compat.isna().all()  # square matrices only


def test_kept_maps_have_zero_pad_rows():
    model = tiny_bert()
    ids, mask = padded_batch(3)
    acc = GeometryAccumulator(model, 1, None, AccumulatorOptions(families=("cone",)))
    keep = torch.tensor([True, True, True])
    feed(acc, captured(model, ids, mask), mask, torch.zeros(3, dtype=torch.long), keep=keep)
    for m, real in zip(acc.kept_maps, mask.bool(), strict=True):
        rows = m.astype(np.float64).sum(-1)  # (layer, head, q)
        assert np.allclose(rows[..., real.numpy()], 1.0, atol=2e-3)
        assert (rows[..., ~real.numpy()] == 0).all()


def test_separability_is_fishers_criterion_of_the_pooled_vectors():
    """Streamed in two batches with buckets, equal to Fisher's trace ratio computed directly."""
    model = tiny_bert()
    acc = GeometryAccumulator(model, 2, None, AccumulatorOptions(families=("embeddings",)))
    pooled = []
    for seed, labels in ((0, [0, 1, 0, 1]), (1, [1, 0, 1, 0])):
        ids, mask = padded_batch(4, seed=seed)
        layers = captured(model, ids, mask)
        feed(acc, layers, mask, torch.tensor(labels))
        m = mask[..., None].double()
        for g in range(4):
            vec = [
                [((getattr(t, p).double() * m)[g].sum(0) / m[g].sum()) for p in CONE_POINTS]
                for t in layers
            ]
            pooled.append((labels[g], torch.stack([torch.stack(v) for v in vec]).numpy()))
    table = separability_table(acc, ("a", "b"), all_genomes=True)
    y = np.array([c for c, _ in pooled])
    x = np.stack([v for _, v in pooled])  # (genome, layer, point, d)
    mu = x.mean(0)
    between = sum((y == c).sum() * ((x[y == c].mean(0) - mu) ** 2).sum(-1) for c in (0, 1))
    within = sum(((x[y == c] - x[y == c].mean(0)) ** 2).sum((0, -1)) for c in (0, 1))
    for r in table.itertuples():
        p = CONE_POINTS.index(r.point)
        assert r.fisher == pytest.approx(between[r.layer, p] / within[r.layer, p], rel=1e-9)
    assert len(table) == 2 * len(CONE_POINTS) and set(table.n) == {8}


def test_output_histogram_is_that_of_the_token_sums():
    model = tiny_bert()
    acc = GeometryAccumulator(model, 1, None, AccumulatorOptions(families=("embeddings",)))
    ids, mask = padded_batch(4)
    feed(acc, captured(model, ids, mask), mask, torch.zeros(4, dtype=torch.long))
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    t = measure_tables(acc, [f"g{i}" for i in range(4)], np.zeros(4, int), np.ones(4, bool),
                       ("a",), True, 0)["output_histogram"]  # fmt: skip
    m = mask[..., None].double()
    for layer, h in enumerate(hidden.hidden_states):
        # as kept: the mean over real tokens (float64, kept as float32), times their number
        mean = ((h.double() * m).sum(1) / m.sum(1)).float()
        sums = (mean.double() * m.sum(1)).reshape(-1).numpy()
        counts, _ = np.histogram(sums, bins=60, range=(sums.min(), sums.max()))
        rows = t[t.layer == layer]
        assert rows["count"].tolist() == counts.tolist()
        assert float((rows.density * (rows.hi - rows.lo)).sum()) == pytest.approx(1.0)


def test_stratified_counts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 40, rng.integers(1, 9))
        total = int(rng.integers(1, max(int(sizes.sum()), 1) + 5))
        n = stratified_counts(sizes, total)
        assert n.sum() == min(total, sizes.sum()) and (n <= sizes).all() and (n >= 0).all()
        if total >= (sizes > 0).sum():
            assert (n[sizes > 0] >= 1).all()
        if total < sizes.sum():
            assert np.abs(n - total * sizes / sizes.sum()).max() < 2
    assert stratified_counts(np.array([5, 3, 0]), 100).tolist() == [5, 3, 0]


def test_max_genomes_is_a_ceiling():
    df = pd.DataFrame(
        {"id": [f"g{i}" for i in range(100)], "label": list("abcdefgh") * 12 + ["a"] * 4}
    )
    for n in (3, 8, 10, 37):
        picked = analyze.select_genomes(df, n, seed=1)
        assert len(picked) == n and picked.id.is_unique
        if n >= 8:
            assert picked.label.nunique() == 8


def test_config_validation():
    with pytest.raises(ConfigError, match="keep_maps"):
        AnalyzeConfig(keep_maps=-1)
    with pytest.raises(ConfigError, match="spectra_genomes"):
        AnalyzeConfig(spectra_genomes=-2)
    with pytest.raises(ConfigError, match="coverage"):
        AnalyzeConfig(coverage=0.0)
    with pytest.raises(ConfigError, match=r"gate_thresholds.*'opn=0.5'"):
        AnalyzeConfig(gate_thresholds="opn=0.5")
    with pytest.raises(ConfigError, match=r"gate_thresholds.*not a number"):
        AnalyzeConfig(gate_thresholds="open=high")
    with pytest.raises(ConfigError, match=r"gate_thresholds.*open must be in"):
        AnalyzeConfig(gate_thresholds="open=1.5")
    t = AnalyzeConfig(gate_thresholds=" open=0.8, cluster=0.2 ").thresholds
    assert (t.open, t.cluster, t.closed) == (0.8, 0.2, 0.5)


def test_analyze_options_reach_the_gates(tiny_model, ci_prepared, tmp_path):
    """drop_special and gate_thresholds change the gates table as documented."""
    base = dict(split="all", all_genomes=True, max_genomes=6, only="gates", batch_size=6)

    def gates(name, **extra):
        out = tmp_path / name
        analyze.run(tiny_model, ci_prepared, out, AnalyzeConfig(**base, **extra), progress=False)
        return pd.read_csv(out / "gates.tsv", sep="\t")

    plain = gates("plain")
    drop = gates("drop", drop_special=True)
    # [CLS]/[SEP] query rows left out: the heads' statistics change
    assert not np.allclose(plain["closed"], drop["closed"])
    # an "open" threshold above every head's open score: no head is labelled open any more
    top = float(plain["open"].max())
    assert top < 1 and (plain.label == "open").any()
    low = gates("thresholds", gate_thresholds=f"open={(top + 1) / 2!r},closed=0")
    assert np.allclose(plain[list(GATES)], low[list(GATES)], equal_nan=True)  # the same scores
    thresholds = GateThresholds(open=(top + 1) / 2, closed=0.0)
    assert low.label.tolist() == label_heads(plain[list(GATES)].to_numpy().T, thresholds).tolist()
    assert "open" not in set(low.label)


def test_new_tables_of_a_full_run(tiny_model, ci_prepared, tmp_path):
    cfg = AnalyzeConfig(
        split="all", all_genomes=True, max_genomes=16, spectra_genomes=4, batch_size=4,
        map_methods="", keep_maps=1,
    )  # fmt: skip
    analyze.run(tiny_model, ci_prepared, tmp_path, cfg, progress=False)
    flow = pd.read_csv(tmp_path / "flow.tsv", sep="\t")
    assert set(flow.metric) == {"cone", "effective_rank", "separability"}
    want = {f"{a}->{b}" for a, b in itertools.pairwise(STREAM_POINTS)}
    assert set(flow.transition) == want
    sep = pd.read_csv(tmp_path / "separability.tsv", sep="\t")
    assert sep.fisher.notna().any() and (sep.fisher.dropna() >= 0).all()
    assert set(sep.point) == set(CONE_POINTS)
    overlap = pd.read_csv(tmp_path / "head_overlap.tsv", sep="\t")
    diag = overlap[overlap["head"] == overlap["other"]]
    assert np.allclose(diag.query_overlap, 1) and np.allclose(diag.key_overlap, 1)
    assert overlap[["query_overlap", "key_overlap"]].stack().between(-1e-9, 1 + 1e-9).all()
    roll = pd.read_csv(tmp_path / "rollout.tsv", sep="\t")
    assert roll[["rollout_share", "token_share", "special"]].stack().between(0, 1 + 1e-9).all()
    assert set(roll["class"]) <= set(pd.read_csv(tmp_path / "genomes.tsv", sep="\t")["class"])
    hist = pd.read_csv(tmp_path / "output_histogram.tsv", sep="\t")
    assert sorted(hist.layer.unique()) == list(range(3))  # embeddings + 2 layers
    assert (tmp_path / "figures" / "output_histogram.png").is_file()
    with np.load(tmp_path / "maps.npz") as z:
        lengths = z["genome_lengths"]
        assert len(lengths) == len(z["genome_ids"]) and (lengths > 2).all()
    doc = json.loads((tmp_path / "maps.json").read_text())
    assert "genome_lengths" in doc


def test_encoder_rejects_left_padding():
    from bertgeom.geometry.encoder import measure_encoder

    model = tiny_bert()
    ids, mask = padded_batch(3)
    with pytest.raises(ValueError, match="right-padded"):
        measure_encoder(model, [{"input_ids": ids.flip(1), "attention_mask": mask.flip(1)}])


def test_separability_of_one_class_is_zero():
    acc = types.SimpleNamespace(
        n_classes=1,
        pooled_sum=torch.ones((1, 2, len(CONE_POINTS), 3), dtype=torch.float64),
        pooled_sq=torch.full((1, 2, len(CONE_POINTS)), 5.0, dtype=torch.float64),
        pooled_n=torch.tensor([2.0, 0.0], dtype=torch.float64),
    )
    t = separability_table(acc, ("a",), all_genomes=False)  # type: ignore[arg-type]
    # one class: no between-class spread
    assert (t.between == 0).all() and (t.fisher == 0).all() and (t.n_classes == 1).all()


def test_a_raw_kmer_model_gets_no_domain_tables_and_a_note(tiny_model, ci_prepared, tmp_path):
    """Raw k-mers drift after indels, so token positions name no residues."""
    import shutil

    raw = tmp_path / "raw_model"
    shutil.copytree(tiny_model, raw)
    spec = json.loads((raw / "bertgeom_tokens.json").read_text())
    (raw / "bertgeom_tokens.json").write_text(json.dumps({**spec, "mode": "raw"}))
    out = tmp_path / "out"
    cfg = AnalyzeConfig(
        split="all", all_genomes=True, max_genomes=6, only="cone,domains,maps", map_methods=""
    )
    s = analyze.run(raw, ci_prepared, out, cfg, progress=False)
    assert any(n.startswith("domains skipped") for n in s.notes)
    assert not (out / "domains.tsv").exists() and not (out / "rollout.tsv").exists()
    assert (out / "maps.npz").is_file() and (out / "cone_summary.tsv").is_file()
    assert not list((out / "figures").glob("attention_*.png"))
    notes = json.loads((out / "manifest.json").read_text())["summary"]["notes"]
    assert any(n.startswith("domains skipped") for n in notes)


def test_direction_on_a_low_precision_model():
    from bertgeom.geometry.encoder import measure_encoder

    model = tiny_bert().to(torch.bfloat16)
    ids, mask = padded_batch(3)
    geo = measure_encoder(
        model, [{"input_ids": ids, "attention_mask": mask}], families=("direction",)
    )
    d = geo.tables()["direction"]
    assert np.isfinite(d.data_antisymmetry).all() and d.data_antisymmetry.between(0, 1).all()
