"""Where a stage writes: never onto its inputs, one writer at a time, no stale or empty folders.

Every stage that writes calls :func:`check_outputs` before any work (an output that is,
contains or lies inside one of its inputs is refused, symbolic links and hard links followed)
and writes inside :func:`writing`, which

1. checks the output path: an existing file where a folder is expected (or the reverse), a
   path under a regular file, or a folder holding another stage's outputs (its manifest names
   that stage) is a one-line :class:`~bertgeom.errors.OutputError`;
2. takes the output's lock, ``.<name>.lock`` beside it (``fcntl.flock``, released by the
   kernel when the process dies, even on ``kill -9``): a second run into the same output is
   refused at once, naming the process that holds it;
3. for a folder: removes the files its old ``manifest.json`` lists, then that manifest (while
   the folder is being rewritten, no manifest vouches for it); a stage that resumes in its
   folder (``train --resume``) keeps them until it succeeds, and then
4. removes the files the old manifest listed that the new one does not (an ``analyze --only
   cone`` into an earlier analysis leaves no stale table), and the folders left empty by that;
5. after the stage fails: removes the folders it created if they are empty (a failed run
   leaves no empty folder; a folder holding a training checkpoint stays, to be resumed).

Locks are re-entrant within a process, so a stage may call another one that locks the same
output (``train`` runs ``calibrate`` into its model folder).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from bertgeom.errors import OutputError

PathArg = str | os.PathLike
MANIFEST = "manifest.json"

_HELD: dict[Path, int] = {}  # lock path -> depth, for the locks this process holds
if hasattr(os, "register_at_fork"):  # a forked child holds none of them itself
    os.register_at_fork(after_in_child=_HELD.clear)


def resolve(path: PathArg) -> Path:
    """``path`` made absolute with every symbolic link followed (it need not exist)."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def check_outputs(inputs: Iterable[PathArg | None], outputs: Iterable[PathArg | None]) -> None:
    """Refuse an output that is, contains or lies inside an input.

    Parameters
    ----------
    inputs, outputs
        Files or folders (``None`` and ``-``, standard output, are skipped). Paths are compared
        after following symbolic links; an existing output that is a hard link to an input
        counts as that input.

    Raises
    ------
    OutputError
        Naming the output, the input and what to do.
    """
    ins = [(p, resolve(p)) for p in inputs if p is not None and os.fspath(p) != "-"]
    for o in outputs:
        if o is None or os.fspath(o) == "-":
            continue
        ro = resolve(o)
        for i, ri in ins:
            if ro == ri or _same_file(ro, ri):
                how = "is"
            elif ri.is_relative_to(ro):
                how = "contains"
            elif ro.is_relative_to(ri):
                how = "lies inside"
            else:
                continue
            raise OutputError(
                f"{o}: the output {how} the input {i} (it would be overwritten; "
                "choose an output outside the inputs)"
            )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: PathArg, kind: str = "dir") -> None:
    """Refuse an output path that cannot be a ``kind`` (``dir`` or ``file``): an existing file
    where a folder is expected or the reverse, or a path below a regular file."""
    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise OutputError(
            f"{p}: exists and is not a folder (the output is a folder; remove the file or "
            "choose another path)"
        )
    if kind == "file" and p.is_dir():
        raise OutputError(f"{p}: is a folder (the output is a file; give a file path)")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(
                    f"{p}: {parent} is a file, not a folder (choose another output path)"
                )
            break


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: PathArg) -> Iterator[None]:
    """Hold the lock of output ``path`` (its parent folder is created if missing).

    Raises
    ------
    OutputError
        Another process holds the lock, or the lock cannot be created there.
    """
    target = resolve(path)
    lock = _lock_path(target)
    if lock in _HELD:  # re-entrant within this process
        _HELD[lock] += 1
        try:
            yield
        finally:
            _HELD[lock] -= 1
        return
    fd = _acquire(lock, Path(path))
    _HELD[lock] = 1
    try:
        yield
    finally:
        del _HELD[lock]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # before unlocking: a waiter that locks the old file notices
        os.close(fd)  # releases the flock


def _acquire(lock: Path, shown: Path) -> int:
    import fcntl

    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(
                f"{shown}: cannot write here ({exc.strerror.lower()}: {lock}) "
                "(choose a writable output path)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"{shown}: another bertgeom run (pid {holder}) is writing this output "
                f"(wait for it to finish, or choose another output; if no such process "
                f"exists, remove {lock})"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)  # the holder we waited for removed that file: lock the new one
    raise OutputError(f"{shown}: cannot take the lock {lock} (remove it and retry)")


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders created, deepest last."""
    missing: list[Path] = []
    p = path.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        created.append(d)
    return created


def _manifest(folder: PathArg) -> dict:
    try:
        doc = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def listed_outputs(folder: PathArg) -> list[str]:
    """The file names ``folder/manifest.json`` lists as outputs ([] when it has none or is
    unreadable)."""
    try:
        return [str(o["path"]) for o in _manifest(folder).get("outputs", [])]
    except (TypeError, KeyError, AttributeError):
        return []


def check_stage(folder: PathArg, stage: str) -> None:
    """Refuse to write ``stage``'s outputs into a folder that holds another stage's (as its
    ``manifest.json`` says): they would be replaced or removed."""
    other = _manifest(folder).get("stage")
    if isinstance(other, str) and other != stage:
        raise OutputError(
            f"{folder}: holds the outputs of `bertgeom {other}` (its manifest.json), not of "
            f"`bertgeom {stage}` (choose another output folder)"
        )


def check_target(
    path: PathArg,
    inputs: Iterable[PathArg | None] = (),
    kind: str = "dir",
    stage: str | None = None,
) -> None:
    """Every check of :func:`writing` that needs no lock, for a stage to run before any work:
    :func:`check_outputs`, :func:`check_output_path` and (``stage``) :func:`check_stage`."""
    check_outputs(inputs, [path])
    check_output_path(path, kind)
    if stage is not None and kind == "dir":
        check_stage(path, stage)


@contextlib.contextmanager
def writing(
    path: PathArg,
    inputs: Iterable[PathArg | None] = (),
    kind: str = "dir",
    fresh: bool = True,
    stage: str | None = None,
) -> Iterator[Path]:
    """Write output ``path`` (a folder, or a ``file``) safely: see the module docstring.

    Yields the path. A folder is created; a file's parent folder is. With ``fresh`` (a stage
    that rewrites its folder from scratch) the files of the previous manifest are removed
    before the stage starts, not after it ends; a resumed stage passes False. ``stage`` (for a
    folder) refuses a folder whose manifest names another stage.
    """
    out = Path(path)
    check_target(out, inputs, kind, stage)
    created = _make_dirs(out if kind == "dir" else out.parent)
    try:
        with output_lock(out):
            if stage is not None:
                check_stage(out, stage)  # again, now that no other run can write it
            old = listed_outputs(out) if kind == "dir" else []
            if kind == "dir":
                if fresh:
                    prune(out, old)
                    old = []
                with contextlib.suppress(FileNotFoundError):
                    (out / MANIFEST).unlink()
            yield out
            if kind == "dir" and (out / MANIFEST).is_file():
                prune(out, old, keep=listed_outputs(out))
    except BaseException:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
        raise


def prune(folder: PathArg, names: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Remove the files ``names`` (relative to ``folder``) that are not in ``keep``, and the
    sub-folders this leaves empty; names leading outside ``folder`` are ignored. Returns the
    names removed."""
    root = resolve(folder)
    keep_set = set(keep)
    removed = []
    for name in names:
        if name in keep_set or name == MANIFEST:
            continue
        p = root / name
        if not p.resolve().is_relative_to(root) or not p.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(name)
        parent = p.parent
        while parent != root and parent.is_relative_to(root):
            try:
                parent.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    break
                raise
            parent = parent.parent
    return removed
