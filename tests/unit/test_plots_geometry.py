"""Geometry figures (plots/geometry*.py) on small synthetic tables in the ``analyze`` schemas."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from bertgeom.errors import ArtifactError, ConfigError
from bertgeom.plots import geometry as pg
from bertgeom.plots.geometry_common import GATE_NAMES, pyplot
from bertgeom.resources import protein_domains

POINTS = ("X", "Z", "C", "O", "U", "F", "Y", "A")


def synthetic_tables(
    n_layers: int = 2, n_heads: int = 3, classes: tuple[str, ...] = ("alpha", "beta"), seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Every ``analyze`` table, random but in range, for ``classes`` plus "all" where pooled."""
    rng = np.random.default_rng(seed)
    heads_of = {p: range(n_heads) if p in ("Z", "A") else [-1] for p in POINTS}
    cone = []
    for cls in classes:
        for layer in range(n_layers):
            for point in POINTS:
                for head in heads_of[point]:
                    q = np.sort(rng.uniform(0.2, 1.0, 3))
                    cone.append({"class": cls, "layer": layer, "point": point, "head": head,
                                 "mean": q[1], "sd": 0.05, "q10": q[0], "q50": q[1], "q90": q[2],
                                 "n": 10})  # fmt: skip
    cls_cone = pd.DataFrame(
        [{"class": c, "layer": la, "cone": rng.uniform()} for c in classes
         for la in range(n_layers + 1)]
    )  # fmt: skip
    gates = []
    labels = [*GATE_NAMES, "mixed"]
    for k, (cls, layer, head) in enumerate(
        (c, la, h) for c in (*classes, "all") for la in range(n_layers) for h in range(n_heads)
    ):
        row = {"layer": layer, "head": head, "class": cls}
        row.update({g: rng.uniform() for g in GATE_NAMES})
        row.update(label=labels[k % len(labels)], cls=0.1, sep=0.1, distance=5.0,
                   metastable_k=float(rng.integers(1, 400)), variability=0.2)  # fmt: skip
        gates.append(row)
    direction = pd.DataFrame(
        [{"layer": la, "head": h, "index": rng.uniform(0.5, 0.9), "pos_count": 33,
          "neg_count": 31, "pos_mass": rng.uniform(1, 2), "neg_mass": rng.uniform(1, 2),
          "principal_angle_mean": 1.2, "data_antisymmetry": np.nan,
          "attention_asymmetry": rng.uniform(0, 0.6)}
         for la in range(n_layers) for h in range(n_heads)]
    )  # fmt: skip
    spectra = []
    for cls in classes:
        for layer in range(n_layers):
            for point in ("A", "Z", "C", "Y"):
                for head in heads_of[point]:
                    er = rng.uniform(5, 60)
                    entropy = rng.uniform(0.3, 1) if point == "A" else np.nan
                    spectra.append({"layer": layer, "head": head, "point": point, "class": cls,
                                    "effective_rank": er, "stable_rank": er / 10,
                                    "numerical_rank": 64.0, "von_neumann": 2.0,
                                    "row_entropy": entropy})  # fmt: skip
    names = [d.name for d in protein_domains()] + ["no domain"]
    domains = pd.DataFrame(
        [{"layer": la, "head": h, "class": c, "domain": d, "attention_share": rng.uniform(0, 0.4),
          "token_share": 0.1, "z": 1.0, "p_value": 0.3, "significant": bool(rng.uniform() < 0.2)}
         for la in range(n_layers) for h in range(n_heads) for c in (*classes, "all")
         for d in names]
    )  # fmt: skip
    metrics = ("silhouette", "knn", "probe", "ari", "anisotropy")
    embeddings = pd.DataFrame(
        [{"layer": la, "kind": k, "metric": m, "value": rng.uniform()}
         for la in range(n_layers + 1) for k in ("cls", "mean") for m in metrics]
    )  # fmt: skip
    n_genomes = 30 * len(classes)
    maps = pd.concat(
        pd.DataFrame({"seq_id": [f"g{i}" for i in range(n_genomes)],
                      "class": np.repeat(classes, 30), "layer": la, "kind": k,
                      "pc1": rng.normal(size=n_genomes), "pc2": rng.normal(size=n_genomes)})
        for la in range(n_layers + 1) for k in ("cls", "mean")
    )  # fmt: skip
    nonlinear = pd.concat(
        maps.drop(columns=["pc1", "pc2"]).assign(method=m, dim1=rng.normal(size=len(maps)),
                                                 dim2=rng.normal(size=len(maps)))
        for m in ("tsne", "umap")
    )  # fmt: skip
    flow = pd.DataFrame(
        [{"metric": m, "layer": la, "transition": t, "before": 0.5, "after": 0.5 + d, "delta": d}
         for m in ("cone", "effective_rank") for la in range(n_layers)
         for t in (("X->C", "C->O", "O->U", "U->F", "F->Y") if m == "cone" else ("C->Y",))
         for d in [rng.normal(scale=0.1)]]
    )  # fmt: skip
    return {
        "cone_summary": pd.DataFrame(cone), "cls_cone": cls_cone, "gates": pd.DataFrame(gates),
        "direction": direction, "spectra": pd.DataFrame(spectra), "domains": domains,
        "embeddings": embeddings, "embedding_maps": maps, "nonlinear_maps": nonlinear,
        "flow": flow,
    }  # fmt: skip


def synthetic_attention(n_tokens: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(q_pos, k_pos) row-stochastic map over [CLS] + n_tokens + [SEP], and (token, 2) residues."""
    rng = np.random.default_rng(seed)
    n = n_tokens + 2
    logits = rng.normal(size=(n, n)) * 3
    logits[:, 0] += 4  # a [CLS] sink, as in trained heads
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    start = np.arange(n_tokens) * 9
    return a, np.stack([start // 3 + 1, (start + 11) // 3 + 1], axis=1)


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


def figures(tables):
    """(name, figure, expected number of data axes) for every function."""
    a, res = synthetic_attention()
    t = tables
    return [
        ("attention", lambda: pg.attention_heatmap(a, res, protein_domains(), "L0H0"), 6),
        ("gate_grid", lambda: pg.gate_grid(t["gates"]), 1),
        ("gate_scores", lambda: pg.gate_scores_figure(t["gates"], "alpha"), 8),
        ("cone", lambda: pg.cone_curves(t["cone_summary"], t["cls_cone"]), 9),
        ("entropy_k", lambda: pg.entropy_k_distributions(t["gates"], t["spectra"]), 2),
        ("spectra", lambda: pg.spectra_curves(t["spectra"]), 8),
        ("domains", lambda: pg.domain_share_heatmap(t["domains"], "beta", layer=1), 2),
        ("maps", lambda: pg.embedding_maps(t["embedding_maps"], "mean", layers=[0, 2]), 2),
        ("tsne", lambda: pg.embedding_maps(t["nonlinear_maps"], "cls", method="tsne"), 3),
        ("separability", lambda: pg.separability_curves(t["embeddings"], embeddings_at_0=True), 5),
        ("direction", lambda: pg.directionality_map(t["direction"]), 5),
        ("flow", lambda: pg.flow_figure(t["flow"]), 4),
    ]


def test_every_figure_draws_and_saves(tables, tmp_path):
    from matplotlib.figure import Figure

    plt = pyplot()
    for name, make, n_axes in figures(tables):
        fig = make()
        try:
            assert isinstance(fig, Figure), name
            assert len(fig.axes) == n_axes, (name, len(fig.axes))
            assert any(ax.has_data() for ax in fig.axes), name
            path = tmp_path / f"{name}.png"
            fig.savefig(path, dpi=50)
            assert path.stat().st_size > 1000, name
        finally:
            plt.close(fig)


def test_gate_grid_writes_the_dominant_score(tables):
    gates = tables["gates"]
    fig = pg.gate_grid(gates, "beta")  # beta has labelled and mixed heads
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 2 * 3
    beta = gates[gates["class"] == "beta"]
    row = beta[beta["label"] != "mixed"].iloc[0]
    assert f"{row[row['label']]:.2f}" in texts  # labelled head: its gate's score
    mixed = beta[beta["label"] == "mixed"].iloc[0]
    best = max(GATE_NAMES, key=lambda g: mixed[g])  # mixed head: "abbreviation score"
    assert any(t.endswith(f" {mixed[best]:.2f}") for t in texts)
    pyplot().close(fig)


def test_missing_class_nan_and_bad_input(tables):
    plt = pyplot()
    with pytest.raises(ConfigError, match="classes: \\['alpha', 'beta', 'all'\\]"):
        pg.gate_grid(tables["gates"], "omicron")
    with pytest.raises(ConfigError, match="layers"):
        pg.embedding_maps(tables["embedding_maps"], layers=[7])
    with pytest.raises(ConfigError, match="unknown map method 'isomap'; methods: pca, tsne"):
        pg.embedding_maps(tables["nonlinear_maps"], method="isomap")
    with pytest.raises(ArtifactError, match="lacks columns"):
        pg.embedding_maps(tables["embedding_maps"], method="tsne")  # PCA table: no dim1, dim2
    with pytest.raises(ArtifactError, match="lacks columns"):
        pg.flow_figure(tables["flow"].drop(columns="delta"))
    with pytest.raises(ConfigError, match="token_residues"):
        pg.attention_heatmap(np.eye(5), np.ones((9, 2)))
    # a class missing from some layers, NaN values, all-NaN asymmetry and row entropy
    cone = tables["cone_summary"]
    cone = cone[~((cone["class"] == "beta") & (cone["layer"] == 1))].copy()
    cone.loc[cone.index[:5], ["q10", "q50", "q90"]] = np.nan
    direction = tables["direction"].assign(attention_asymmetry=np.nan)
    spectra = tables["spectra"].assign(row_entropy=np.nan)
    gates = tables["gates"].copy()
    gates.loc[gates.index[:4], [*GATE_NAMES, "metastable_k"]] = np.nan
    gates.loc[gates.index[:4], "label"] = "empty"
    domains = tables["domains"].copy()
    domains.loc[domains.index[:3], "attention_share"] = 0.0  # log2(0): a grey cell
    flow = tables["flow"].assign(delta=np.nan)
    zeros = np.zeros((22, 22))
    for fig, n_axes, draw in [
        (pg.cone_curves(cone, None), 8, False),
        (pg.directionality_map(direction), 3, False),
        (pg.entropy_k_distributions(gates, spectra), 1, False),
        (pg.gate_scores_figure(gates), 8, False),
        (pg.gate_grid(gates), 1, True),  # draw the ones whose colour scales see NaN/zeros
        (pg.domain_share_heatmap(domains, "all"), 2, True),
        (pg.flow_figure(flow), 4, True),
        (pg.attention_heatmap(zeros, synthetic_attention()[1], norm="power"), 6, True),
    ]:
        assert len(fig.axes) == n_axes
        if draw:
            fig.savefig(io.BytesIO(), format="png", dpi=30)
        plt.close(fig)


def test_attention_ticks_are_residues():
    a, res = synthetic_attention(n_tokens=425)  # the real spike: 425 tokens, residues 1..1278
    fig = pg.attention_heatmap(a, res, title="one head", norm="linear")
    ax = max(fig.axes, key=lambda x: x.get_position().width * x.get_position().height)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:4] == ["CLS", "100", "200", "300"] and labels[-2:] == ["1200", "SEP"]
    # residue 100 starts token 33 (residues 100-103), position 34 after [CLS]; [SEP] is 426
    assert ax.get_xticks()[1] == 33 + 1 and ax.get_xticks()[-1] == 426
    pyplot().close(fig)


def test_nonlinear_maps_are_titled_by_method_and_have_no_tick_labels(tables):
    fig = pg.embedding_maps(tables["nonlinear_maps"], "mean", method="umap", embeddings_at_0=True)
    try:
        assert fig.get_suptitle() == "UMAP of the mean-pooled token vectors, per layer"
        ax = fig.axes[0]
        assert ax.get_xlabel() == "UMAP 1" and ax.get_title() == "hidden state 0 (embeddings)"
        fig.canvas.draw()
        assert not any(t.get_text() for t in ax.get_xticklabels())
        n = tables["nonlinear_maps"].query("method == 'umap' and kind == 'mean' and layer == 0")
        assert sum(len(c.get_offsets()) for c in ax.collections) == len(n)
    finally:
        pyplot().close(fig)
