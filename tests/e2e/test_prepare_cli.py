"""``bertgeom prepare`` end to end: files, exit codes, exact error text."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow.parquet as pq
import pytest

from bertgeom.cli import main
from bertgeom.genome.sequence import reverse_complement
from bertgeom.resources import reference_genome


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def read_records(path) -> list[tuple[str, str]]:
    recs, name = [], None
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                name = line[1:].strip()
            else:
                recs.append((name, line.strip()))
    return recs


@pytest.fixture(scope="module")
def ci_records(shared_data):
    return read_records(shared_data / "ci_genomes.fasta.gz")


def test_prepare_ci_genomes_with_labels(shared_data, tmp_path, capsys):
    out = tmp_path / "prep"
    code, stdout, _ = run_cli(
        [
            "prepare",
            str(shared_data / "ci_genomes.fasta.gz"),
            "--labels",
            str(shared_data / "labels.tsv"),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert "prepared 48 genomes" in stdout
    assert "alpha" in stdout and "identical spikes kept within one split" in stdout
    table = pq.read_table(out / "spikes.parquet").to_pandas()
    assert len(table) == 48
    assert (table.qc_status == "good").all()
    assert (table.spike.str.len() == 3822).all()
    assert set(table.split) == {"train", "val", "test"}
    alpha = table[table.label == "alpha"]
    assert all("S:N501Y" in m and "S:H69-" in m for m in alpha.mutations)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "prepare"
    assert len(manifest["inputs"]) == 2 and all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert manifest["config"]["jobs"] == 2 and manifest["config"]["seed"] == 42
    assert {"python", "bertgeom", "mappy", "pyarrow"} <= set(manifest["versions"])
    counts = (out / "counts.tsv").read_text().splitlines()
    assert counts[0].split("\t") == [
        "class",
        "n",
        "train",
        "val",
        "test",
        "good",
        "mediocre",
        "bad",
    ]
    assert len(counts) == 9
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_labels_from_one_fasta_per_class(ci_records, tmp_path, capsys):
    for cls, start in (("alpha", 0), ("delta", 18)):
        with open(tmp_path / f"{cls}.fasta", "w") as fh:
            for name, seq in ci_records[start : start + 2]:
                fh.write(f">{name}\n{seq}\n")
    code, _, _ = run_cli(
        [
            "prepare",
            str(tmp_path / "alpha.fasta"),
            str(tmp_path / "delta.fasta"),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    df = pq.read_table(tmp_path / "o" / "spikes.parquet").to_pandas()
    assert list(df.label) == ["alpha", "alpha", "delta", "delta"]


def test_file_stems_label_per_file(ci_records, tmp_path, capsys):
    (tmp_path / "gamma.fasta").write_text("".join(f">{n}\n{s}\n" for n, s in ci_records[:2]))
    (tmp_path / "misc.fasta").write_text("".join(f">{n}\n{s}\n" for n, s in ci_records[2:3]))
    args = [str(tmp_path / "gamma.fasta"), str(tmp_path / "misc.fasta")]
    code, stdout, _ = run_cli(["prepare", *args, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0
    assert "genomes without a label: 1" in stdout
    df = pq.read_table(tmp_path / "o" / "spikes.parquet").to_pandas()
    assert df.label.fillna("-").tolist() == ["gamma", "gamma", "-"]
    assert df.label_raw.fillna("-").tolist() == ["gamma.fasta", "gamma.fasta", "-"]
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["summary"]["labels_source"] == "file names"
    assert manifest["summary"]["unlabelled"] == 1


def test_qc_rejects_gross_indels_mixed_sites_and_long_genomes(tmp_path, capsys):
    ref = reference_genome()
    s0 = 21562
    records = [
        ("del1500", ref[: s0 + 1000] + ref[s0 + 2500 :]),
        ("del90", ref[: s0 + 1500] + ref[s0 + 1590 :]),
        ("mixed", ref[: s0 + 100] + "S" * 12 + ref[s0 + 112 :]),
        ("double", ref + ref),
        ("rna", ref.replace("T", "U").lower()),
    ]
    fasta = tmp_path / "qc.fasta"
    fasta.write_text("".join(f">{n}\n{s}\n" for n, s in records))
    config = tmp_path / "c.toml"
    config.write_text("[prepare]\nmax_indel_good = 80\n")
    out = str(tmp_path / "o")
    code, _, _ = run_cli(["prepare", str(fasta), "--config", str(config), "--out", out], capsys)
    assert code == 0
    df = pq.read_table(tmp_path / "o" / "spikes.parquet").to_pandas().set_index("id")
    assert df.qc_status.to_dict() == {
        "del1500": "bad",
        "del90": "mediocre",
        "mixed": "bad",
        "double": "bad",
        "rna": "good",
    }
    assert df.loc["del1500", "qc_reasons"].startswith("spike length 2322 nt outside 3700-3900")
    assert df.loc["del90", "qc_reasons"] == "large deletion: 90 nt deleted from the spike > 80"
    assert df.loc["mixed", "qc_reasons"] == "12 ambiguous bases > 10"
    assert df.loc["double", "qc_reasons"] == "genome length 59806 nt > 45000"
    assert df.loc["rna", "spike"] == df.loc["rna", "raw_spike"] == ref[s0 : s0 + 3822]


def test_unknown_minimap2_preset_is_an_error(tmp_path, capsys):
    fasta = tmp_path / "g.fasta"
    fasta.write_text(f">a\n{reference_genome()}\n")
    config = tmp_path / "c.toml"
    config.write_text('[prepare]\npreset = "bogus"\n')
    out = str(tmp_path / "o")
    code, _, err = run_cli(["prepare", str(fasta), "--config", str(config), "--out", out], capsys)
    assert code == 2
    assert err.startswith("error: config: preset must be a minimap2 preset: one of asm5, ")
    assert err.endswith("(got 'bogus')\n")


def test_every_input_genome_gets_a_row_with_its_status(tmp_path, capsys):
    ref = reference_genome()
    rng = random.Random(0)
    records = [
        ("reference", ref),
        ("revcomp", reverse_complement(ref)),
        ("no_spike", ref[:20000]),
        ("half_spike", ref[:23500]),
        ("junk", "".join(rng.choice("ACGT") for _ in range(5000))),
        ("tiny", "ACGTACGT"),
        ("n_heavy", ref[:22000] + "N" * 400 + ref[22400:]),
        ("gapped", ref[:21770] + "---" + ref[21773:]),
    ]
    fasta = tmp_path / "mixed.fasta"
    fasta.write_text("".join(f">{n}\n{s}\n" for n, s in records))
    code, _, _ = run_cli(["prepare", str(fasta), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0
    df = pq.read_table(tmp_path / "o" / "spikes.parquet").to_pandas().set_index("id")
    assert list(df.index) == [n for n, _ in records]
    assert df.loc["reference", "qc_status"] == "good"
    assert df.loc["reference", "mutations"] == ""
    assert df.loc["revcomp", "qc_status"] == "good" and df.loc["revcomp", "strand"] == -1
    assert df.loc["revcomp", "spike"] == df.loc["reference", "spike"]
    assert df.loc["no_spike", "qc_status"] == "bad"
    assert df.loc["no_spike", "qc_reasons"].startswith("spike not aligned: the genome aligns")
    assert df.loc["half_spike", "qc_reasons"].startswith("partial genome: spike not covered at")
    assert df.loc["junk", "qc_status"] == "bad" and df.loc["tiny", "qc_status"] == "bad"
    assert df.loc["n_heavy", "qc_status"] == "bad"
    assert "spike N fraction" in df.loc["n_heavy", "qc_reasons"]
    # '---' in the input is a deletion of 3 bases: S:V70- after normalisation of 21771-21773
    assert df.loc["gapped", "gap_chars_removed"] == 3
    assert df.loc["gapped", "mutations"].count("-") == 1
    assert df.split.isna().all() and df.label.isna().all()  # no labels given


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "error: {path}: no such file\n"),
        ("", "error: {path}: file is empty\n"),
        ("hello\nworld\n", "error: {path}: not a FASTA file (line 1 does not start with '>')\n"),
        (
            ">a\nACGT\n>a\nACGT\n",
            "error: {path}: record 'a' (line 3) is a duplicate of the record "
            "in {path} (record 1); use --dedupe keep-first to keep only the first\n",
        ),
        (">a\n>b\nACGT\n", "error: {path}: record 'a' (line 1) has no sequence\n"),
        (
            ">a\nACGT\n>b\nAC\nG*T\n",
            "error: {path}: record 'b' line 5: invalid character '*' in sequence\n",
        ),
    ],
)
def test_bad_fasta_gives_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "in.fasta"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli(["prepare", str(path), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert err == message.format(path=path)
    assert not (tmp_path / "o" / "spikes.parquet").exists()


def test_dedupe_keep_first_reports(tmp_path, capsys):
    ref = reference_genome()
    path = tmp_path / "dup.fasta"
    path.write_text(f">a\n{ref}\n>a\n{ref}\n>b\n{ref}\n")
    code, stdout, _ = run_cli(
        ["prepare", str(path), "--out", str(tmp_path / "o"), "--dedupe", "keep-first", "--quiet"],
        capsys,
    )
    assert code == 0
    assert "duplicate ids skipped (keep-first): 1" in stdout
    df = pq.read_table(tmp_path / "o" / "spikes.parquet").to_pandas()
    assert list(df.id) == ["a", "b"]


def test_unknown_label_names_file_and_line(tmp_path, capsys):
    fasta = tmp_path / "g.fasta"
    fasta.write_text(f">a\n{reference_genome()}\n")
    labels = tmp_path / "labels.tsv"
    labels.write_text("seq_id\tclass\na\tsigma\n")
    code, _, err = run_cli(
        ["prepare", str(fasta), "--labels", str(labels), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert err == (
        f"error: {labels}: line 2: unknown class 'sigma' for 'a' (expected one of alpha, beta, "
        "gamma, delta, omicron, lambda, mu, other, a Pango lineage, a Nextstrain clade or a WHO "
        "name)\n"
    )


def test_lineages_and_headerless_labels(tmp_path, capsys):
    fasta = tmp_path / "g.fasta"
    ref = reference_genome()
    fasta.write_text(f">a\n{ref}\n>b\n{ref}\n>c\n{ref}\n")
    labels = tmp_path / "labels.tsv"
    labels.write_text("a\tB.1.1.7\nb\t21K (Omicron)\nc\tother\n")
    code, _, _ = run_cli(
        ["prepare", str(fasta), "--labels", str(labels), "--out", str(tmp_path / "o"), "--quiet"],
        capsys,
    )
    assert code == 0
    df = pq.read_table(tmp_path / "o" / "spikes.parquet").to_pandas()
    assert list(df.label) == ["alpha", "omicron", "other"]
    assert list(df.label_raw) == ["B.1.1.7", "21K (Omicron)", "other"]


def test_bad_option_values(tmp_path, capsys):
    fasta = tmp_path / "g.fasta"
    fasta.write_text(f">a\n{reference_genome()}\n")
    code, _, err = run_cli(
        ["prepare", str(fasta), "--out", str(tmp_path / "o"), "--jobs", "0"], capsys
    )
    assert code == 2 and err == "error: config: jobs must be in 1..1024\n"


def test_prepare_split_by_lineage_holds_lineages_out(shared_data, tmp_path, capsys):
    out = tmp_path / "prep"
    args = ["prepare", str(shared_data / "ci_genomes.fasta.gz"), "--labels",
            str(shared_data / "labels.tsv"), "--out", str(out), "--quiet", "--split-by",
            "lineage", "--holdout", "B.1.621.1,P.1.17"]  # fmt: skip
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0
    table = pq.read_table(out / "spikes.parquet").to_pandas()
    held = table[table.held_out]
    names = sorted(set(held.lineage))
    assert f"in test): {len(held)} genomes of {len(names)} lineages: {', '.join(names)}" in stdout
    assert {"B.1.621.1", "P.1.17"} <= set(names) and (held.split == "test").all()
    assert not table[~table.held_out].lineage.isin(names).any()  # a lineage in one split
    assert not held.label.isin(["alpha", "beta", "lambda"]).any()  # one lineage each: kept
    assert table.lineage.notna().all() and (table[table.label == "beta"].lineage == "B.1.351").all()
    # without a lineage column the split cannot be made: a clear error before any alignment
    labels = tmp_path / "labels.tsv"
    labels.write_text("".join(f"{name}\talpha\n" for name in ("x", "y")))
    args[3] = str(labels)
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert err == (
        f"error: {labels}: --split-by lineage needs a lineage column (one of pango_nearest, "
        "pango_lineage, lineage, or name it with lineage_column)\n"
    )
