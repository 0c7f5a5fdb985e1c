"""Tests for bertgeom.io.fasta: streaming reader, record counter and atomic writer."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import os
import random
import re
from pathlib import Path

import pytest

from bertgeom.errors import ConfigError, InputError
from bertgeom.io import fasta
from bertgeom.io.fasta import FastaRecord, FastaReport, count_records, read_fasta, write_fasta

CI_GENOMES = Path(__file__).resolve().parents[3] / "shared/data/ci_genomes.fasta.gz"
TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"
DEDUPE_HINT = "use --dedupe keep-first to keep only the first"


def write(path: Path, content: str | bytes, compress: bool = False) -> Path:
    """Write ``content`` to ``path`` (gzip-compressed if asked) and return the path."""
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def pairs(records: list[FastaRecord]) -> list[tuple[str, str]]:
    return [(r.id, r.sequence) for r in records]


def read_error(paths, **kwargs) -> str:
    """The message of the InputError raised while reading ``paths`` to the end."""
    with pytest.raises(InputError) as info:
        list(read_fasta(paths, **kwargs))
    return str(info.value)


def read_error_from(records) -> str:
    """The message of the InputError raised while consuming an iterator of records."""
    with pytest.raises(InputError) as info:
        list(records)
    return str(info.value)


def random_sequence(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


# --- good input ---------------------------------------------------------------------------------


def test_plain_file_fields(tmp_path):
    path = write(tmp_path / "a.fasta", ">seq1 first genome\nACGT\n>seq2\tsecond\nGGCC\n")
    records = list(read_fasta([path]))
    assert records == [
        FastaRecord("seq1", "seq1 first genome", "ACGT", str(path), 0),
        FastaRecord("seq2", "seq2\tsecond", "GGCC", str(path), 1),
    ]


def test_record_is_frozen(tmp_path):
    path = write(tmp_path / "a.fasta", ">a\nAC\n")
    record = next(read_fasta([path]))
    with pytest.raises(AttributeError):
        record.sequence = "GG"  # type: ignore[misc]


def test_single_path_and_str_path_accepted(tmp_path):
    path = write(tmp_path / "a.fasta", ">a\nAC\n")
    assert pairs(list(read_fasta(path))) == pairs(list(read_fasta([str(path)])))


def test_path_is_kept_as_given(tmp_path, monkeypatch):
    write(tmp_path / "a.fasta", ">a\nAC\n>b\n")
    monkeypatch.chdir(tmp_path)
    assert next(read_fasta(["a.fasta"])).path == "a.fasta"
    assert read_error(["a.fasta"]) == "a.fasta: record 'b' (line 3) has no sequence"


def test_gzip_detected_by_content_not_extension(tmp_path):
    text = ">a\nACGT\n>b\nTTTT\n"
    gz_named_plain = write(tmp_path / "plain.fasta.gz", text)
    plain_named_gz = write(tmp_path / "packed.fasta", text, compress=True)
    expected = [("a", "ACGT"), ("b", "TTTT")]
    assert pairs(list(read_fasta([gz_named_plain]))) == expected
    assert pairs(list(read_fasta([plain_named_gz]))) == expected


def test_many_files_in_order_with_report(tmp_path):
    first = write(tmp_path / "1.fasta", ">a\nAC\n>b\nGT\n")
    second = write(tmp_path / "2.fasta.gz", ">c\nTT\n", compress=True)
    third = write(tmp_path / "3.fa", ">d\nCC\n>e\nGG\n")
    report = FastaReport()
    records = list(read_fasta([first, second, third], report=report))
    assert [(r.id, r.path, r.index) for r in records] == [
        ("a", str(first), 0),
        ("b", str(first), 1),
        ("c", str(second), 0),
        ("d", str(third), 0),
        ("e", str(third), 1),
    ]
    assert report == FastaReport(n_records=5, n_files=3, duplicates_skipped=[])


def test_no_paths_yields_nothing():
    assert list(read_fasta([])) == []


def test_wrapped_and_one_line_give_identical_records(tmp_path):
    rng = random.Random(1)
    sequences = {f"r{i}": random_sequence(rng, 50 + 37 * i) for i in range(5)}
    one_line = "".join(f">{k}\n{v}\n" for k, v in sequences.items())
    wrapped = "".join(
        f">{k}\n" + "".join(v[i : i + 7] + "\n" for i in range(0, len(v), 7))
        for k, v in sequences.items()
    )
    a = list(read_fasta([write(tmp_path / "one.fa", one_line)]))
    b = list(read_fasta([write(tmp_path / "wrapped.fa", wrapped)]))
    assert pairs(a) == pairs(b) == list(sequences.items())


def test_crlf_line_ends(tmp_path):
    path = write(tmp_path / "a.fa", ">a desc\r\nACGT\r\nTT\r\n\r\n>b\r\nGG\r\n")
    records = list(read_fasta([path]))
    assert pairs(records) == [("a", "ACGTTT"), ("b", "GG")]
    assert records[0].description == "a desc"


def test_lowercase_is_upper_cased(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nacgtn\nAcGt\n")
    assert pairs(list(read_fasta([path]))) == [("a", "ACGTNACGT")]


def test_iupac_and_gap_codes_kept(tmp_path):
    codes = "ACGTRYSWKMBDHVN-_"
    path = write(tmp_path / "a.fa", f">a\n{codes.lower()}\n>b\n{codes}\n")
    assert pairs(list(read_fasta([path]))) == [("a", codes), ("b", codes)]


def test_rna_u_is_read_as_t_and_x_as_n(tmp_path):
    path = write(tmp_path / "a.fa", ">rna\nACGUuacg\n>x\nACXTxN\n")
    assert pairs(list(read_fasta([path]))) == [("rna", "ACGTTACG"), ("x", "ACNTNN")]


def test_blank_lines_and_whitespace_ignored(tmp_path):
    content = "\n  \n\t>a  first  \n  AC GT \n\n\t TT\t\n \n  >b\n G G\n\n"
    records = list(read_fasta([write(tmp_path / "a.fa", content)]))
    assert pairs(records) == [("a", "ACGTTT"), ("b", "GG")]
    assert records[0].description == "a  first"


def test_utf8_byte_order_mark_dropped(tmp_path):
    path = write(tmp_path / "a.fa", b"\xef\xbb\xbf>a\nAC\n")
    assert pairs(list(read_fasta([path]))) == [("a", "AC")]


def test_last_line_without_newline(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n>b\nGT")
    assert pairs(list(read_fasta([path]))) == [("a", "AC"), ("b", "GT")]


def test_gt_inside_header_is_part_of_it(tmp_path):
    path = write(tmp_path / "a.fa", ">a x>y\nAC\n")
    assert [r.description for r in read_fasta([path])] == ["a x>y"]


TRICKY = (
    b"\xef\xbb\xbf\n>r1 one\r\nACGT\r\n\r\nacgt\r\n  >r2\n"
    + b"A" * 40
    + b"\n  CC  \n\n>r3\nN\n>r4\nGG"
)
TRICKY_RECORDS = [("r1", "ACGTACGT"), ("r2", "A" * 40 + "CC"), ("r3", "N"), ("r4", "GG")]


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 8, 13, 64, 1 << 20])
def test_block_boundaries_do_not_matter(tmp_path, monkeypatch, block_size):
    monkeypatch.setattr(fasta, "_BLOCK_SIZE", block_size)
    plain = write(tmp_path / "a.fa", TRICKY)
    packed = write(tmp_path / "a.fa.gz", TRICKY, compress=True)
    assert pairs(list(read_fasta([plain]))) == TRICKY_RECORDS
    assert pairs(list(read_fasta([packed]))) == TRICKY_RECORDS
    assert count_records([plain, packed]) == 8
    bad = write(tmp_path / "bad.fa", TRICKY + b"\nGG\nG@\n")
    assert read_error([bad]) == f"{bad}: record 'r4' line 15: invalid character '@' in sequence"


# --- errors: files ------------------------------------------------------------------------------


def test_missing_file_reported_at_call_time(tmp_path):
    good = write(tmp_path / "a.fa", ">a\nAC\n")
    missing = tmp_path / "missing.fa"
    with pytest.raises(InputError) as info:
        read_fasta([good, missing])  # not iterated: checked before any reading
    assert str(info.value) == f"{missing}: no such file"


def test_directory(tmp_path):
    with pytest.raises(InputError) as info:
        read_fasta([tmp_path])
    assert str(info.value) == f"{tmp_path}: is a directory, not a FASTA file"


def test_file_deleted_after_call_is_missing(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n")
    records = read_fasta([path])
    path.unlink()
    assert read_error_from(records) == f"{path}: no such file"


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\t\r\n\n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path / "a.fa", content)
    assert read_error([path]) == f"{path}: file is empty"


@pytest.mark.parametrize("content", [b"", b" \n\n"])
def test_empty_gzip(tmp_path, content):
    path = write(tmp_path / "a.fa.gz", content, compress=True)
    assert read_error([path]) == f"{path}: file is empty"


def test_empty_file_after_good_one_names_the_empty_one(tmp_path):
    good = write(tmp_path / "a.fa", ">a\nAC\n")
    empty = write(tmp_path / "b.fa", "")
    assert read_error([good, empty]) == f"{empty}: file is empty"


def test_not_fasta(tmp_path):
    path = write(tmp_path / "a.tsv", "seq_id\tclass\nx\talpha\n")
    assert read_error([path]) == f"{path}: not a FASTA file (line 1 does not start with '>')"


def test_not_fasta_counts_blank_lines(tmp_path):
    path = write(tmp_path / "a.txt", "\n\n  hello\n>a\nAC\n")
    assert read_error([path]) == f"{path}: not a FASTA file (line 3 does not start with '>')"


def test_not_fasta_gzip(tmp_path):
    path = write(tmp_path / "a.tsv.gz", "seq_id\tclass\n", compress=True)
    assert read_error([path]) == f"{path}: not a FASTA file (line 1 does not start with '>')"


def test_truncated_gzip_raises_after_earlier_records(tmp_path, monkeypatch):
    monkeypatch.setattr(fasta, "_BLOCK_SIZE", 256)
    rng = random.Random(2)
    content = "".join(f">r{i}\n{random_sequence(rng, 400)}\n" for i in range(300))
    data = gzip.compress(content.encode(), mtime=0)
    path = write(tmp_path / "a.fa.gz", data[: len(data) * 3 // 4])
    seen = []
    with pytest.raises(InputError) as info:
        for record in read_fasta([path]):
            seen.append(record.id)
    assert str(info.value) == f"{path}: truncated or corrupt gzip file ({TRUNCATED})"
    assert 0 < len(seen) < 300
    assert seen == [f"r{i}" for i in range(len(seen))]


def test_gzip_missing_trailer(tmp_path):
    data = gzip.compress(b">a\nACGT\n", mtime=0)
    path = write(tmp_path / "a.fa.gz", data[:-8])
    assert read_error([path]) == f"{path}: truncated or corrupt gzip file ({TRUNCATED})"


def test_gzip_magic_only(tmp_path):
    path = write(tmp_path / "a.fa", b"\x1f\x8b")
    assert read_error([path]) == f"{path}: truncated or corrupt gzip file ({TRUNCATED})"


def test_corrupt_gzip_crc(tmp_path):
    data = gzip.compress(b">a\nACGT\n", mtime=0)
    path = write(tmp_path / "a.fa.gz", data[:-8] + b"\0\0\0\0" + data[-4:])
    message = read_error([path])
    assert message.startswith(f"{path}: truncated or corrupt gzip file (CRC check failed")


def test_corrupt_gzip_stream(tmp_path):
    data = bytearray(gzip.compress(b">a\n" + b"ACGT" * 1000 + b"\n", mtime=0))
    data[12:20] = b"\xff" * 8  # inside the deflate stream
    path = write(tmp_path / "a.fa.gz", bytes(data))
    assert read_error([path]).startswith(f"{path}: truncated or corrupt gzip file (")


@pytest.mark.parametrize(
    "junk",
    [bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "été".encode("latin-1")],
)
def test_binary_junk(tmp_path, junk):
    path = write(tmp_path / "a.fa", junk)
    assert read_error([path]) == f"{path}: not a FASTA file (not text at line 1)"


def test_binary_in_sequence_line(tmp_path):
    path = write(tmp_path / "a.fa", b">a\nACGT\nAC\x00\x01GT\n")
    assert read_error([path]) == f"{path}: not a FASTA file (not text at line 3)"


def test_binary_in_header(tmp_path):
    path = write(tmp_path / "a.fa", b">a\nACGT\n>b\x00\x01\nAC\n")
    assert read_error([path]) == f"{path}: not a FASTA file (not text at line 3)"


def test_cr_only_line_ends_are_named(tmp_path):
    path = write(tmp_path / "a.fa", b">a\rACGT\r>b\rAC\r")
    assert read_error([path]).startswith(f"{path}: line 1 holds carriage returns")
    crlf = write(tmp_path / "b.fa", b">a\r\nACGT\r\n")
    assert pairs(read_fasta([crlf])) == [("a", "ACGT")]


def test_header_in_latin1_is_named(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nACGT\n>Espa\u00f1a/1\nAC\n".encode("latin-1"))
    assert read_error([path]).startswith(f"{path}: header at line 3 is not UTF-8 text")


@pytest.mark.parametrize(
    ("kind", "magic"),
    [("zip", b"PK\x03\x04\x14\x00"), ("zstd", b"\x28\xb5\x2f\xfd\x00")],
)
def test_other_compressions_are_named(tmp_path, kind, magic):
    path = write(tmp_path / "a.fa.x", magic + bytes(32))
    assert read_error([path]) == (
        f"{path}: {kind}-compressed; FASTA is read plain or gzip-, bzip2- or xz-compressed "
        "(decompress it, or recompress it with gzip)"
    )


@pytest.mark.parametrize(("kind", "pack"), [("bzip2", bz2.compress), ("xz", lzma.compress)])
def test_bzip2_and_xz_read_like_plain_files(tmp_path, kind, pack):
    text = b">a desc\nACGT\nAC\n>b\nGGTT\n"
    plain = write(tmp_path / "a.fa", text)
    packed = write(tmp_path / "a.fa.x", pack(text))  # detected by content, not by name
    assert list(read_fasta([packed])) == [
        dataclasses.replace(r, path=str(packed)) for r in read_fasta([plain])
    ]
    assert count_records([packed]) == 2


@pytest.mark.parametrize(("kind", "pack"), [("bzip2", bz2.compress), ("xz", lzma.compress)])
def test_truncated_bzip2_and_xz_are_named(tmp_path, kind, pack):
    data = pack(b">a\n" + b"ACGT" * 5000 + b"\n")
    path = write(tmp_path / "a.fa.x", data[: len(data) // 2])
    assert read_error([path]).startswith(f"{path}: truncated or corrupt {kind} file (")


# --- errors: records ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [">", "> ", ">\t  "])
def test_empty_name(tmp_path, header):
    path = write(tmp_path / "a.fa", f"{header}\nACGT\n")
    assert read_error([path]) == f"{path}: record 1 (line 1) has an empty name"


def test_empty_name_later_record(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n\n>\nGT\n")
    assert read_error([path]) == f"{path}: record 2 (line 4) has an empty name"


def test_id_is_first_word_after_leading_space(tmp_path):
    path = write(tmp_path / "a.fa", "> a b\nAC\n")
    record = next(read_fasta([path]))
    assert (record.id, record.description) == ("a", "a b")


def test_no_sequence_in_the_middle(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n>b\n\n>c\nGT\n")
    assert read_error([path]) == f"{path}: record 'b' (line 3) has no sequence"


def test_no_sequence_at_the_end(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n>b desc\n  \n")
    assert read_error([path]) == f"{path}: record 'b' (line 3) has no sequence"


def test_records_before_an_error_are_yielded(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n>b\n")
    records = read_fasta([path])
    assert next(records).id == "a"
    assert read_error_from(records) == f"{path}: record 'b' (line 3) has no sequence"


@pytest.mark.parametrize(
    ("line", "char"),
    [
        ("AC1T", "1"),
        ("AC@T", "@"),
        ("AC>T", ">"),
        ("ac.t", "."),
        ("ACéT", "é"),
        ("acét", "é"),
        ("AC*T", "*"),  # a stop: a protein, not a genome
        ("ACZT", "Z"),  # letters that are no IUPAC nucleotide code
        ("acet", "e"),
        ("MFVFLVLLPLVSSQ", "F"),
    ],
)
def test_invalid_character(tmp_path, line, char):
    path = write(tmp_path / "a.fa", f">x\nAC\n>rec one\nACGT\n\n{line}\nACGT\n")
    expected = f"{path}: record 'rec' line 6: invalid character '{char}' in sequence"
    assert read_error([path]) == expected


def test_duplicate_within_file(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n>b\nGG\n>a\nTT\n")
    expected = (
        f"{path}: record 'a' (line 5) is a duplicate of the record in {path} (record 1); "
        + DEDUPE_HINT
    )
    assert read_error([path]) == expected


def test_duplicate_across_files(tmp_path):
    first = write(tmp_path / "1.fa", ">a\nAC\n>b\nGG\n")
    second = write(tmp_path / "2.fa.gz", ">c\nAA\n>b\nCC\n", compress=True)
    expected = (
        f"{second}: record 'b' (line 3) is a duplicate of the record in {first} (record 2); "
        + DEDUPE_HINT
    )
    assert read_error([first, second]) == expected
    assert read_error([first, second], dedupe="error") == expected


def test_keep_first_skips_and_reports_duplicates(tmp_path):
    first = write(tmp_path / "1.fa", ">a\nAC\n>b\nGG\n>a\nTT\n")
    second = write(tmp_path / "2.fa", ">c\nAA\n>b\nCC\n>a\nGG\n")
    report = FastaReport()
    records = list(read_fasta([first, second], dedupe="keep-first", report=report))
    assert [(r.id, r.sequence, r.path, r.index) for r in records] == [
        ("a", "AC", str(first), 0),
        ("b", "GG", str(first), 1),
        ("c", "AA", str(second), 0),
    ]
    assert report.duplicates_skipped == [
        ("a", str(first), 2),
        ("b", str(second), 1),
        ("a", str(second), 2),
    ]
    assert (report.n_records, report.n_files) == (3, 2)


def test_keep_first_still_validates_duplicates(tmp_path):
    path = write(tmp_path / "a.fa", ">a\nAC\n>a\nA1\n")
    expected = f"{path}: record 'a' line 4: invalid character '1' in sequence"
    assert read_error([path], dedupe="keep-first") == expected


def test_invalid_dedupe_reported_at_call_time(tmp_path):
    with pytest.raises(ConfigError) as info:
        read_fasta([tmp_path / "missing.fa"], dedupe="drop")  # type: ignore[arg-type]
    assert str(info.value) == "dedupe must be one of: error, keep-first (got 'drop')"


# --- count_records ------------------------------------------------------------------------------


def test_count_records(tmp_path):
    plain = write(tmp_path / "a.fa", ">a\nAC\nGT\n\n  >b\nGG\n>a dup\nTT")
    packed = write(tmp_path / "b.fa.gz", ">c\nAC\n>d\nGG\n", compress=True)
    empty = write(tmp_path / "c.fa", "")
    assert count_records([plain]) == 3
    assert count_records(packed) == 2
    assert count_records([plain, packed, empty]) == 5


def test_count_records_matches_reader(tmp_path):
    rng = random.Random(3)
    content = "".join(f">r{i} d\n{random_sequence(rng, rng.randint(1, 300))}\n" for i in range(500))
    path = write(tmp_path / "a.fa.gz", content, compress=True)
    assert count_records([path]) == len(list(read_fasta([path]))) == 500


def test_count_records_errors(tmp_path):
    missing = tmp_path / "missing.fa"
    with pytest.raises(InputError, match=re.escape(f"{missing}: no such file")):
        count_records([missing])
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path}: is a directory, not a FASTA file")
    ):
        count_records([tmp_path])
    data = gzip.compress(b">a\nACGT\n", mtime=0)
    truncated = write(tmp_path / "t.fa.gz", data[:-8])
    with pytest.raises(InputError) as info:
        count_records([truncated])
    assert str(info.value) == f"{truncated}: truncated or corrupt gzip file ({TRUNCATED})"


# --- write_fasta --------------------------------------------------------------------------------

RECORDS = [("a", "ACGTACGTAC"), ("b", "N"), ("c", "GG-TR")]


@pytest.mark.parametrize("name", ["out.fasta", "out.fasta.gz"])
@pytest.mark.parametrize("width", [0, 1, 4, 60])
def test_write_round_trip(tmp_path, name, width):
    path = tmp_path / name
    assert write_fasta(RECORDS, path, width=width) == len(RECORDS)
    assert pairs(list(read_fasta([path]))) == RECORDS
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_write_exact_bytes(tmp_path):
    path = tmp_path / "out.fa"
    write_fasta(RECORDS, path, width=4)
    assert path.read_text() == ">a\nACGT\nACGT\nAC\n>b\nN\n>c\nGG-T\nR\n"
    write_fasta(RECORDS, path)
    assert path.read_text() == ">a\nACGTACGTAC\n>b\nN\n>c\nGG-TR\n"


def test_write_gzip_flag_overrides_suffix(tmp_path):
    plain = tmp_path / "plain.fa.gz"
    packed = tmp_path / "packed.fa"
    write_fasta(RECORDS, plain, gzip=False)
    write_fasta(RECORDS, packed, gzip=True)
    assert plain.read_bytes().startswith(b">a\n")
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()


def test_write_gzip_is_reproducible(tmp_path):
    one, two = tmp_path / "one.fa.gz", tmp_path / "two.fa.gz"
    write_fasta(iter(RECORDS), one)
    write_fasta(iter(RECORDS), two)
    assert one.read_bytes() == two.read_bytes()


def test_write_respects_umask(tmp_path):
    path = tmp_path / "out.fa"
    write_fasta(RECORDS, path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_write_failure_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.fa.gz"
    write_fasta(RECORDS, path)
    before = path.read_bytes()

    def failing():
        yield "x", "ACGT"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_fasta(failing(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.fa.gz"]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (("", "AC"), "its id is empty"),
        (("a", ""), "its sequence is empty"),
        (("a\nb", "AC"), "it contains a line break"),
        (("a", "AC\nGT"), "it contains a line break"),
        (("a", "ACé"), "its sequence is not ASCII"),
    ],
)
def test_write_bad_record(tmp_path, record, problem):
    path = tmp_path / "out.fa"
    with pytest.raises(InputError) as info:
        write_fasta([("ok", "AC"), record], path)
    assert str(info.value) == f"{path}: cannot write record 2 ('{record[0]}'): {problem}"
    assert os.listdir(tmp_path) == []


def test_write_bad_width(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("width must be >= 0 (got -1)")):
        write_fasta(RECORDS, tmp_path / "out.fa", width=-1)
    assert os.listdir(tmp_path) == []


def test_write_missing_directory(tmp_path):
    path = tmp_path / "no" / "out.fa"
    with pytest.raises(ConfigError) as info:
        write_fasta(RECORDS, path)
    assert str(info.value) == f"{path}: cannot write (No such file or directory)"


def test_write_over_directory(tmp_path):
    target = tmp_path / "out.fa"
    target.mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"{target}: cannot write (")):
        write_fasta(RECORDS, target)
    assert os.listdir(tmp_path) == ["out.fa"]


# --- real data ----------------------------------------------------------------------------------


def test_ci_genomes():
    assert CI_GENOMES.is_file(), f"the shared CI data set is missing: {CI_GENOMES}"
    records = list(read_fasta([CI_GENOMES]))
    assert len(records) == 48
    assert len({r.id for r in records}) == 48
    assert all(len(r.sequence) > 29000 for r in records)
    assert count_records(CI_GENOMES) == 48
