"""Text inputs of ``bertgeom analyze-encoder``: one sequence per line, an optional label column.

Format (docs/formats.md, "analyze-encoder input"): UTF-8 text, plain or gzip-compressed; each
line is ``TEXT`` or ``TEXT<TAB>LABEL``; blank lines and lines starting with ``#`` are skipped.
Either every line has a label or none does. TEXT is whatever the model's own tokenizer reads
(English sentences for a text encoder, space-separated k-mers or a nucleotide sequence for a
bertgeom model directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertgeom.errors import InputError
from bertgeom.io.files import read_text


@dataclass(frozen=True)
class TextInputs:
    """The sequences of a text input file, in file order.

    Attributes
    ----------
    texts : (sequence,) the text of each line
    lines : (sequence,) its 1-based line number in the file
    labels : (sequence,) class ids (None without a label column)
    classes : the label names, in order of first appearance (``("all",)`` without labels)
    """

    texts: tuple[str, ...]
    lines: np.ndarray
    labels: np.ndarray | None
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def read_texts(path: str | os.PathLike, max_sequences: int = 0) -> TextInputs:
    """Read a text input file (see the module docstring); at most ``max_sequences`` sequences
    (the first ones; 0 = all).

    Raises
    ------
    InputError
        Not a UTF-8 text file, no sequence in it, a line with more than one tab, an empty text
        or label, or labels on some lines but not on others (the message names the line).
    """
    p = Path(path)
    texts: list[str] = []
    lines: list[int] = []
    names: list[str | None] = []
    for number, raw in enumerate(read_text(p, "text input").splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) > 2:
            raise InputError(
                f"{p}: line {number}: {len(parts) - 1} tabs; expected TEXT or TEXT<TAB>LABEL"
            )
        text = parts[0].strip()
        label = parts[1].strip() if len(parts) == 2 else None
        if not text:
            raise InputError(f"{p}: line {number}: empty text before the tab")
        if label == "":
            raise InputError(f"{p}: line {number}: empty label after the tab")
        if names and (label is None) != (names[0] is None):
            first = lines[0]
            has, lacks = (number, first) if label is not None else (first, number)
            raise InputError(
                f"{p}: line {has} has a label and line {lacks} has none: label every line "
                "(TEXT<TAB>LABEL) or none"
            )
        texts.append(text)
        lines.append(number)
        names.append(label)
        if max_sequences and len(texts) == max_sequences:
            break
    if not texts:
        raise InputError(f"{p}: no text lines (blank lines and '#' comments are skipped)")
    if names[0] is None:
        return TextInputs(tuple(texts), np.asarray(lines), None, ("all",))
    classes = tuple(dict.fromkeys(n for n in names if n is not None))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([index[n] for n in names if n is not None], dtype=np.int64)
    return TextInputs(tuple(texts), np.asarray(lines), labels, classes)
