"""Typed configs: defaults <- file <- flags, unknown keys rejected."""

from __future__ import annotations

import pytest

from bertgeom.config import AnalyzeConfig, PrepareConfig, read_toml, resolve
from bertgeom.errors import ConfigError


def test_defaults_file_and_flags_in_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[prepare]\njobs = 3\nseed = 7\ntest_fraction = 0.25\n")
    cfg = resolve(PrepareConfig, read_toml(f)["prepare"], {"seed": 9, "jobs": None})
    assert (cfg.jobs, cfg.seed, cfg.test_fraction, cfg.val_fraction) == (3, 9, 0.25, 0.064)


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"c.toml: unknown key 'jbos' \(valid keys: .*jobs"):
        resolve(PrepareConfig, {"jbos": 2}, source="c.toml")


def test_wrong_type_and_bad_values():
    with pytest.raises(ConfigError, match="'jobs' must be"):
        resolve(PrepareConfig, {"jobs": "two"})
    with pytest.raises(ConfigError, match=r"config: jobs must be in 1\.\.1024"):
        PrepareConfig(jobs=0)
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction must be < 1"):
        PrepareConfig(val_fraction=0.5, test_fraction=0.5)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        read_toml(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[prepare\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(bad)


def test_analyze_measure_options():
    def embeddings(**kw):
        return AnalyzeConfig(measures={"embeddings": kw}).options()["embeddings"]

    assert embeddings().methods == ("pca", "tsne", "umap")
    assert embeddings(maps=" umap, pca ").methods == ("pca", "umap")
    assert embeddings(maps="").methods == ()
    with pytest.raises(ConfigError, match=r"maps: unknown isomap \(valid: pca"):
        embeddings(maps="tsne,isomap")
    with pytest.raises(ConfigError, match="map_genomes must be >= 5"):
        embeddings(map_genomes=4)
    with pytest.raises(ConfigError, match="perplexity must be a finite number > 0"):
        resolve(AnalyzeConfig, {"embeddings": {"perplexity": 0}})
    with pytest.raises(ConfigError, match=r"\[analyze.embeddings\].perplexity must be a finite"):
        resolve(AnalyzeConfig, {"embeddings": {"perplexity": "x"}})
    # TOML sub-tables and command-line overrides meet per option
    cfg = resolve(
        AnalyzeConfig,
        {"gates": {"window": 2, "coverage": 0.8}},
        {"measures": {"gates": {"window": "4"}}},
    )
    gates = cfg.options()["gates"]
    assert (gates.window, gates.coverage) == (4, 0.8)
    assert cfg.resolved()["measures"]["gates"]["window"] == 4
    with pytest.raises(ConfigError, match="unknown measure"):
        resolve(AnalyzeConfig, {"gatez": {"window": 2}})


def test_unset_training_options_take_the_preset_recipe():
    from bertgeom.config import TrainConfig, resolve
    from bertgeom.model.presets import RECIPES

    base = resolve(TrainConfig, {"preset": "base"}, {"lr": 3e-4})
    assert (base.epochs, base.batch_size, base.patience) == (
        RECIPES["base"].epochs,
        RECIPES["base"].batch_size,
        RECIPES["base"].patience,
    )
    assert base.lr == 3e-4  # what is given wins
    small = TrainConfig()
    assert (small.preset, small.lr, small.epochs) == ("small", RECIPES["small"].lr, 2)
    assert TrainConfig(patience=0).patience == 0  # 0 = no early stopping, not "unset"
    with pytest.raises(ConfigError, match="preset"):
        TrainConfig(preset="huge")


def test_type_errors_name_the_kind_of_value():
    with pytest.raises(ConfigError) as info:
        resolve(PrepareConfig, {"max_n_good": "x"}, source="c.toml")
    assert str(info.value) == "c.toml: 'max_n_good' must be a number, got 'x'"
    with pytest.raises(ConfigError) as info:
        resolve(PrepareConfig, {"jobs": 2.5}, source="c.toml")
    assert str(info.value) == "c.toml: 'jobs' must be an integer, got 2.5"
    with pytest.raises(ConfigError) as info:
        resolve(PrepareConfig, {"preset": 20}, source="c.toml")
    assert str(info.value) == "c.toml: 'preset' must be a string, got 20"


def test_the_minimap2_preset_is_checked():
    with pytest.raises(ConfigError) as info:
        resolve(PrepareConfig, {"preset": "bogus"})
    message = str(info.value)
    assert message.startswith("config: preset must be a minimap2 preset: one of asm5, asm10, asm20")
    assert message.endswith("(got 'bogus')")
    assert resolve(PrepareConfig, {"preset": "asm10"}).preset == "asm10"


def test_qc_thresholds_are_configurable_and_checked():
    cfg = resolve(
        PrepareConfig,
        {
            "max_ambiguous_mediocre": 20,
            "max_indel_good": 90,
            "min_spike_length": 3600,
            "max_spike_length": 4000,
            "max_genome_length_good": 32000,
            "max_genome_length_mediocre": 50000,
        },
    )
    assert (cfg.max_ambiguous_mediocre, cfg.max_indel_good, cfg.max_genome_length_mediocre) == (
        20,
        90,
        50000,
    )
    bad = [
        ({"max_ambiguous_good": 11}, "max_ambiguous_good <= max_ambiguous_mediocre"),
        ({"max_indel_good": -1}, "max_indel_good must be >= 0"),
        ({"min_spike_length": 3950}, "min_spike_length <= max_spike_length"),
        ({"max_genome_length_good": 50000}, "max_genome_length_good <= max_genome_length_medi"),
    ]
    for values, message in bad:
        with pytest.raises(ConfigError, match=message):
            resolve(PrepareConfig, values)


def test_prepare_passes_every_qc_threshold_on():
    from bertgeom.pipeline.prepare import qc_thresholds

    cfg = PrepareConfig(max_indel_good=7, max_genome_length_good=33333, max_n_good=0.02)
    t = qc_thresholds(cfg)
    assert (t.max_indel_good, t.max_genome_length_good, t.max_n_good) == (7, 33333, 0.02)
    assert t.max_ambiguous_mediocre == cfg.max_ambiguous_mediocre == 10


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        ("TrainConfig", {"lr": float("inf")}, "lr must be a finite number (got inf)"),
        ("TrainConfig", {"grad_clip": float("nan")}, "grad_clip must be a finite number"),
        ("TrainConfig", {"epochs": 0}, "epochs must be >= 1"),
        ("TrainConfig", {"batch_size": 0}, "batch_size must be >= 1"),
        ("TrainConfig", {"seed": -1}, "seed must be in 0..4294967295 (got -1)"),
        ("PrepareConfig", {"val_fraction": float("nan")}, "val_fraction must be a finite"),
        ("AnalyzeConfig", {"embeddings": {"perplexity": float("inf")}}, "perplexity must be a"),
        ("SimulateConfig", {"seed": 2**32}, "seed must be in 0..4294967295"),
    ],
)
def test_numbers_must_be_finite_and_zero_is_never_replaced(cls, values, message):
    import bertgeom.config as config

    with pytest.raises(ConfigError) as info:
        resolve(getattr(config, cls), values)
    assert message in str(info.value)
