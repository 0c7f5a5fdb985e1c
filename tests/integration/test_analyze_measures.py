"""The measures through the stream driver: precision under autocast, low-precision models,
missing attention, the tables of a full run, and the analyze options that reach them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import ConfigError
from bertgeom.geometry.flow import STREAM_POINTS
from bertgeom.geometry.gates import GATES, GateThresholds, label_heads
from bertgeom.geometry.stream import LAYER_POINTS as CONE_POINTS
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


#: every measure that needs no spike domains
ALL = ("cone", "gates", "direction", "spectra", "embeddings", "maps", "flow")
OPTIONS = {"spectra": {"genomes": 4}, "embeddings": {"maps": ""}}


def stream_tables(model, batches, labels, names, measures=ALL, options=None, autocast=False):
    """Tables of ``measures`` over ``batches`` (input dicts) through the stream driver."""
    from bertgeom.geometry.measures import select
    from bertgeom.geometry.measures.base import Genomes, options_from
    from bertgeom.geometry.stream import Stream, run_info

    info = run_info(model, names)
    opts = options or {}
    ms = [m(info, options_from(m.Options, opts.get(m.name), m.name)) for m in select(measures)]
    stream = Stream(model, ms, info)
    start = 0
    with stream, torch.inference_mode():
        for batch in batches:
            n = len(batch["input_ids"])
            y = torch.as_tensor(labels[start : start + n])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                stream.batch(batch, y)
            start += n
    genomes = Genomes(np.array([f"g{i}" for i in range(start)]), np.asarray(labels[:start]),
                      np.ones(start, bool), True, 0)  # fmt: skip
    out = {}
    for m in stream.measures:
        out |= {k: v for k, v in m.finish(genomes).items() if isinstance(v, pd.DataFrame)}
    for m in stream.measures:
        out |= m.derive(out)
    return out


def _assert_tables_close(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        num = x.select_dtypes("number").columns
        assert x.drop(columns=num).equals(y.drop(columns=num)), name
        assert np.allclose(
            x[num].to_numpy(float), y[num].to_numpy(float), atol=atol, equal_nan=True
        ), name


def test_measures_run_in_float32_under_autocast():
    """The measures run with autocast off: a bf16 autocast region around the stream's layer
    callback (as the GPU forward pass has) changes no table."""
    from bertgeom.geometry.stream import Stream

    model = tiny_bert()
    ids, mask = padded_batch()
    labels = [0, 1, 0, 1]
    batch = [{"input_ids": ids, "attention_mask": mask}]
    plain = stream_tables(model, batch, labels, ("a", "b"), options=OPTIONS)
    original = Stream._on_layer

    def under_autocast(self, layer, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            original(self, layer, t)

    Stream._on_layer = under_autocast
    try:
        auto = stream_tables(model, batch, labels, ("a", "b"), options=OPTIONS)
    finally:
        Stream._on_layer = original
    _assert_tables_close(plain, auto, atol=1e-6)


def test_low_precision_models_are_measured_in_float32():
    model = tiny_bert().to(torch.bfloat16)
    ids, mask = padded_batch()
    tables = stream_tables(model, [{"input_ids": ids, "attention_mask": mask}], [0, 1, 0, 1],
                           ("a", "b"), measures=("cone", "gates"), options=OPTIONS)  # fmt: skip
    assert np.isfinite(tables["cone_summary"]["mean"]).all()
    assert tables["gates"][list(GATES)].stack().between(0, 1 + 1e-6).all()


def test_missing_attention_probabilities_are_an_error_for_attention_measures():
    model = tiny_bert()
    model.set_attn_implementation("sdpa")
    ids, mask = padded_batch()
    batch = [{"input_ids": ids, "attention_mask": mask}]
    with pytest.raises(RuntimeError, match=r"no attention probabilities.*gates"):
        stream_tables(model, batch, [0, 0, 0, 0], ("a",), measures=("gates",))
    cone = stream_tables(model, batch, [0, 0, 0, 0], ("a",), measures=("cone",))
    assert "A" not in set(cone["cone"].point)


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
    with pytest.raises(ConfigError, match=r"\[analyze.maps\].*keep"):
        AnalyzeConfig(measures={"maps": {"keep": -1}})
    with pytest.raises(ConfigError, match=r"\[analyze.spectra\].*genomes"):
        AnalyzeConfig(measures={"spectra": {"genomes": -2}})
    with pytest.raises(ConfigError, match=r"\[analyze.gates\].*coverage"):
        AnalyzeConfig(measures={"gates": {"coverage": 0.0}})
    with pytest.raises(ConfigError, match=r"\[analyze.gates\].*'opn=0.5'"):
        AnalyzeConfig(measures={"gates": {"thresholds": "opn=0.5"}})
    with pytest.raises(ConfigError, match=r"\[analyze.gates\].*not a number"):
        AnalyzeConfig(measures={"gates": {"thresholds": "open=high"}})
    with pytest.raises(ConfigError, match=r"\[analyze.gates\].*open must be in"):
        AnalyzeConfig(measures={"gates": {"thresholds": "open=1.5"}})
    with pytest.raises(ConfigError, match=r"\[analyze.gates\].window must be an integer"):
        AnalyzeConfig(measures={"gates": {"window": "two"}})
    with pytest.raises(ConfigError, match=r"\[analyze.domains\].alpha must be a finite"):
        AnalyzeConfig(measures={"domains": {"alpha": float("nan")}})


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
    low = gates(
        "thresholds", measures={"gates": {"thresholds": f"open={(top + 1) / 2!r},closed=0"}}
    )
    assert np.allclose(plain[list(GATES)], low[list(GATES)], equal_nan=True)  # the same scores
    thresholds = GateThresholds(open=(top + 1) / 2, closed=0.0)
    assert low.label.tolist() == label_heads(plain[list(GATES)].to_numpy().T, thresholds).tolist()
    assert "open" not in set(low.label)


def test_new_tables_of_a_full_run(tiny_model, ci_prepared, tmp_path):
    cfg = AnalyzeConfig(
        split="all", all_genomes=True, max_genomes=16, batch_size=4,
        measures={"spectra": {"genomes": 4}, "embeddings": {"maps": ""}, "maps": {"keep": 1}},
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


def test_a_raw_kmer_model_gets_no_domain_tables_and_a_note(tiny_model, ci_prepared, tmp_path):
    """Raw k-mers drift after indels, so token positions name no residues."""
    import shutil

    raw = tmp_path / "raw_model"
    shutil.copytree(tiny_model, raw)
    spec = json.loads((raw / "bertgeom_tokens.json").read_text())
    (raw / "bertgeom_tokens.json").write_text(json.dumps({**spec, "mode": "raw"}))
    out = tmp_path / "out"
    cfg = AnalyzeConfig(split="all", all_genomes=True, max_genomes=6, only="cone,domains,maps")
    s = analyze.run(raw, ci_prepared, out, cfg, progress=False)
    assert any(n.startswith("domains skipped") for n in s.notes)
    assert not (out / "domains.tsv").exists() and not (out / "rollout.tsv").exists()
    # the maps measure still runs; rollout needs the domains, so it is not written
    assert (out / "maps.npz").is_file() and (out / "cone_summary.tsv").is_file()
    assert not list((out / "figures").glob("attention_*.png"))
    notes = json.loads((out / "manifest.json").read_text())["summary"]["notes"]
    assert any(n.startswith("domains skipped") for n in notes)


def test_direction_on_a_low_precision_model():
    model = tiny_bert().to(torch.bfloat16)
    ids, mask = padded_batch(3)
    d = stream_tables(model, [{"input_ids": ids, "attention_mask": mask}], [0, 0, 0], ("a",),
                      measures=("direction",))["direction"]  # fmt: skip
    assert np.isfinite(d.data_antisymmetry).all() and d.data_antisymmetry.between(0, 1).all()
