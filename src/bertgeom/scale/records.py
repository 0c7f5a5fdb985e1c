"""Plan FASTA inputs into record shards: one pass over the header lines of every file.

A shard is a run of consecutive records in input order (it may span files), described by where
its records start in each file, so a worker reads just them. The plan also takes the
duplicate-id decisions that :func:`bertgeom.io.fasta.read_fasta` takes while reading, so shards
can be processed anywhere, in any order, and still give the rows of one local run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bertgeom.errors import ConfigError, InputError
from bertgeom.io.fasta import DEDUPE_CHOICES, HeaderLine, scan_headers

#: Records per shard when none is given.
DEFAULT_SHARD_SIZE = 2048


@dataclass(frozen=True)
class Segment:
    """``count`` consecutive records of one file, the first at ``offset``/``lineno``/``index``
    (see :class:`~bertgeom.io.fasta.HeaderLine`)."""

    path: str
    offset: int
    lineno: int
    index: int
    count: int


@dataclass(frozen=True)
class Duplicate:
    """A record whose id repeats an earlier record's (``dedupe = "keep-first"``): it gets a
    ``bad`` row, not a classification. ``position`` is its record number over all inputs."""

    position: int
    id: str
    path: str
    index: int
    header: str


@dataclass(frozen=True)
class Shard:
    """Records ``[start, stop)`` of all inputs (0-based, over every file in order)."""

    number: int
    start: int
    stop: int
    segments: tuple[Segment, ...]
    duplicates: tuple[Duplicate, ...] = ()

    @property
    def name(self) -> str:
        """A stable name: the record range (the same records give the same name)."""
        return f"records-{self.start:012d}-{self.stop:012d}"


def parse_records(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``: records A (included) to B (excluded), 0-based over all inputs."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError(f"--records must be A:B with integers 0 <= A <= B (got '{text}')")
    a, b = int(match[1]), int(match[2])
    if a > b:
        raise ConfigError(f"--records {text}: A must not exceed B")
    return a, b


def check_shard_size(shard_size: int) -> int:
    """``shard_size`` when it is an integer >= 1, else a :class:`ConfigError`."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard size must be an integer >= 1 (got {shard_size!r})")
    return shard_size


def plan_shards(
    paths: Sequence[str],
    shard_size: int = DEFAULT_SHARD_SIZE,
    dedupe: str = "error",
    records: tuple[int, int] | None = None,
) -> list[Shard]:
    """Shards of ``shard_size`` records over ``paths`` (in order), restricted to the record
    range ``records`` when given (clipped to the records there are).

    Duplicate ids are decided over all inputs, as :func:`bertgeom.io.fasta.read_fasta` does:
    with ``dedupe="error"`` the first repeated id raises its :class:`InputError`; with
    ``"keep-first"`` each repeat is listed in its shard's ``duplicates``.
    """
    check_shard_size(shard_size)
    if dedupe not in DEDUPE_CHOICES:
        raise ConfigError(f"dedupe must be one of: {', '.join(DEDUPE_CHOICES)} (got '{dedupe}')")
    lo, hi = records if records is not None else (0, None)
    shards: list[Shard] = []
    run: list[tuple[str, HeaderLine]] = []
    dups: list[Duplicate] = []
    start = lo
    for position, (path, head, dup) in enumerate(_decided(paths, dedupe)):
        if position < lo:
            continue
        if hi is not None and position >= hi:
            break
        run.append((path, head))
        if dup is not None:
            dups.append(dup)
        if len(run) == shard_size:
            shards.append(_shard(len(shards), start, run, dups))
            start, run, dups = start + len(run), [], []
    if run:
        shards.append(_shard(len(shards), start, run, dups))
    return shards


def _decided(
    paths: Sequence[str], dedupe: str
) -> Iterator[tuple[str, HeaderLine, Duplicate | None]]:
    """Every record's file and header line, with its duplicate decision (None: first of its
    id), in input order."""
    seen: dict[str, tuple[int, int]] = {}  # id -> (file number, record index)
    position = 0
    for file_no, path in enumerate(paths):
        for head in scan_headers(path):
            first = seen.get(head.id)
            dup = None
            if first is None:
                seen[head.id] = (file_no, head.index)
            elif dedupe == "error":
                raise InputError(
                    f"{path}: record '{head.id}' (line {head.lineno}) is a duplicate of the "
                    f"record in {paths[first[0]]} (record {first[1] + 1}); "
                    "use --dedupe keep-first to keep only the first"
                )
            else:
                dup = Duplicate(position, head.id, path, head.index, head.description)
            yield path, head, dup
            position += 1


def _shard(
    number: int, start: int, run: list[tuple[str, HeaderLine]], dups: list[Duplicate]
) -> Shard:
    segments: list[Segment] = []
    for path, head in run:
        last = segments[-1] if segments else None
        if last is not None and last.path == path and last.index + last.count == head.index:
            segments[-1] = Segment(path, last.offset, last.lineno, last.index, last.count + 1)
        else:
            segments.append(Segment(path, head.offset, head.lineno, head.index, 1))
    return Shard(number, start, start + len(run), tuple(segments), tuple(dups))
