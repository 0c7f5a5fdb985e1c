"""``-`` as an input file: standard input, copied once to a temporary file.

Stages read their genome files twice (a quick count for progress, then the records), which a
pipe does not allow, so standard input is spooled to a file named ``stdin`` in a temporary
folder (removed afterwards) and read from there like any other input, compressed or not.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from bertgeom.errors import InputError

#: The name that stands for standard input.
STDIN = "-"


@contextmanager
def spooled_stdin(
    paths: Sequence[str | os.PathLike], stream: BinaryIO | None = None
) -> Iterator[list[str]]:
    """``paths`` as strings, with ``-`` replaced by a temporary copy of standard input
    (``stream``, default ``sys.stdin.buffer``) for the duration of the block.

    Raises
    ------
    InputError
        When ``-`` is given more than once, or standard input is a terminal (nothing piped in).
    """
    names = [os.fspath(p) for p in paths]
    n = names.count(STDIN)
    if n == 0:
        yield names
        return
    if n > 1:
        raise InputError("'-' (standard input) can be given only once")
    source = stream if stream is not None else sys.stdin.buffer
    if stream is None and sys.stdin.isatty():
        raise InputError("'-': standard input is a terminal; pipe the FASTA in (... | bertgeom)")
    with tempfile.TemporaryDirectory(prefix="bertgeom-stdin-") as tmp:
        path = Path(tmp) / "stdin"
        with open(path, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        yield [str(path) if name == STDIN else name for name in names]
