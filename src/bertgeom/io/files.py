"""Atomic file writing, hashing, text reading (plain or gzip, UTF-8 checked) and small tables
(TSV, JSON); :func:`reading` turns a library's error on a damaged file into one line."""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bertgeom.errors import ArtifactError, BertgeomError, InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The path is absolute, so libraries that read ``scheme:rest`` as a URI (pyarrow) take a
    relative folder such as ``cuda:99`` as the local folder it is."""
    target = Path(os.path.abspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write pretty-printed JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_tsv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Write a tab-separated table atomically (``None`` -> empty cell)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else v for v in row])


def read_tsv(path: str | os.PathLike, what: str = "TSV") -> tuple[list[str], list[list[str]]]:
    """Read a TSV file (plain or gzip, UTF-8) into (header, rows), skipping blank lines and
    ``#`` comments.

    Returns the first non-comment line as header. Raises InputError for a missing, empty,
    compressed-otherwise or non-UTF-8 file.
    """
    p = Path(path)
    lines = read_text(p, what).splitlines()
    rows = [ln.split("\t") for ln in lines if ln.strip() and not ln.startswith("#")]
    if not rows:
        raise InputError(f"{p}: file is empty")
    return rows[0], rows[1:]


_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGIC = ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_CONTROL = bytes([*range(0, 9), *range(14, 32), 127])


def read_text(path: str | os.PathLike, what: str = "text") -> str:
    """A user's text file (labels, config), plain or gzip-compressed (detected by content), as
    UTF-8 without a byte-order mark.

    Raises
    ------
    InputError
        Missing, a folder, unreadable, compressed another way, a damaged gzip file, or not
        UTF-8 text (the message names the first bad line, as the FASTA reader does).
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a {what} file")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    for magic, kind in _OTHER_MAGIC:
        if data.startswith(magic):
            raise InputError(
                f"{p}: {kind}-compressed; read plain or gzip-compressed (decompress it)"
            )
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InputError(f"{p}: truncated or corrupt gzip file ({exc})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{p}: not a UTF-8 {what} file (line {line}: byte 0x{data[exc.start]:02x}; "
            "save it as UTF-8)"
        ) from None
    if len(data.translate(None, _CONTROL)) != len(data):
        bad = next(i for i, b in enumerate(data) if b in _CONTROL)
        line = data.count(b"\n", 0, bad) + 1
        raise InputError(f"{p}: not a {what} file (not text at line {line})")
    return text


def _brief(exc: BaseException) -> str:
    """One line about ``exc``: its first message line (at most 160 characters), else its type."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


@contextlib.contextmanager
def reading(
    path: str | os.PathLike, what: str, fix: str = "re-run the stage that wrote it"
) -> Iterator[None]:
    """Turn any error raised while parsing ``path`` into one :class:`ArtifactError` line:
    ``<path>: damaged or not a <what> (<detail>) (<fix>)``; an operating-system error says what
    stopped the read instead. Errors of bertgeom itself and running out of memory pass."""
    try:
        yield
    except (BertgeomError, MemoryError):
        raise
    except OSError as exc:
        if exc.errno is not None:
            why = (exc.strerror or _brief(exc)).lower()
            raise ArtifactError(f"{path}: cannot be read ({why})") from None
        raise ArtifactError(f"{path}: damaged or not a {what} ({_brief(exc)}) ({fix})") from None
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":
            raise
        raise ArtifactError(f"{path}: damaged or not a {what} ({_brief(exc)}) ({fix})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a JSON file written by a stage; a damaged one is an :class:`ArtifactError`."""
    with reading(path, what):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib Figure atomically, format from the file suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
