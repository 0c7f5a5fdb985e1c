"""``evaluate`` on a lineage-disjoint split: per-lineage calls and open-set AUROCs."""

from __future__ import annotations

import csv
import json

from bertgeom.cli import main
from bertgeom.model.heldout import LINEAGE_COLUMNS, OPEN_SET_COLUMNS
from bertgeom.model.openset import METHODS


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_evaluate_tabulates_held_out_lineages(shared_data, tiny_model, tmp_path, capsys):
    prepared = tmp_path / "prep"
    code = main([
        "prepare", str(shared_data / "ci_genomes.fasta.gz"), "--labels",
        str(shared_data / "labels.tsv"), "--out", str(prepared), "--quiet", "--split-by",
        "lineage", "--holdout", "B.1.621.1,P.1.17",
    ])  # fmt: skip
    assert code == 0
    out = tmp_path / "eval"
    code = main(["evaluate", str(tiny_model), str(prepared), "--out", str(out), "--refit"])
    assert code == 0
    capsys.readouterr()
    lineages = read_tsv(out / "lineages.tsv")
    assert list(lineages[0]) == list(LINEAGE_COLUMNS)
    preds = read_tsv(out / "predictions.tsv")
    held = {r["lineage"] for r in preds if r["held_out"] == "true"}
    assert {"B.1.621.1", "P.1.17"} <= held
    assert sum(int(r["n"]) for r in lineages) == len(preds)
    for r in lineages:
        assert int(r["n"]) == int(r["right"]) + int(r["wrong_flagged"]) + int(r["wrong_unflagged"])
        assert (r["held_out"] == "true") == (r["lineage"] in held)
        mine = [p for p in preds if p["lineage"] == r["lineage"] and p["class"] == r["class"]]
        flagged = sum(bool(p["note"]) for p in mine if p["correct"] == "false")
        assert flagged == int(r["wrong_flagged"])
    calls = json.loads((out / "metrics.json").read_text())["calls"]
    assert calls["held_out"]["n"] == sum(r["held_out"] == "true" for r in preds)
    table = read_tsv(out / "open_set.tsv")
    assert list(table[0]) == list(OPEN_SET_COLUMNS)
    names = [r["method"] for r in table]
    assert set(METHODS) | {"constellation"} <= set(names)
    assert sum(n.endswith("(default)") for n in names) == 1
    for r in table:
        if r["auroc_held_out"]:
            assert 0.0 <= float(r["auroc_held_out"]) <= 1.0
