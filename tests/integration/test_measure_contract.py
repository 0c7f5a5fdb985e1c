"""Contract of the measure registry: a measure defined entirely in this file, registered here,
appears in ``--only``, the CLI flags, the written tables, the manifest, the report (its section
with its figure) and the Methods table, with no other file edited."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.cli import main
from bertgeom.geometry.measures import register, registry, unregister
from bertgeom.geometry.measures.base import BatchInfo, Genomes, Measure, Rows


@dataclass(frozen=True)
class ToyOptions:
    """Options of the toy measure."""

    scale: float = field(default=1.0, metadata={"help": "factor applied to the norms"})

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


class ToyNorm(Measure):
    """Per genome and layer, ``scale`` x the norm of the mean layer output Y."""

    name = "toy_norm"
    title = "Toy norm of the layer output"
    order = 999
    reads = frozenset({"Y"})
    Options = ToyOptions
    tables = ("toy_norm",)
    default = False
    definitions = (("Toy norm", "scale times the norm of the mean of Y", "t = s ‖mean Y‖"),)

    def __init__(self, info: Any, options: Any = None) -> None:
        super().__init__(info, options)
        self.rows = Rows()
        self._layers: list[torch.Tensor] = []

    def begin_batch(self, batch: BatchInfo) -> None:
        self._layers = []

    def update(self, layer: int, view: Any, batch: BatchInfo) -> None:
        mean = (view.Y * view.mask[..., None]).sum(1) / view.mask.sum(1, keepdim=True)
        self._layers.append(self.options.scale * mean.norm(dim=-1))

    def end_batch(self, batch: BatchInfo) -> None:
        self.rows.append("norm", torch.stack(self._layers, 1))

    def finish(self, genomes: Genomes) -> dict[str, Any]:
        v = self.rows.get("norm")
        g, layers = v.shape
        return {
            "toy_norm": pd.DataFrame(
                {
                    "seq_id": np.repeat(genomes.ids, layers),
                    "layer": np.tile(np.arange(layers), g),
                    "norm": v.reshape(-1),
                }
            )
        }

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3, 2))
        t = tables["toy_norm"]
        ax.plot(t.groupby("layer").norm.mean())
        ax.set_xlabel("layer")
        ax.set_ylabel("norm")
        yield "toy_norm", fig

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.html import Section, figure

        a = run.analyze
        body = figure(a.figure("toy_norm"), "Toy norms", "toy norm curve", "toy_norm.png")
        return Section(cls.title, body)


@pytest.fixture
def toy():
    register(ToyNorm)
    yield ToyNorm
    unregister(ToyNorm.name)


def test_a_toy_measure_appears_everywhere(toy, tiny_model, ci_prepared, tmp_path, capsys):
    assert "toy_norm" in registry()
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = capsys.readouterr().out
    assert "toy_norm" in text and "--toy-norm-scale" in text
    run = tmp_path / "run"
    args = ["analyze", str(tiny_model), str(ci_prepared), "--out", str(run / "analyze"),
            "--split", "all", "--max-genomes", "6", "--only", "cone,toy_norm",
            "--toy-norm-scale", "2.5", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = run / "analyze"
    table = pd.read_csv(out / "toy_norm.tsv", sep="\t")
    assert len(table) == 6 * 2 and (table.norm > 0).all()
    assert (out / "figures" / "toy_norm.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["measures"] == ["cone", "toy_norm"]
    assert manifest["config"]["measures"]["toy_norm"] == {"scale": 2.5}
    assert "toy_norm.tsv" in {o["path"] for o in manifest["outputs"]}
    assert main(["report", str(run), "--out", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "Toy norm of the layer output" in html and 'alt="toy norm curve"' in html
    assert "t = s ‖mean Y‖" in html  # its definition in Methods
    # the Methods parameter table shows the run's value, not the default
    methods = html[html.index(">Methods<") :]
    assert "toy_norm" in methods and "2.5" in methods and "analyze config" in methods


def test_bad_toy_option_is_a_one_line_error(toy, tiny_model, ci_prepared, tmp_path, capsys):
    rc = main(["analyze", str(tiny_model), str(ci_prepared), "--out", str(tmp_path / "a"),
               "--only", "toy_norm", "--toy-norm-scale", "-1"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "scale must be > 0" in err and err.count("\n") == 1
