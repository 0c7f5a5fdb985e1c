"""``bertgeom.pipeline.report``: one self-contained HTML page from a synthetic run directory.

The run directory is written here, small, in the formats of docs/formats.md (prepare, train,
evaluate and analyze outputs), with a hostile sequence id, so the report is tested without
running a model. ``make_run_dir`` is reused by the browser test (tests/e2e).
"""

from __future__ import annotations

import json
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertgeom.errors import ArtifactError, InputError
from bertgeom.pipeline import report

EVIL_ID = "<script>alert(1)</script>"
EVIL_MUTATIONS = "S:N501Y,S:<b>X</b>"
CLASSES = ("alpha", "beta", "delta")
LAYERS, HEADS = 2, 4
SECTION_TITLES = (
    "Summary",
    "Data and QC",
    "Training",
    "Classification",
    "Cone index",
    "Attention gates",
    "Directionality",
    "Domain enrichment",
    "Entropies and spectra",
    "Attention maps and domains",
    "Embeddings and separability",
    "Stream-point flow",
    "Methods",
)
UMAP_NOTE = "umap: skipped, umap-learn is not installed (pip install 'bertgeom[maps]')"
VERSIONS = {"python": "3.11.7", "bertgeom": "0.1.0", "numpy": "2.4.6", "pandas": "3.1.1"}


def png(width: int = 40, height: int = 30, rgb: tuple[int, int, int] = (40, 90, 160)) -> bytes:
    """A valid solid-colour RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _manifest(folder: Path, stage: str, config: dict, summary: dict, command: list) -> None:
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "stage": stage,
                "created": "2026-11-26T08:00:00+00:00",
                "command": command,
                "inputs": [{"path": "/data/genomes.fasta.gz", "bytes": 10, "sha256": "0" * 64}],
                "config": config,
                "versions": VERSIONS,
                "outputs": [],
                "summary": summary,
            }
        )
    )


def _tsv(folder: Path, name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / f"{name}.tsv", sep="\t", index=False)


def _prepared(root: Path) -> None:
    d = root / "prepared"
    d.mkdir(parents=True)
    rows = []
    for i, cls in enumerate(CLASSES):
        for j in range(4):
            bad = cls == "delta" and j == 3
            rows.append({
                "id": EVIL_ID if i == j == 0 else f"hCoV-19/{cls}/{j}",
                "label": cls, "split": None if bad else ("train", "val", "test", "train")[j],
                "qc_status": "bad" if bad else ("mediocre" if j == 2 else "good"),
                "qc_reasons": "spike N fraction 0.061 > 0.05" if bad
                else ("spike N fraction 0.024 > 0.01" if j == 2 else ""),
                "mutations": {"alpha": "S:H69-,S:N501Y", "beta": "S:K417N,S:N501Y",
                              "delta": "S:L452R,S:P681R"}[cls] + (",S:A222V" if j == 1 else ""),
            })  # fmt: skip
    spikes = pd.DataFrame(rows)
    spikes["n_mutations"] = spikes.mutations.str.count(",") + 1
    spikes["spike"] = "A" * 30  # a sequence column the report must not need
    spikes.to_parquet(d / "spikes.parquet", index=False)
    _tsv(d, "counts", pd.DataFrame({
        "class": list(CLASSES), "n": [4, 4, 4], "train": [2, 2, 2], "val": [1, 1, 1],
        "test": [1, 1, 0], "good": [3, 3, 2], "mediocre": [1, 1, 1], "bad": [0, 0, 1],
    }))  # fmt: skip
    _manifest(d, "prepare", {"seed": 42, "max_n_good": 0.01, "max_n_mediocre": 0.05,
              "max_ambiguous_good": 3}, {"n_genomes": 12}, ["bertgeom", "prepare"])  # fmt: skip


def _model(root: Path) -> None:
    d = root / "model"
    d.mkdir(parents=True)
    meta = {"labels": list(CLASSES), "preset": "tiny", "token": {"k": 12, "stride": 9,
            "mode": "aligned"}, "best_epoch": 3, "best_val_macro_f1": 0.9, "n_train": 6,
            "n_val": 3, "calibration": {"temperature": 1.4, "ood_threshold": 12.5}}  # fmt: skip
    (d / "bertgeom_model.json").write_text(json.dumps(meta))
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": LAYERS,
                                   "num_attention_heads": HEADS, "hidden_size": 32,
                                   "vocab_size": 300}))  # fmt: skip
    _tsv(d, "history", pd.DataFrame({
        "epoch": [1, 2, 3], "step": [2, 4, 6], "train_loss": [1.1, 0.7, 0.4],
        "val_loss": [1.0, 0.8, 0.6], "val_accuracy": [0.4, 0.7, 0.9],
        "val_macro_f1": [0.3, 0.6, 0.9], "lr": [1e-3, 5e-4, 0.0], "seconds": [1.0, 1.1, 1.2],
        "spikes_per_s": [6.0, 5.5, 5.0],
    }))  # fmt: skip
    _manifest(d, "train", {"preset": "tiny", "epochs": 3}, {}, ["bertgeom", "train"])


def _evaluate(root: Path) -> None:
    d = root / "evaluate"
    d.mkdir(parents=True)
    metrics = {
        "split": "test", "n": 3, "temperature": 1.4,
        "calibrated": {"accuracy": 2 / 3, "macro_f1": 0.5556, "micro_f1": 2 / 3, "ece": 0.05,
                       "nll": 0.6},
        "uncalibrated": {"accuracy": 2 / 3, "macro_f1": 0.5556, "micro_f1": 2 / 3,
                         "ece": 0.12, "nll": 0.8},
        "per_class": [{"label": c, "support": 1, "precision": 1.0, "recall": r,
                       "specificity": 1.0, "f1": r, "roc_auc": None}
                      for c, r in zip(CLASSES, (1.0, 0.0, 1.0), strict=True)],
        "confusion": {"labels": list(CLASSES), "counts": [[1, 0, 0], [1, 0, 0], [0, 0, 1]]},
    }  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    _tsv(d, "predictions", pd.DataFrame({
        "seq_id": ["hCoV-19/alpha/3", EVIL_ID, "hCoV-19/delta/0"],
        "class": ["alpha", "beta", "delta"], "predicted_class": ["alpha", "alpha", "delta"],
        "probability": [0.9, 0.7, 0.8], "correct": [1, 0, 1],
        "mutations": ["S:N501Y", EVIL_MUTATIONS, "S:L452R"],
    }))  # fmt: skip
    _tsv(d, "per_class", pd.DataFrame(metrics["per_class"]).rename(columns={"label": "class"}))
    _tsv(d, "confusion", pd.DataFrame({"true \\ predicted": CLASSES, "alpha": [1, 1, 0],
                                       "beta": [0, 0, 0], "delta": [0, 0, 1]}))  # fmt: skip
    for name in ("confusion", "reliability", "history"):
        (d / f"{name}.png").write_bytes(png())
    _manifest(d, "evaluate", {"split": "test"}, {"accuracy": 2 / 3}, ["bertgeom", "evaluate"])


def _grid(**cols: object) -> pd.DataFrame:
    idx = pd.MultiIndex.from_product([range(LAYERS), range(HEADS)], names=["layer", "head"])
    return pd.DataFrame(index=idx).reset_index().assign(**cols)


def _analyze(root: Path) -> None:
    d = root / "analyze"
    (d / "figures").mkdir(parents=True)
    rng = np.random.default_rng(0)
    gates = []
    for cls in (*CLASSES, "all"):
        g = _grid(**{"class": cls})
        for gate in ("closed", "open", "backward", "forward", "directional", "instance",
                     "cluster"):  # fmt: skip
            g[gate] = rng.uniform(0, 0.3, len(g))
        g["open"] = np.where(g.layer == 0, 0.95, 0.2)
        g["label"] = np.where(g.layer == 0, "open", np.where(g["head"] == 0, "mixed", "closed"))
        g["cls"], g["sep"], g["distance"], g["metastable_k"] = 0.1, 0.1, 12.0, 30.0
        g["variability"] = 0.0
        gates.append(g)
    _tsv(d, "gates", pd.concat(gates))
    _tsv(d, "row_entropy", pd.concat(
        [_grid(**{"class": c, "row_entropy": np.linspace(0.9, 0.4, LAYERS * HEADS)})
         for c in CLASSES]))  # fmt: skip
    pd.DataFrame([{"class": c, "layer": la, "cone": (0.2, 0.5, 0.9)[la], "n": 4}
                  for c in CLASSES for la in range(LAYERS + 1)]
                 ).to_parquet(d / "cls_cone.parquet", index=False)  # fmt: skip
    _tsv(d, "cone_summary", pd.DataFrame([
        {"class": c, "layer": la, "point": p, "head": -1, "mean": 0.5, "sd": 0.1, "q10": 0.4,
         "q50": 0.5 + 0.1 * la, "q90": 0.6, "n": 4}
        for c in CLASSES for la in range(LAYERS) for p in "XCOUFY"]))  # fmt: skip
    direction = _grid(index=rng.uniform(0.3, 0.7, LAYERS * HEADS), pos_count=8, neg_count=8,
                      pos_mass=0.5, neg_mass=0.5, principal_angle_mean=1.0,
                      data_antisymmetry=0.4, attention_asymmetry=0.01)  # fmt: skip
    direction.loc[5, "index"] = 0.95
    _tsv(d, "direction", direction)
    _tsv(d, "spectra", pd.concat(
        [_grid(point=p, **{"class": c}, effective_rank=5.0 + la, stable_rank=2.0,
               numerical_rank=9, von_neumann=1.0, n=2)
         for p in ("A", "Z") for c in CLASSES for la in range(1)]))  # fmt: skip
    doms = []
    for c in CLASSES:
        for dom in ("S1", "RBD", "no domain"):
            g = _grid(**{"class": c, "domain": dom, "attention_share": 0.2, "token_share": 0.2,
                         "z": 0.1, "p_value": 0.9, "significant": False})  # fmt: skip
            doms.append(g)
    dom = pd.concat(doms, ignore_index=True)
    hit = (dom.layer == 1) & (dom["head"] == 2) & (dom.domain == "RBD") & (dom["class"] == "beta")
    dom.loc[hit, ["attention_share", "z", "p_value", "significant"]] = [0.6, 9.5, 1e-20, True]
    _tsv(d, "domains", dom[["layer", "class", "head", "domain", "attention_share", "token_share",
                            "z", "p_value", "significant"]])  # fmt: skip
    _tsv(d, "embeddings", pd.DataFrame([
        {"layer": la, "kind": k, "metric": m,
         "value": np.nan if (k == "cls" and la == 0) else (0.5, 0.8, 0.75)[la]}
        for k in ("cls", "mean") for m in ("silhouette", "knn", "probe", "ari")
        for la in range(LAYERS + 1)]))  # fmt: skip
    _tsv(d, "one_vs_all", pd.DataFrame([
        {"layer": la, "kind": "cls", "class": c, "accuracy": 0.9, "balanced_accuracy": 0.8}
        for la in (1, 2) for c in CLASSES]))  # fmt: skip
    _tsv(d, "flow", pd.DataFrame([
        {"metric": "cone", "layer": la, "source": s, "target": t, "before": 0.5,
         "after": 0.5 + dl, "delta": dl, "relative": dl / 0.5, "transition": f"{s}->{t}"}
        for la in range(LAYERS)
        for (s, t), dl in zip(("XC", "CO", "OU", "UF", "FY"), (0.3, 0.0, -0.2, 0.05, -0.1),
                              strict=True)]))  # fmt: skip
    _tsv(d, "genomes", pd.DataFrame({"seq_id": [EVIL_ID, "g2"], "class": ["alpha", "beta"],
                                     "predicted": ["alpha", "beta"], "correct": [True, True],
                                     "included": [True, True],
                                     "mutations": ["S:N501Y", ""]}))  # fmt: skip
    names = ["gate_grid", "gate_scores", "entropy_k", "cone_curves", "spectra", "separability",
             "embedding_maps", "embedding_maps_tsne", "directionality", "flow"]  # fmt: skip
    names += [f"attention_{c}" for c in CLASSES] + [f"domains_{c}" for c in CLASSES]
    for i, name in enumerate(names):
        (d / "figures" / f"{name}.png").write_bytes(png(60, 40, (20 * i % 255, 120, 80)))
    _manifest(d, "analyze", {"split": "test", "all_genomes": False,
                             "measures": {"gates": {"window": 3}, "domains": {"alpha": 0.05},
                                          "embeddings": {"maps": "pca,tsne,umap",
                                                         "map_genomes": 2000, "perplexity": 30.0,
                                                         "n_neighbors": 15}}},
              {"n_genomes": 2, "notes": [UMAP_NOTE],
               "embeddings": {"map_seconds": {"tsne": 1.0, "umap": 0.0}}},
              ["bertgeom", "analyze", "--note", "<i>x</i>"])  # fmt: skip


def make_run_dir(root: Path, stages: tuple[str, ...] = ("prepared", "model", "evaluate",
                                                         "analyze")) -> Path:  # fmt: skip
    """A small synthetic run directory with the given stage folders."""
    builders = {"prepared": _prepared, "model": _model, "evaluate": _evaluate,
                "analyze": _analyze}  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        builders[stage](root)
    return root


class _Page(HTMLParser):
    """Collects tags, attributes, headings and visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data.strip())


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    run_dir = make_run_dir(root / "run")
    return report.run(run_dir, root / "out" / "report.html")


def test_report_is_one_self_contained_file(full_report):
    assert full_report.is_file()
    siblings = sorted(p.name for p in full_report.parent.iterdir())
    assert siblings == ["report.html", "report_tables"]
    page = parse(full_report)
    assert [h for h in page.h2 if h != "Contents"] == list(SECTION_TITLES)
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 19  # 3 classification, 16 geometry
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for a in imgs)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    for _, attrs in page.tags:
        for value in attrs.values():
            assert "http" not in (value or "").lower() or value.startswith("default-src")


def test_report_escapes_data(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert EVIL_ID not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>X</b>" not in text and "S:&lt;b&gt;X&lt;/b&gt;" in text
    assert "<i>x</i>" not in text  # the analyze command line, shown in the methods


def test_report_tables_are_written_and_linked(full_report):
    folder = full_report.parent / "report_tables"
    page = parse(full_report)
    links = [a["href"] for t, a in page.tags if t == "a" and not a["href"].startswith("#")]
    assert links and all(link.startswith("report_tables/") for link in links)
    for link in links:
        assert (full_report.parent / link).is_file(), link
    wrong = pd.read_csv(folder / "report_misclassified.tsv", sep="\t")
    assert wrong.seq_id.tolist() == [EVIL_ID]
    freq = pd.read_csv(folder / "report_mutation_frequencies.tsv", sep="\t")
    alpha = freq[freq["class"] == "alpha"].set_index("mutation")
    assert alpha.loc["S:N501Y", "frequency"] == 1.0 and alpha.loc["S:A222V", "genomes"] == 1


def test_report_states_computed_findings(full_report):
    page = parse(full_report)
    text = " ".join("".join(page.text).split())
    assert "accuracy 66.67 %" in text
    assert "calibration error (ECE) from 0.1200 to 0.0500" in text
    assert "S:A222V (25.0 %)" in text and "S:N501Y (100 %)" in text
    assert "layer 0: “open” (4 of 4 heads)" in text and "layer 1: “closed” (3 of 4" in text
    assert "peaks at hidden state 2 with 0.900" in text  # [CLS] cone index
    assert "linear-probe accuracy on the [CLS] vectors peaks at 0.800" in text
    assert "layer 1 head 2 on RBD for beta" in text
    assert "layer 1 head 1 (d_h = 0.950)" in text
    assert "spike N fraction > 0.01" in text  # QC reason kinds, values stripped
    assert "0.05 / 8 (layers × heads)" in text
    for word in ("nan", "NaN", "None", "TODO", "placeholder", "lorem"):
        assert f" {word} " not in f" {text} ", word


def test_embedding_maps_side_by_side_with_notes(full_report):
    html = full_report.read_text(encoding="utf-8")
    section = html[html.index("<h2>Embeddings and separability<") + 4 :]
    section = section[: section.index("<h2")]
    gallery = section[section.index('<div class="gallery">') :]
    gallery = gallery[: gallery.index("</div>")]
    assert gallery.count("<img") == 2  # PCA and t-SNE next to each other (no UMAP figure)
    assert 'alt="PCA maps"' in gallery and 'alt="t-SNE maps"' in gallery
    text = " ".join("".join(parse(full_report).text).split())
    assert "2-D maps: umap: skipped, umap-learn is not installed (pip install" in text
    assert "The t-SNE and UMAP maps use at most 2,000 genomes" in text
    assert "t-SNE perplexity" in text and "UMAP neighbours" in text  # methods: parameters


def test_inputs_from_another_run_are_flagged(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", stages=("prepared", "analyze"))
    for stage, key, sha in (("prepared", "outputs", "a" * 64), ("analyze", "inputs", "b" * 64)):
        path = run_dir / stage / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest[key] = [{"path": "/x/spikes.parquet", "sha256": sha}]
        path.write_text(json.dumps(manifest))
    page = parse(report.run(run_dir, tmp_path / "r.html"))
    text = " ".join("".join(page.text).split())
    assert "analyze/ was computed from a spikes.parquet that differs from the one in prepared/" in (
        text
    )


def test_missing_stages_are_named(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", stages=("prepared",))
    out = report.run(run_dir, tmp_path / "r.html")
    page = parse(out)
    assert [h for h in page.h2 if h != "Contents"] == list(SECTION_TITLES)
    text = " ".join("".join(page.text).split())
    for command in ("bertgeom train", "bertgeom evaluate", "bertgeom analyze"):
        assert f"written by {command}, which is missing from this run directory" in text
    assert "the analyze stage has not been run" in text
    assert text.count("the analyze stage has not been run") == 8  # each geometry section


def test_unreadable_artefact_is_reported_not_fatal(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", stages=("prepared", "evaluate"))
    (run_dir / "evaluate" / "metrics.json").write_text("{not json")
    (run_dir / "evaluate" / "reliability.png").write_bytes(b"not a png")
    text = report.run(run_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "metrics.json" in text and "could not be read" in text


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        report.run(tmp_path / "absent", tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no stage outputs"):
        report.run(tmp_path / "empty", tmp_path / "r.html")
    run_dir = make_run_dir(tmp_path / "run", stages=("prepared",))
    with pytest.raises(InputError, match="is a directory"):
        report.run(run_dir, tmp_path)
