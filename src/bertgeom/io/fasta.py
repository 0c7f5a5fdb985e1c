"""Streaming FASTA reading and atomic FASTA writing, plain or gzip-compressed.

The reader never holds more than one record in memory (plus the set of IDs already seen, for
duplicate detection), reads gzip, bzip2 and xz files detected by their magic bytes rather than
their name (standard library decompressors), and
turns every problem with an input file into an :class:`~bertgeom.errors.InputError` whose message
names the file, the record and the line.

Examples
--------
>>> report = FastaReport()
>>> for record in read_fasta(["a.fasta", "b.fasta.gz"], dedupe="keep-first", report=report):
...     print(record.id, len(record.sequence))  # doctest: +SKIP
"""

from __future__ import annotations

import bz2
import gzip as gz
import lzma
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from bertgeom.errors import ConfigError, InputError

__all__ = [
    "DEDUPE_CHOICES",
    "FastaRecord",
    "FastaReport",
    "HeaderLine",
    "count_records",
    "read_fasta",
    "read_records_at",
    "scan_headers",
    "write_fasta",
]

PathArg = str | os.PathLike[str]
Dedupe = Literal["error", "keep-first"]

DEDUPE_CHOICES: tuple[str, ...] = ("error", "keep-first")

_GZIP_MAGIC = b"\x1f\x8b"
# Compressed formats read with the standard library (magic bytes, name, opener).
_READ_COMPRESSION = (
    (b"BZh", "bzip2", bz2.BZ2File),
    (b"\xfd7zXZ\x00", "xz", lzma.LZMAFile),
)
# Compressed formats that are not read (magic bytes, name), so they get a clear error.
_OTHER_COMPRESSION = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7-zip"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
_BLOCK_SIZE = 1 << 20  # bytes parsed at a time (then completed to the end of a line)
_BUFFER_SIZE = 1 << 20  # bytes of the file objects' buffers

# bytes.isspace() characters: removed from sequence lines wherever they are.
_WHITESPACE = b" \t\n\r\x0b\x0c"
# Allowed in an upper-cased sequence: the IUPAC nucleotide codes, U (RNA, read as T), X (read as
# N, unknown) and the gaps '-' and '_'. '_' is there because real published genomes use it: 12
# Andersen-lab consensus sequences in shared/data/genomes.fasta.gz mark a 3-base deletion with
# '___'. Anything else ('*', '.', digits, other letters such as a protein's E, F, L, P, Q) is an
# invalid character.
_SEQUENCE_CHARS = b"ACGTRYSWKMBDHVNUX-_"
# Read as another code: RNA's U is T, X (used by some tools for an unknown base) is N.
_READ_AS = {ord("U"): ord("T"), ord("X"): ord("N")}


def _sequence_table() -> bytes:
    """The ``bytes.translate`` table of sequence lines.

    One pass with it (and ``_WHITESPACE`` deleted) upper-cases a sequence, reads U as T and X as
    N, and turns every character not allowed into NUL, which a fast ``in`` test then finds.
    """
    table = bytearray(256)
    for c in _SEQUENCE_CHARS:
        table[c] = _READ_AS.get(c, c)
        if 65 <= c <= 90:  # the lower-case letter too
            table[c + 32] = table[c]
    return bytes(table)


_SEQUENCE_TABLE = _sequence_table()
# Control bytes that never occur in a text file (tab, line ends, \v and \f are allowed).
_CONTROL = bytes([*range(0, 9), *range(14, 32), 127])
# Errors the gzip module raises on truncated or corrupt input.
_GZIP_ERRORS = (EOFError, zlib.error, gz.BadGzipFile)
# ... and the bz2 and lzma modules (bz2: OSError "Invalid data stream").
_OTHER_ERRORS = (EOFError, lzma.LZMAError, OSError)


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record.

    Attributes
    ----------
    id
        First whitespace-delimited word of the header.
    description
        The whole header line after ``>``, stripped.
    sequence
        Upper case, without whitespace: IUPAC nucleotide codes (``ACGT``, ``N``, and the
        ambiguity codes ``RYSWKMBDHV``) and the gaps ``-`` and ``_`` kept as they are; ``U``
        (RNA) read as ``T`` and ``X`` as ``N``.
    path
        The file the record came from, as given.
    index
        0-based record number within that file (skipped duplicates included).
    """

    id: str
    description: str
    sequence: str
    path: str
    index: int


@dataclass
class FastaReport:
    """What :func:`read_fasta` did, filled in while it reads.

    Attributes
    ----------
    n_records
        Records yielded so far (skipped duplicates not included).
    n_files
        Files read to the end so far.
    duplicates_skipped
        ``(id, path, index)`` of every record dropped by ``dedupe="keep-first"``.
    duplicate_headers
        The whole header line of each of those, in the same order.
    """

    n_records: int = 0
    n_files: int = 0
    duplicates_skipped: list[tuple[str, str, int]] = field(default_factory=list)
    duplicate_headers: list[str] = field(default_factory=list)


def read_fasta(
    paths: Sequence[PathArg] | PathArg,
    dedupe: Dedupe = "error",
    report: FastaReport | None = None,
) -> Iterator[FastaRecord]:
    """Stream the records of one or more FASTA files, in order.

    Arguments and the existence of every file are checked when this function is called; the
    files themselves are read lazily, as the returned iterator is consumed.

    Parameters
    ----------
    paths
        FASTA files, plain or gzip-compressed (detected by content, not by name). A single path
        is accepted too.
    dedupe
        What to do with a record whose ID was already seen (in this file or an earlier one):
        ``"error"`` raises :class:`InputError`; ``"keep-first"`` skips it and appends it to
        ``report.duplicates_skipped``.
    report
        Filled in while reading, if given.

    Returns
    -------
    Iterator[FastaRecord]
        The records, file by file, in file order.

    Raises
    ------
    ConfigError
        If ``dedupe`` is not one of :data:`DEDUPE_CHOICES` (raised at once).
    InputError
        If a file is missing, a directory, empty, not FASTA, not text, a truncated or corrupt
        gzip file, or holds a malformed or duplicate record. Missing files and directories are
        reported at once; the rest when reached, after the records before the problem.
    """
    if dedupe not in DEDUPE_CHOICES:
        raise ConfigError(f"dedupe must be one of: {', '.join(DEDUPE_CHOICES)} (got '{dedupe}')")
    names = _check_paths(paths)
    return _read_all(names, dedupe, FastaReport() if report is None else report)


def count_records(paths: Sequence[PathArg] | PathArg) -> int:
    """Count the records (header lines) in FASTA files quickly, without validating them.

    Meant for progress bars: reads in large blocks and counts lines starting with ``>`` (after
    optional whitespace, as :func:`read_fasta` does).
    Duplicates are counted; an empty file counts 0.

    Parameters
    ----------
    paths
        FASTA files, plain or gzip-compressed. A single path is accepted too.

    Returns
    -------
    int
        The number of header lines in all files together.

    Raises
    ------
    InputError
        If a file is missing, a directory, unreadable, or a truncated or corrupt gzip file.
    """
    names = _check_paths(paths)
    total = 0
    for name in names:
        with _open_binary(name) as fh:
            for block in _read_blocks(fh, name):
                start = _next_header(block, 0)
                while start >= 0:
                    total += 1
                    start = _next_header(block, block.find(b"\n", start) + 1 or len(block))
    return total


def write_fasta(
    records: Iterable[tuple[str, str]],
    path: PathArg,
    gzip: bool | None = None,
    width: int = 0,
) -> int:
    """Write ``(id, sequence)`` pairs as FASTA, atomically.

    The file is written to a temporary file in the same directory and renamed over ``path``
    only when complete, so readers never see a partial file and a failed write leaves none.

    Parameters
    ----------
    records
        ``(id, sequence)`` pairs; the ID becomes the whole header line.
    path
        Output file.
    gzip
        Compress with gzip (``mtime=0``, no file name stored, so equal input gives equal bytes).
        ``None``: compress when ``path`` ends with ``.gz``.
    width
        Sequence line length; ``0`` writes each sequence on one line.

    Returns
    -------
    int
        The number of records written.

    Raises
    ------
    ConfigError
        If ``width`` is negative or the file cannot be created.
    InputError
        If a record has an empty ID or sequence, a line break in either, or a non-ASCII
        sequence.
    """
    if width < 0:
        raise ConfigError(f"width must be >= 0 (got {width})")
    name = os.fsdecode(path)
    compress = name.endswith(".gz") if gzip is None else gzip
    tmp = _temporary_name(name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot write ({exc.strerror})") from exc
    try:
        with open(fd, "wb", buffering=_BUFFER_SIZE) as raw:
            if compress:
                # No mtime and no file name in the header: equal records give equal bytes.
                with gz.GzipFile(
                    fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6
                ) as out:
                    n = _write_records(out, records, name, width)
            else:
                n = _write_records(raw, records, name, width)
            raw.flush()
            os.fsync(raw.fileno())
        try:
            os.replace(tmp, name)
        except OSError as exc:
            raise ConfigError(f"{name}: cannot write ({exc.strerror})") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    return n


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderLine:
    """Where one record starts (see :func:`scan_headers`).

    Attributes
    ----------
    offset
        Byte offset of its header line in the file's (decompressed) content.
    lineno
        1-based line number of its header line.
    index
        0-based record number within the file.
    id, description
        As in :class:`FastaRecord`.
    """

    offset: int
    lineno: int
    index: int
    id: str
    description: str


def scan_headers(path: PathArg) -> Iterator[HeaderLine]:
    """Yield where each record of one FASTA file starts, reading only its header lines.

    One pass over the (decompressed) content in large blocks; sequences are not validated
    (:func:`read_records_at` does that when the records are read). Headers are checked as
    :func:`read_fasta` checks them.

    Raises
    ------
    InputError
        If the file is missing, a directory, empty, a corrupt compressed file, or has a header
        that is not text or has no name.
    """
    name = _check_paths(path)[0]
    index = 0
    lineno = 1  # number of the line that starts at block[pos]
    with _open_binary(name) as fh:
        for block in _read_blocks(fh, name):
            base = fh.tell() - len(block)  # the block's offset in the content (after a BOM)
            pos = 0
            while (start := _next_header(block, pos)) >= 0:
                lineno += block.count(b"\n", pos, start)
                end = block.find(b"\n", start)
                end = len(block) if end < 0 else end
                _, rec_id, description = _parse_header(name, block[start:end], lineno, index)
                yield HeaderLine(base + start, lineno, index, rec_id, description)
                index, pos, lineno = index + 1, end + 1, lineno + 1
            lineno += block.count(b"\n", pos)
    if index == 0:
        raise InputError(f"{name}: file is empty")


def read_records_at(
    path: PathArg, offset: int, lineno: int, index: int, count: int
) -> Iterator[FastaRecord]:
    """Read ``count`` records of one file starting at the header ``offset``, ``lineno`` and
    ``index`` of :func:`scan_headers` (validated and reported as :func:`read_fasta` does).

    Plain files seek; compressed ones are decompressed up to ``offset`` (a compressed stream
    cannot be entered in the middle).
    """
    name = _check_paths(path)[0]
    if count <= 0:
        return
    with _open_binary(name) as fh:
        fh.seek(offset)
        records = _parse_records(name, _read_blocks(fh, name), index=index, lineno=lineno)
        for n, (record, _) in enumerate(records, 1):
            yield record
            if n == count:
                break


def _read_all(names: list[str], dedupe: Dedupe, report: FastaReport) -> Iterator[FastaRecord]:
    """Yield the records of all files, applying ``dedupe``."""
    seen: dict[str, tuple[int, int]] = {}  # id -> (file number, record index)
    for file_no, name in enumerate(names):
        with _open_binary(name) as fh:
            for record, lineno in _parse_records(name, _read_blocks(fh, name)):
                first = seen.get(record.id)
                if first is None:
                    seen[record.id] = (file_no, record.index)
                    report.n_records += 1
                    yield record
                elif dedupe == "error":
                    raise InputError(
                        f"{name}: record '{record.id}' (line {lineno}) is a duplicate of the "
                        f"record in {names[first[0]]} (record {first[1] + 1}); "
                        "use --dedupe keep-first to keep only the first"
                    )
                else:
                    report.duplicates_skipped.append((record.id, name, record.index))
                    report.duplicate_headers.append(record.description)
        report.n_files += 1


def _parse_records(
    name: str, blocks: Iterable[bytes], index: int = 0, lineno: int = 1
) -> Iterator[tuple[FastaRecord, int]]:
    """Yield ``(record, header line number)`` for each record in one file's blocks.

    Each block holds whole lines (see :func:`_read_blocks`), so the lines between two headers
    are one slice of a block, however they are wrapped; only headers are visited in Python.
    ``index`` and ``lineno`` are the record number and line number of the first block's first
    line (not 0 and 1 when reading from a header in the middle of a file).
    """
    header: tuple[int, str, str] | None = None  # (line number, id, description)
    chunks: list[bytes] = []  # sequence lines of the current record, as slices of blocks
    # lineno: number of the line that starts at block[pos]
    for block in blocks:
        pos = 0
        while (start := _next_header(block, pos)) >= 0:
            body = block[pos:start]
            _add_body(name, header, chunks, body, lineno)
            lineno += _count_newlines(body)
            end = block.find(b"\n", start)
            end = len(block) if end < 0 else end
            if header is not None:
                yield _finish_record(name, header, index, chunks), header[0]
                index += 1
                chunks = []
            header = _parse_header(name, block[start:end], lineno, index)
            pos, lineno = end + 1, lineno + 1
        body = block[pos:]
        _add_body(name, header, chunks, body, lineno)
        lineno += _count_newlines(body)
    if header is None:
        raise InputError(f"{name}: file is empty")
    yield _finish_record(name, header, index, chunks), header[0]


def _next_header(block: bytes, pos: int) -> int:
    """Start of the first header line at or after ``pos`` (a line start), or -1 if none.

    A header line starts with ``>``, after optional whitespace. Searching for ``>`` is a fast
    ``memchr``; the rare ``>`` elsewhere (inside a sequence line) is skipped here and reported
    by the sequence check.
    """
    gt = block.find(b">", pos)
    while gt >= 0:
        if gt == pos or block[gt - 1] == 10:  # 10 == ord("\n")
            return gt
        start = block.rfind(b"\n", pos, gt) + 1 or pos
        if not block[start:gt].strip():
            return start
        gt = block.find(b">", gt + 1)
    return -1


def _count_newlines(body: bytes) -> int:
    """``body.count(b"\\n")``, with a fast path for the common single line."""
    first = body.find(b"\n")  # memchr
    if first < 0:
        return 0
    return 1 if first == len(body) - 1 else body.count(b"\n")


def _add_body(
    name: str, header: tuple[int, str, str] | None, chunks: list[bytes], body: bytes, lineno: int
) -> None:
    """Append sequence lines to the current record, or check they are blank before the first."""
    if header is not None:
        chunks.append(body)  # blank lines too: whitespace is removed later
    elif body.strip():
        for offset, line in enumerate(body.split(b"\n")):
            if line.strip():
                _reject_preamble(name, line, lineno + offset)


def _parse_header(name: str, line: bytes, lineno: int, index: int) -> tuple[int, str, str]:
    """Return ``(lineno, id, description)`` of a header line (leading ``>`` included)."""
    raw = line.strip()[1:]
    if b"\r" in raw:  # a line end inside a line: the file ends its lines with CR alone
        raise InputError(
            f"{name}: line {lineno} holds carriage returns: lines end with CR alone (classic "
            "Mac OS); convert them to LF, e.g. with tr '\\r' '\\n'"
        )
    text = _decode_text(raw)
    if text is None and len(raw.translate(None, _CONTROL)) == len(raw):
        raise InputError(
            f"{name}: header at line {lineno} is not UTF-8 text (an older export in Latin-1? "
            "re-encode the file as UTF-8, e.g. with iconv -f latin1 -t utf-8)"
        )
    if text is None:
        raise InputError(f"{name}: not a FASTA file (not text at line {lineno})")
    description = text.strip()
    words = description.split(None, 1)
    if not words:
        raise InputError(f"{name}: record {index + 1} (line {lineno}) has an empty name")
    return lineno, words[0], description


def _finish_record(
    name: str, header: tuple[int, str, str], index: int, chunks: list[bytes]
) -> FastaRecord:
    """Validate a record's sequence lines and build the record."""
    lineno, rec_id, description = header
    sequence = b"".join(chunks).translate(_SEQUENCE_TABLE, _WHITESPACE)
    if not sequence:
        raise InputError(f"{name}: record '{rec_id}' (line {lineno}) has no sequence")
    if b"\0" in sequence:
        _raise_bad_line(name, rec_id, lineno, chunks)
    return FastaRecord(rec_id, description, sequence.decode("ascii"), name, index)


def _raise_bad_line(name: str, rec_id: str, header_lineno: int, chunks: list[bytes]) -> None:
    """Raise the error for the first sequence line holding a character not allowed there."""
    for offset, line in enumerate(b"".join(chunks).split(b"\n"), 1):
        if b"\0" not in line.translate(_SEQUENCE_TABLE, _WHITESPACE):
            continue
        lineno = header_lineno + offset
        text = _decode_text(line)
        if text is None:
            raise InputError(f"{name}: not a FASTA file (not text at line {lineno})")
        allowed = set((_SEQUENCE_CHARS + _WHITESPACE).decode("ascii"))
        bad = next(c for c in text if not (c.isascii() and c.upper() in allowed))
        raise InputError(
            f"{name}: record '{rec_id}' line {lineno}: invalid character '{bad}' in sequence"
        )
    raise AssertionError("unreachable: a bad character was found in the joined lines")


def _reject_preamble(name: str, line: bytes, lineno: int) -> None:
    """Raise the error for a non-blank line before the first header."""
    if _decode_text(line) is None:
        raise InputError(f"{name}: not a FASTA file (not text at line {lineno})")
    raise InputError(f"{name}: not a FASTA file (line {lineno} does not start with '>')")


def _decode_text(data: bytes) -> str | None:
    """``data`` decoded as UTF-8, or None if it is not text (bad UTF-8, control characters).

    Tab, line ends, vertical tab and form feed count as text.
    """
    if len(data.translate(None, _CONTROL)) != len(data):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_blocks(fh: BinaryIO, name: str) -> Iterator[bytes]:
    """Yield a file's content in blocks of about ``_BLOCK_SIZE`` bytes that end at a line end.

    A UTF-8 byte-order mark at the start of the file is dropped. Decompression errors become
    :class:`InputError` when they happen, after the blocks before them.
    """
    first = True
    try:
        while data := fh.read(_BLOCK_SIZE):
            if not data.endswith(b"\n"):
                data += fh.readline()
            if first:
                data, first = data.removeprefix(_UTF8_BOM), False
            yield data
    except _GZIP_ERRORS as exc:
        raise _gzip_error(name, exc, _compression(fh)) from exc
    except _OTHER_ERRORS as exc:
        kind = _compression(fh)
        if kind == "gzip" or kind is None:
            raise
        raise _gzip_error(name, exc, kind) from exc


def _compression(fh: BinaryIO) -> str | None:
    """``gzip``, ``bzip2``, ``xz`` or None (plain), from the reader's type."""
    for kind, cls in (("gzip", gz.GzipFile), ("bzip2", bz2.BZ2File), ("xz", lzma.LZMAFile)):
        if isinstance(fh, cls):
            return kind
    return None


def _gzip_error(name: str, exc: BaseException, kind: str | None = "gzip") -> InputError:
    """The InputError for a truncated or corrupt compressed file."""
    return InputError(f"{name}: truncated or corrupt {kind or 'gzip'} file ({exc})")


# --- files -------------------------------------------------------------------------------------


def _check_paths(paths: Sequence[PathArg] | PathArg) -> list[str]:
    """Return the paths as strings after checking each exists and is not a directory."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    names = [os.fsdecode(p) for p in paths]
    for name in names:
        if os.path.isdir(name):
            raise InputError(f"{name}: is a directory, not a FASTA file")
        if not os.path.exists(name):
            raise InputError(f"{name}: no such file")
    return names


@contextmanager
def _open_binary(name: str) -> Iterator[BinaryIO]:
    """Open a file for binary reading, decompressing it if it starts with the gzip magic."""
    try:
        raw = open(name, "rb", buffering=_BUFFER_SIZE)  # noqa: SIM115 (closed below)
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a directory, not a FASTA file") from exc
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror})") from exc
    with raw:
        head = raw.peek(8)[:8]
        for magic, _kind, opener in _READ_COMPRESSION:
            if head.startswith(magic):
                with opener(raw, mode="rb") as unpacked:
                    yield unpacked  # type: ignore[misc]
                return
        for magic, kind in _OTHER_COMPRESSION:
            if head.startswith(magic):
                raise InputError(
                    f"{name}: {kind}-compressed; FASTA is read plain or gzip-, bzip2- or "
                    "xz-compressed (decompress it, or recompress it with gzip)"
                )
        if head[:2] != _GZIP_MAGIC:
            yield raw
            return
        with gz.GzipFile(fileobj=raw, mode="rb") as fh:
            yield fh


# --- writing -----------------------------------------------------------------------------------


def _write_records(out: BinaryIO, records: Iterable[tuple[str, str]], name: str, width: int) -> int:
    """Write records to an open binary stream; return how many."""
    n = 0
    for n, (rec_id, sequence) in enumerate(records, 1):
        _check_writable(name, n, rec_id, sequence)
        data = sequence.encode("ascii")
        if width and len(data) > width:
            lines = [data[i : i + width] for i in range(0, len(data), width)]
            data = b"\n".join(lines)
        out.write(b">" + rec_id.encode("utf-8") + b"\n" + data + b"\n")
    return n


def _check_writable(name: str, n: int, rec_id: str, sequence: str) -> None:
    """Raise InputError if a record cannot be written as valid FASTA."""
    problem = None
    if not rec_id.strip():
        problem = "its id is empty"
    elif not sequence:
        problem = "its sequence is empty"
    elif any(c in rec_id or c in sequence for c in "\n\r"):
        problem = "it contains a line break"
    elif not sequence.isascii():
        problem = "its sequence is not ASCII"
    if problem is not None:
        raise InputError(f"{name}: cannot write record {n} ('{rec_id}'): {problem}")


def _temporary_name(name: str) -> str:
    """A new, hidden file name in the directory of ``name``."""
    directory, base = os.path.split(name)
    return os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.tmp")


def _remove_quietly(name: str) -> None:
    """Remove a file if it exists."""
    with suppress(FileNotFoundError):
        os.remove(name)


def check_fasta(paths: Sequence[PathArg] | PathArg) -> None:
    """Fail early on an unusable input: read the first record of every file.

    Raises the same :class:`InputError` as :func:`read_fasta` for a missing, empty, binary or
    non-FASTA file (or a first record without a sequence), before any heavy work starts.
    """
    for name in _check_paths(paths):
        next(iter(read_fasta([name])), None)
