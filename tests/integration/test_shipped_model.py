"""The shipped model (``make model``) reproduces its model card, predicts without a model
argument, and classifies raw spikes through its saved tokenizer.

Skipped, with the reason, when the package holds no shipped model. The card's test metrics are
checked two ways: they follow exactly from ``test_predictions.tsv`` (every test genome) and the
data's labels; and a documented subset, the first 3 test genomes of every class in
``test_predictions.tsv`` (about 24 genomes, seconds), is predicted again and must give the
recorded class and probability.
"""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from bertgeom.cli import main
from bertgeom.io.files import sha256_file
from bertgeom.model.shipped import DEFAULT_MODEL, package_models_dir

SHIPPED = package_models_dir() / DEFAULT_MODEL
pytestmark = pytest.mark.skipif(
    not (SHIPPED / "bertgeom_model.json").is_file(),
    reason=f"no shipped model in {SHIPPED} (`make model` trains and installs it)",
)
PER_CLASS = 3


@pytest.fixture(scope="module")
def card():
    return json.loads((SHIPPED / "bertgeom_model.json").read_text())["card"]


@pytest.fixture(scope="module")
def recorded():
    with open(SHIPPED / "test_predictions.tsv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def labels(shared_data):
    with open(shared_data / "labels.tsv", encoding="utf-8", newline="") as fh:
        return {r["seq_id"]: r["class"] for r in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(autouse=True)
def only_the_package_models(monkeypatch):
    monkeypatch.delenv("BERTGEOM_MODELS", raising=False)


def test_card_metrics_follow_from_the_recorded_test_predictions(card, recorded, labels):
    assert len(recorded) == card["test"]["n"]
    truth = [labels[r["seq_id"]] for r in recorded]
    pred = [r["predicted_class"] for r in recorded]
    assert np.mean([t == p for t, p in zip(truth, pred, strict=True)]) == pytest.approx(
        card["test"]["accuracy"], abs=1e-12
    )
    for c in card["test"]["per_class"]:
        tp = sum(t == p == c["label"] for t, p in zip(truth, pred, strict=True))
        support = truth.count(c["label"])
        called = pred.count(c["label"])
        assert support == c["support"]
        assert c["recall"] == pytest.approx(tp / support if support else 0.0, abs=1e-12)
        assert c["precision"] == pytest.approx(tp / called if called else 0.0, abs=1e-12)
    assert sha256_file(SHIPPED / "model.safetensors") == card["weights"]["sha256"]


def test_a_subset_of_the_test_split_is_predicted_as_recorded(
    card, recorded, labels, shared_data, tmp_path
):
    chosen: dict[str, dict] = {}
    per_class: dict[str, int] = {}
    for r in recorded:
        cls = labels[r["seq_id"]]
        if per_class.get(cls, 0) < PER_CLASS:
            per_class[cls] = per_class.get(cls, 0) + 1
            chosen[r["seq_id"]] = r
    fasta = tmp_path / "subset.fasta"
    with gzip.open(shared_data / "genomes.fasta.gz", "rt") as src, open(fasta, "w") as out:
        keep = False
        for line in src:
            if line.startswith(">"):
                keep = line[1:].split()[0] in chosen
            if keep:
                out.write(line)
    table = tmp_path / "p.tsv"
    assert main(["predict", str(fasta), "--out", str(table), "--quiet"]) == 0
    with open(table, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert {r["seq_id"] for r in rows} == set(chosen)
    for r in rows:
        want = chosen[r["seq_id"]]
        assert r["predicted_class"] == want["predicted_class"], r["seq_id"]
        assert abs(float(r["probability"]) - float(want["probability"])) <= 2e-4, r["seq_id"]
        assert (r["model_name"], r["model_version"]) == (card["name"], card["version"])


def test_predict_without_a_model_on_the_ci_genomes(card, labels, shared_data, tmp_path):
    table = tmp_path / "p.tsv"
    assert main(["predict", str(shared_data / "ci_genomes.fasta.gz"), "--out", str(table),
                 "-q"]) == 0  # fmt: skip
    with open(table, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 48
    assert {(r["model_name"], r["model_version"]) for r in rows} == {
        (card["name"], card["version"])
    }
    right = sum(r["predicted_class"] == labels[r["seq_id"]] for r in rows)
    assert right >= 46, f"{right} of 48 CI genomes classified as labelled"


def test_raw_spikes_through_the_saved_tokenizer_classify_right(labels, shared_data):
    from transformers import pipeline

    import bertgeom.model.hf_tokenizer  # noqa: F401 - registers the tokenizer class

    with gzip.open(shared_data / "ci_spike.fasta.gz", "rt") as fh:
        lines = fh.read().split()
    spikes = [(lines[i][1:], lines[i + 1]) for i in range(0, len(lines), 2)][::6]
    classify = pipeline("text-classification", model=str(SHIPPED), dtype="float32")
    results = classify([s for _, s in spikes])
    right = sum(r["label"] == labels[n] for (n, _), r in zip(spikes, results, strict=True))
    assert right >= len(spikes) - 1, (right, len(spikes))
