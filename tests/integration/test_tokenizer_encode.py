"""Tokenizer honesty: the saved tokenizer k-merizes raw sequences as the model expects or fails
loudly; ``bertgeom.encode``; the README's five-line transformers example."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bertgeom
from bertgeom.errors import InputError
from bertgeom.genome.process import SpikeProcessor
from bertgeom.model.store import load_model_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def genomes(shared_data):
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    return [(lines[i][1:], lines[i + 1]) for i in range(0, 16, 2)]


def test_raw_spike_and_genome_through_the_saved_tokenizer_give_the_models_ids(
    default_tiny, genomes
):
    from transformers import AutoTokenizer

    import bertgeom.model.hf_tokenizer  # noqa: F401 - registers the class

    tok = AutoTokenizer.from_pretrained(default_tiny)
    vocab = load_model_dir(default_tiny).vocab
    processor = SpikeProcessor()
    for _, genome in genomes:
        spike = processor.process("g", genome).spike
        expected = vocab.encode([spike.aligned])[0].tolist()
        assert tok(genome)["input_ids"] == expected
        assert tok(spike.raw)["input_ids"] == expected  # the spike alone, as read
        assert tok(spike.raw.lower())["input_ids"] == expected
    batch = tok([g for _, g in genomes[:3]], return_tensors="np")
    assert batch["input_ids"].shape == (3, vocab.n_positions())


@pytest.mark.parametrize(
    "text", ["hello world", "ACGT", "ACGTACGTACGT notakmer", "ACGTACGTACGTACGTACGTAC EE"]
)
def test_text_that_is_not_kmers_or_a_sequence_raises(default_tiny, text):
    from transformers import AutoTokenizer

    import bertgeom.model.hf_tokenizer  # noqa: F401

    tok = AutoTokenizer.from_pretrained(default_tiny)
    with pytest.raises(ValueError, match="neither 12-mers separated by spaces nor one"):
        tok(text)


def test_a_sequence_without_a_spike_raises(default_tiny):
    from transformers import AutoTokenizer

    import bertgeom.model.hf_tokenizer  # noqa: F401
    from bertgeom.resources import reference_genome

    tok = AutoTokenizer.from_pretrained(default_tiny)
    with pytest.raises(ValueError, match=r"no usable SARS-CoV-2 spike in the sequence \(QC bad"):
        tok(reference_genome()[:15000])


def _python(code, **env):
    """(exit status, standard output, standard error) of ``python -c code``."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        env=os.environ | {"PYTHONPATH": str(ROOT / "src"), **env},
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_without_bertgeom_the_tokenizer_does_not_load_and_with_remote_code_it_does(
    default_tiny, genomes, tmp_path
):
    seq = genomes[0][1]
    fasta = tmp_path / "g.fasta"
    fasta.write_text(f">g\n{seq}\n")
    code = (
        "import sys; from transformers import AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(default_tiny)!r}{{}})\n"
        f"print(tok(open({str(fasta)!r}).read().split()[1])['input_ids'][:3])"
    )
    status, _, err = _python(code.format(""), HF_HOME=str(tmp_path / "hf"))
    assert status != 0 and "Error" in err  # no generic tokenizer can read the directory
    status, out, err = _python(code.format(", trust_remote_code=True"),
                               HF_HOME=str(tmp_path / "hf"))  # fmt: skip
    assert status == 0, err
    expected = bertgeom.encode(str(fasta), model=default_tiny)["input_ids"][0, :3].tolist()
    assert out.strip().splitlines()[-1] == str(expected)


def test_encode_takes_fasta_files_sequences_and_names(default_tiny, shared_data, genomes):
    ci = shared_data / "ci_genomes.fasta.gz"
    from_file = bertgeom.encode(ci)  # the installed default model
    assert from_file["input_ids"].shape[0] == 48 == len(from_file.seq_ids)
    assert from_file.seq_ids[:8] == [n for n, _ in genomes]
    assert set(from_file.qc_status) <= {"good", "mediocre"}
    from_seqs = bertgeom.encode([s for _, s in genomes], model="sc2-spike-small@test")
    assert (from_seqs["input_ids"] == from_file["input_ids"][:8]).all()
    assert (from_seqs["attention_mask"] == 1).all()  # aligned tokens: every row full length
    one = bertgeom.encode(genomes[0][1], model=default_tiny, return_tensors="pt")
    assert one["input_ids"].tolist() == from_file["input_ids"][:1].tolist()
    assert one.seq_ids == ["seq0"]
    with pytest.raises(InputError, match="neither a nucleotide sequence"):
        bertgeom.encode("no/such/file.fasta")


def test_encode_equals_what_predict_classifies(default_tiny, genomes):
    import torch

    bundle = load_model_dir(default_tiny)
    batch = bertgeom.encode([s for _, s in genomes], model=default_tiny, return_tensors="pt")
    with torch.inference_mode():
        logits = bundle.model(**batch).logits.numpy()
    from bertgeom.model.infer import infer

    ours = infer(bundle.model, batch["input_ids"].numpy(), 4, "cpu").logits
    assert np.allclose(logits, ours, atol=1e-4)


def test_readme_transformers_example_runs(default_tiny, shared_data, tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(# classify one genome.*?)```", readme, re.S)
    assert block, "the README's transformers example is missing"
    code = block.group(1)
    assert len([ln for ln in code.splitlines() if ln and not ln.startswith("#")]) <= 5
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        name, seq = fh.readline()[1:].strip(), fh.readline().strip()
    (tmp_path / "genome.fasta").write_text(f">{name}\n{seq}\n")
    monkeypatch.chdir(tmp_path)
    status, out, err = _python(code, BERTGEOM_MODELS=str(default_tiny.parent))
    assert status == 0, err
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(default_tiny, dtype="float32")
    batch = bertgeom.encode(str(tmp_path / "genome.fasta"), model=default_tiny,
                            return_tensors="pt")  # fmt: skip
    label = model.config.id2label[model(**batch).logits.argmax(-1).item()]
    assert out.strip().splitlines()[-1] == label
