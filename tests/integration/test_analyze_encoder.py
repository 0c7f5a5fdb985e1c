"""``bertgeom analyze-encoder`` on tiny randomly initialised encoders saved to a folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import transformers

from bertgeom.cli import main
from bertgeom.errors import InputError
from bertgeom.model.encoder_dir import load_encoder_dir

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "rain",
    "fell",
    "sun",
    "warm",
    "cold",
    "river",
    "bread",
    "oven",
    ".",
    ",",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LINES = [
    ("the cat sat on the mat .", "pets"),
    ("rain fell on the river .", "weather"),
    ("the dog ran , the cat sat .", "pets"),
    ("the sun , warm on the river", "weather"),
    ("a dog sat", "pets"),
    ("cold rain fell and fell on a cold river .", "weather"),
    ("bread in the oven , warm bread", "pets"),
    ("the river ran cold", "weather"),
]


def _save_tokenizer(folder):
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    transformers.BertTokenizer(vocab=vocab).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 2-layer, 4-head BertModel (no head) with a word tokenizer."""
    out = tmp_path_factory.mktemp("tiny_bert")
    cfg = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(out)
    _save_tokenizer(out)
    return out


@pytest.fixture()
def texts(tmp_path):
    f = tmp_path / "texts.tsv"
    f.write_text("# tiny inputs\n" + "".join(f"{t}\t{c}\n" for t, c in LINES))
    return f


def _cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_analyze_tables_figures_and_report(tiny_bert, texts, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _cli(
        ["analyze-encoder", tiny_bert, texts, "--out", out, "-q", "--embeddings-maps", "pca"],
        capsys,
    )
    assert code == 0, stdout
    a = out / "analyze"
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["stage"] == "analyze-encoder"
    assert "domains" not in manifest["summary"]["measures"]
    assert manifest["summary"]["classes"] == ["pets", "weather"]
    genomes = pd.read_csv(a / "genomes.tsv", sep="\t")
    assert genomes["seq_id"].tolist() == [f"line{i}" for i in range(2, 10)]
    assert genomes["class"].tolist() == [c for _, c in LINES]
    # [CLS] + words + [SEP], as the model's own tokenizer counts them
    assert genomes["n_tokens"].tolist() == [len(t.split()) + 2 for t, _ in LINES]
    gates = pd.read_csv(a / "gates.tsv", sep="\t")
    assert len(gates) == 2 * 4 * 3  # layers x heads x (2 classes + all)
    sep = pd.read_csv(a / "separability.tsv", sep="\t")
    assert (sep["n_classes"] == 2).all()
    for name in ("cone_summary", "direction", "spectra", "embeddings", "flow"):
        assert (a / f"{name}.tsv").is_file(), name
    assert (a / "figures" / "gate_grid.png").is_file()
    html = (out / "report.html").read_text()
    for title in ("Encoder and inputs", "Attention gates", "Cone index", "Methods"):
        assert title in html, title
    assert "<h2>Classification</h2>" not in html and "<h2>Training</h2>" not in html
    assert (out / "report_tables").is_dir()
    assert str(out) in stdout and "8 sequences" in stdout


def test_without_labels_class_comparisons_are_left_out_with_a_note(tiny_bert, tmp_path, capsys):
    f = tmp_path / "plain.txt"
    f.write_text("".join(f"{t}\n" for t, _ in LINES))
    out = tmp_path / "out"
    code, stdout, _ = _cli(
        ["analyze-encoder", tiny_bert, f, "--out", out, "-q",
         "--only", "cone,gates,embeddings,flow", "--embeddings-maps", "pca"],
        capsys,
    )  # fmt: skip
    assert code == 0
    a = out / "analyze"
    assert not (a / "separability.tsv").exists() and not (a / "one_vs_all.tsv").exists()
    emb = pd.read_csv(a / "embeddings.tsv", sep="\t")
    assert "anisotropy" in set(emb["metric"]) and not {"probe", "knn"} & set(emb["metric"])
    assert set(pd.read_csv(a / "gates.tsv", sep="\t")["class"]) == {"all"}
    flow = pd.read_csv(a / "flow.tsv", sep="\t")
    assert "cone" in set(flow["metric"]) and "separability" not in set(flow["metric"])
    assert "note: no labels" in stdout
    assert "no labels" in (out / "report.html").read_text()


def test_distilbert_is_refused_in_one_line(tmp_path, texts, capsys):
    model_dir = tmp_path / "distil"
    cfg = transformers.DistilBertConfig(
        vocab_size=len(SPECIAL) + len(WORDS), dim=32, n_layers=1, n_heads=4, hidden_dim=64,
        max_position_embeddings=16,
    )  # fmt: skip
    transformers.DistilBertModel(cfg).save_pretrained(model_dir)
    _save_tokenizer(model_dir)
    capsys.readouterr()  # transformers' "Writing model shards" bar
    code, _, err = _cli(["analyze-encoder", model_dir, texts, "--out", tmp_path / "o"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "distilbert is not supported" in lines[0] and "encoder.layer" in lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_model_dir_errors(tmp_path, tiny_bert):
    with pytest.raises(InputError, match=r"no config\.json"):
        load_encoder_dir(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_bert / name).read_bytes())
    with pytest.raises(InputError, match="no tokenizer files"):
        load_encoder_dir(bare)
