"""Record planning for shards: header offsets read back the same records as the streaming
reader (wrapped lines, CRLF, a byte-order mark, gzip), shards cut at fixed record counts
across files, duplicate ids decided over all inputs, ``--records A:B`` parsed and clipped."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.errors import ConfigError, InputError
from bertgeom.io.fasta import read_fasta, read_records_at, scan_headers
from bertgeom.scale.records import parse_records, plan_shards


def _write(path, records, width=None, newline="\n", bom=False, compress=False):
    lines = []
    for name, seq in records:
        lines.append(f">{name} some description")
        step = width or len(seq)
        lines += [seq[i : i + step] for i in range(0, len(seq), step)]
    data = (("\ufeff" if bom else "") + newline.join(lines) + newline).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


RECORDS = [(f"r{i}", "ACGTN"[i % 5] * (7 + 3 * i)) for i in range(9)]


@pytest.mark.parametrize(
    "kw",
    [{}, {"width": 4}, {"newline": "\r\n", "width": 5}, {"bom": True}, {"compress": True}],
)
def test_headers_read_back_the_records_the_reader_yields(tmp_path, kw):
    path = _write(tmp_path / "x.fa", RECORDS, **kw)
    every = list(read_fasta(path))
    heads = list(scan_headers(path))
    assert [h.id for h in heads] == [r.id for r in every]
    assert [h.description for h in heads] == [r.description for r in every]
    for h in heads:
        assert list(read_records_at(path, h.offset, h.lineno, h.index, 1)) == [every[h.index]]
    assert list(read_records_at(path, heads[3].offset, heads[3].lineno, 3, 4)) == every[3:7]


def test_a_bad_sequence_read_at_an_offset_names_its_real_line(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text(">a\nAC\nGT\n>b\nAC\nG*T\n")
    (b,) = [h for h in scan_headers(path) if h.id == "b"]
    with pytest.raises(InputError, match=r"record 'b' line 6: invalid character '\*'"):
        list(read_records_at(path, b.offset, b.lineno, b.index, 1))


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3), shard=st.integers(1, 7))
def test_shards_cover_every_record_once_in_order(tmp_path_factory, sizes, shard):
    folder = tmp_path_factory.mktemp("shards")
    paths, n = [], 0
    for k, size in enumerate(sizes):
        recs = [(f"f{k}_{i}", "ACGT" * (i + 1)) for i in range(size)]
        paths.append(_write(folder / f"{k}.fa", recs, width=3))
        n += size
    shards = plan_shards(paths, shard)
    assert [s.start for s in shards] == list(range(0, n, shard))
    assert shards[-1].stop == n and all(s.stop - s.start <= shard for s in shards)
    got = [
        r.id
        for s in shards
        for seg in s.segments
        for r in read_records_at(seg.path, seg.offset, seg.lineno, seg.index, seg.count)
    ]
    assert got == [r.id for r in read_fasta(paths)]


def test_duplicates_are_decided_over_all_inputs(tmp_path):
    a = _write(tmp_path / "a.fa", RECORDS[:4])
    b = _write(tmp_path / "b.fa", [RECORDS[5], RECORDS[1], RECORDS[6]])
    shards = plan_shards([a, b], 2, "keep-first")
    dups = [d for s in shards for d in s.duplicates]
    assert [(d.position, d.id, d.path, d.index) for d in dups] == [(5, "r1", b, 1)]
    assert [s.number for s in shards if s.duplicates] == [2]  # not the shard of the first r1
    with pytest.raises(InputError, match=r"b.fa: record 'r1' \(line 3\) is a duplicate .*a.fa"):
        plan_shards([a, b], 2, "error")


def test_a_record_range_keeps_its_global_positions(tmp_path):
    a = _write(tmp_path / "a.fa", RECORDS)
    shards = plan_shards([a], 2, records=(3, 8))
    assert [(s.start, s.stop) for s in shards] == [(3, 5), (5, 7), (7, 8)]
    assert plan_shards([a], 4, records=(7, 100))[0].stop == 9  # clipped
    assert plan_shards([a], 4, records=(20, 30)) == []


@pytest.mark.parametrize("bad", ["3", "5:2", "a:b", "-1:3", "1:2:3"])
def test_bad_record_ranges_are_config_errors(bad):
    with pytest.raises(ConfigError, match="--records"):
        parse_records(bad)
    assert parse_records(" 2 : 9 ") == (2, 9)
