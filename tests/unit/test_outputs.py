"""Where a stage writes (bertgeom.io.outputs): never onto inputs, one writer, no stale files."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from bertgeom.errors import OutputError
from bertgeom.io.outputs import check_outputs, output_lock, prune, writing


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.fasta").write_text(">a\nACGT\n")
    return tmp_path


@pytest.mark.parametrize(
    ("output", "how"),
    [
        ("in/a.fasta", "is"),
        ("in", "contains"),
        (".", "contains"),
        ("in/a.fasta/x", "lies inside"),
    ],
)
def test_an_output_that_is_contains_or_lies_inside_an_input_is_refused(tree, output, how):
    with pytest.raises(OutputError, match=f"the output {how} the input"):
        check_outputs([tree / "in" / "a.fasta"], [tree / output])


def test_inputs_reached_through_links_are_inputs_too(tree):
    a = tree / "in" / "a.fasta"
    (tree / "sym.fasta").symlink_to(a)
    os.link(a, tree / "hard.fasta")
    (tree / "dirlink").symlink_to(tree / "in")
    for out in ("sym.fasta", "hard.fasta", "dirlink/new.tsv"):
        with pytest.raises(OutputError):
            check_outputs([a, tree / "in"], [tree / out])
    check_outputs([a], [tree / "in" / "b.tsv", "-", None])  # a sibling, stdout: fine


def _try_lock(path, queue):
    try:
        with output_lock(path):
            queue.put("locked")
    except OutputError as err:
        queue.put(str(err))


def test_a_second_writer_is_refused_while_the_first_holds_the_output(tmp_path):
    out = tmp_path / "prep"
    ctx = mp.get_context("fork")
    with output_lock(out), output_lock(out):  # re-entrant within one process
        queue = ctx.Queue()
        child = ctx.Process(target=_try_lock, args=(out, queue))
        child.start()
        child.join(30)
        message = queue.get(timeout=5)
    assert message.startswith(f"{out}: another bertgeom run (pid {os.getpid()}) is writing")
    assert not (tmp_path / ".prep.lock").exists()  # released and removed
    queue = ctx.Queue()
    child = ctx.Process(target=_try_lock, args=(out, queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == "locked"


def test_a_failed_stage_leaves_no_folder_it_created(tmp_path):
    out = tmp_path / "new" / "deep" / "out"
    with pytest.raises(RuntimeError), writing(out):
        raise RuntimeError("stage failed")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError), writing(kept):
        (kept / "checkpoint.pt").write_text("resume me")
        raise RuntimeError("stage failed")
    assert (kept / "checkpoint.pt").is_file()  # a folder with content stays (resume)


def _manifest(folder, names):
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)
    doc = {"outputs": [{"path": n, "sha256": "x"} for n in names]}
    (folder / "manifest.json").write_text(json.dumps(doc))


def test_a_rewritten_folder_keeps_no_stale_output(tmp_path):
    out = tmp_path / "analyze"
    out.mkdir()
    _manifest(out, ["cone.tsv", "gates.tsv", "figures/gates.png"])
    (out / "notes.txt").write_text("the user's own file")
    with writing(out, fresh=False):
        assert not (out / "manifest.json").exists()  # nothing vouches for a folder in flux
        _manifest(out, ["cone.tsv"])
    assert sorted(p.name for p in out.iterdir()) == ["cone.tsv", "manifest.json", "notes.txt"]
    with writing(out):  # fresh: the old outputs go before the stage starts
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
        _manifest(out, ["gates.tsv"])


def test_prune_never_leaves_the_folder(tmp_path):
    (tmp_path / "outside.txt").write_text("x")
    (tmp_path / "out").mkdir()
    assert prune(tmp_path / "out", ["../outside.txt", "/etc/hostname", "missing"]) == []
    assert (tmp_path / "outside.txt").is_file()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_path_that_cannot_be_the_output_is_one_line(tmp_path, kind):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    bad = {"dir": tmp_path / "file", "file": tmp_path / "folder"}[kind]
    for out in (bad, tmp_path / "file" / "below"):
        with pytest.raises(OutputError) as info, writing(out, kind=kind):
            pass
        assert "\n" not in str(info.value)
