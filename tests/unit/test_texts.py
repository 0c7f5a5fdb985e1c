"""The text input of ``analyze-encoder`` (io/texts.py) and the shipped English sentences."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.errors import InputError
from bertgeom.io.texts import read_texts
from bertgeom.resources import english_sentences


def test_labels_comments_and_blank_lines(tmp_path):
    f = tmp_path / "in.tsv"
    f.write_text("# a comment\nThe cat sat.\tpets\n\nRain fell.\tweather\nA dog.\tpets\n")
    t = read_texts(f)
    assert t.texts == ("The cat sat.", "Rain fell.", "A dog.")
    assert t.classes == ("pets", "weather")
    assert t.labels.tolist() == [0, 1, 0]
    assert t.lines.tolist() == [2, 4, 5]
    first = read_texts(f, max_sequences=2)
    assert len(first) == 2 and first.labels.tolist() == [0, 1]


def test_without_labels(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("one line\r\ntwo lines\n")
    t = read_texts(f)
    assert t.texts == ("one line", "two lines") and t.labels is None and t.classes == ("all",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tx\nb\n", "line 1 has a label and line 2 has none"),
        ("a\nb\tx\n", "line 2 has a label and line 1 has none"),
        ("a\tx\ty\n", "line 1: 2 tabs"),
        ("\tx\n", "line 1: empty text"),
        ("a\t \n", "line 1: empty label"),
        ("# only a comment\n\n", "no text lines"),
    ],
)
def test_bad_input_names_the_line(tmp_path, text, message):
    f = tmp_path / "in.txt"
    f.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_texts(f)
    assert str(f) in str(err.value) and "\n" not in str(err.value)


def test_shipped_sentences():
    t = read_texts(english_sentences())
    assert len(t) == 300 and len(set(t.texts)) == 300
    assert t.classes == ("nature", "kitchen", "science", "travel")
    assert np.bincount(t.labels).tolist() == [75, 75, 75, 75]
    header = english_sentences().read_text(encoding="utf-8").split("\n", 6)[:6]
    assert any("licence" in line for line in header)  # source and licence stated in the file
