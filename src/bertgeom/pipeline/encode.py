"""``bertgeom.encode``: genomes or spikes in, a model's input ids and attention mask out.

The same path as ``predict``: each sequence is aligned and QC'd as in ``prepare`` (the spike in
reference coordinates for an ``aligned`` model, the spike as read for a ``raw`` one), then
k-merized with the model's vocabulary. The result is a dict that a transformers model takes as
``model(**batch)``.

Examples
--------
>>> import bertgeom
>>> batch = bertgeom.encode("genomes.fasta.gz", return_tensors="pt")  # doctest: +SKIP
>>> batch["input_ids"].shape, batch.seq_ids[:2], batch.qc_status[:2]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.config import PrepareConfig
from bertgeom.errors import InputError
from bertgeom.io.fasta import FastaRecord, count_records, read_fasta
from bertgeom.model.shipped import find_model
from bertgeom.tokens.vocab import PAD_ID, load_vocabulary

_SEQUENCE = re.compile(r"[ACGTRYSWKMBDHVNUX\-_]+")


class Encoding(dict):
    """``input_ids`` and ``attention_mask`` (rows in input order), plus per row ``seq_ids``
    (FASTA ids, or ``seq0``, ``seq1``, ... for sequences given as strings) and ``qc_status``
    (``good``, ``mediocre`` or ``bad``: a ``bad`` row has no usable spike and should not be
    classified; ``predict`` writes it ``Unassigned``)."""

    seq_ids: list[str]
    qc_status: list[str]


def encode(
    inputs: str | os.PathLike | Sequence[str],
    model: str | os.PathLike | None = None,
    return_tensors: str | None = None,
    jobs: int = 1,
) -> Encoding:
    """Input ids and attention mask of genomes or spikes for a model.

    Parameters
    ----------
    inputs
        A FASTA file (a path object, or a string naming an existing file; plain, gzip, bzip2 or
        xz), one sequence as a string, or a list of sequences (genomes or spikes).
    model
        A model directory or an installed model's name (``NAME`` or ``NAME@VERSION``); None:
        the installed default. Only its tokenizer files are read.
    return_tensors
        None for numpy arrays, ``"pt"`` for torch tensors.
    jobs
        Alignment worker processes.

    Returns
    -------
    Encoding
        ``input_ids`` (n, positions) and ``attention_mask`` (n, positions), int64.

    Raises
    ------
    InputError
        For an unreadable FASTA file, or a string that is neither a file nor a nucleotide
        sequence.
    """
    if return_tensors not in (None, "np", "pt"):
        raise InputError(f"return_tensors must be None, 'np' or 'pt' (got {return_tensors!r})")
    import bertgeom.model.hf_tokenizer  # noqa: F401 - registers the tokenizer with AutoTokenizer
    from bertgeom.pipeline.prepare import process_genomes

    vocab = load_vocabulary(find_model(model))
    records, total = _records(inputs)
    rows = list(process_genomes(records, PrepareConfig(jobs=jobs), total, progress=False))
    column = "spike" if vocab.spec.mode == "aligned" else "raw_spike"
    ids = vocab.encode([r[column] for r in rows])
    mask = (ids != PAD_ID).astype(np.int64)
    out = Encoding(input_ids=ids, attention_mask=mask)
    if return_tensors == "pt":
        import torch

        out = Encoding(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    out.seq_ids = [r["id"] for r in rows]
    out.qc_status = [r["qc_status"] for r in rows]
    return out


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (a long sequence is not a file name)."""
    try:
        return "\n" not in text and Path(text).is_file()
    except (OSError, ValueError):
        return False


def _records(inputs: str | os.PathLike | Sequence[str]) -> tuple[Any, int]:
    """FASTA records of ``inputs`` and their number."""
    if isinstance(inputs, os.PathLike) or (isinstance(inputs, str) and _is_file(inputs)):
        return read_fasta([inputs]), count_records([inputs])
    seqs = [inputs] if isinstance(inputs, str) else list(inputs)
    records = []
    for i, seq in enumerate(seqs):
        clean = "".join(str(seq).split()).upper()
        if not _SEQUENCE.fullmatch(clean):
            shown = seq if len(seq) <= 40 else seq[:37] + "..."
            raise InputError(
                f"sequence {i}: {shown!r} is neither a nucleotide sequence nor an existing file"
            )
        records.append(FastaRecord(f"seq{i}", f"seq{i}", clean, "<sequences>", i))
    return iter(records), len(records)
