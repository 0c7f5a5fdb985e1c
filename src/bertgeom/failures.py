"""Every failure as one line: what the CLI prints for an exception, and its exit status.

The one place that turns exceptions into ``error: <path>: <what> (<what to do>)``:

- :class:`~bertgeom.errors.BertgeomError` (bad input, config, artefact, output): its message,
  exit status 2;
- operating-system errors (permission, read-only file system, no space left, a file where a
  folder is needed, ...): the path and the reason in words, exit status 2;
- running out of memory (host or GPU): exit status 2, with what to lower;
- anything else is a bug in bertgeom: ``error: internal error: ...``, exit status 1, the
  traceback only with ``BERTGEOM_DEBUG=1``.

Exit statuses (also in README.md): 0 success (also when the reader of standard output closes
it early, as ``bertgeom predict --out - | head`` does), 1 internal error, 2 an error the user
can fix, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import errno
import os

from bertgeom.errors import BertgeomError

EXIT_OK, EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

#: errno -> (what happened, what to do)
_OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "check its permissions, or choose another path"),
    errno.EPERM: ("operation not permitted", "check its permissions, or choose another path"),
    errno.EROFS: ("read-only file system", "choose an output on a writable file system"),
    errno.ENOSPC: ("no space left on the device", "free some space, or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or write elsewhere"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("is a folder", "give a file path"),
    errno.EEXIST: ("already exists", "remove it, or choose another path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the links in the path"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n)"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EFBIG: ("file too large for the file system", "write elsewhere"),
    errno.EXDEV: ("cannot move across file systems", "write on the input's file system"),
}


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message (without ``error: ``) and the exit status for ``exc``."""
    if isinstance(exc, BertgeomError):
        return _one_line(str(exc)), EXIT_ERROR
    if isinstance(exc, OSError) and exc.errno is not None:
        return describe_os_error(exc), EXIT_ERROR
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return (
            "out of memory (lower --batch-size, --jobs or --max-genomes, or use a machine "
            "with more memory)",
            EXIT_ERROR,
        )
    return (
        f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (a bug in bertgeom: "
        "please report it with the command; BERTGEOM_DEBUG=1 shows the traceback)",
        EXIT_BUG,
    )


def describe_os_error(exc: OSError) -> str:
    """``<path>: <what> (<what to do>)`` for an operating-system error."""
    what, todo = _OS_ERRORS.get(
        exc.errno or 0, ((exc.strerror or str(exc)).lower(), "check the path")
    )
    names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(names)
    return f"{where}: {what} ({todo})" if where else f"{what} ({todo})"


def _one_line(text: str) -> str:
    """``text`` on one line (a message is never split over lines)."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text
