"""Progress reporting: a bar on a terminal, plain periodic lines in a log, nothing when quiet.

Every stage reports progress through :func:`progress` (or :func:`track` for an iterable). On a
terminal (standard error is a TTY) that is a tqdm bar; otherwise (a batch job's log, a pipe)
it is one plain line every ``BERTGEOM_PROGRESS_SECONDS`` seconds (default 30) and one at the
end, never a carriage return::

    predict: 1200/6504 genomes (18%), 41.2 genomes/s, 29 s elapsed, about 2 min left

:func:`set_verbosity` (the CLI's ``-q``/``-v``) sets the default: ``quiet`` turns progress off
wherever it was not asked for explicitly.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

#: Environment variable: seconds between plain progress lines (default 30).
INTERVAL_ENV = "BERTGEOM_PROGRESS_SECONDS"
_DEFAULT_INTERVAL = 30.0
#: -1 quiet, 0 normal, 1 verbose (set by the CLI).
_VERBOSITY = 0


def set_verbosity(level: int) -> None:
    """-2 (``-qq``), -1 (``-q``: no progress), 0 (default) or 1 (``--verbose``)."""
    global _VERBOSITY
    _VERBOSITY = max(-2, min(1, int(level)))


def verbosity() -> int:
    """The level :func:`set_verbosity` set."""
    return _VERBOSITY


def progress(
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    file: TextIO | None = None,
) -> Any:
    """A progress reporter with tqdm's ``update(n)``, ``set_postfix(**kw)`` and ``close()``,
    usable as a context manager: a tqdm bar on a terminal, :class:`PlainProgress` otherwise, a
    no-op when ``enabled`` is false or the verbosity is quiet."""
    out = sys.stderr if file is None else file
    if not enabled or _VERBOSITY < 0:
        return _Silent()
    if _isatty(out):
        from tqdm import tqdm

        return tqdm(
            total=total, initial=initial, desc=desc, unit=unit, file=out, dynamic_ncols=True
        )
    return PlainProgress(total=total, desc=desc, unit=unit, initial=initial, file=out)


def track(
    items: Iterable[Any], total: int | None = None, desc: str = "", unit: str = "it",
    enabled: bool = True,
) -> Iterator[Any]:  # fmt: skip
    """Yield ``items``, reporting progress as :func:`progress` does."""
    with progress(total=total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


def _isatty(fh: TextIO) -> bool:
    try:
        return bool(fh.isatty())
    except (AttributeError, ValueError):
        return False


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, _DEFAULT_INTERVAL)))
    except ValueError:
        return _DEFAULT_INTERVAL


class PlainProgress:
    """Plain progress lines for logs: one every ``interval`` seconds and one when closed."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        initial: int = 0,
        file: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = initial
        self.file = sys.stderr if file is None else file
        self.interval = _interval() if interval is None else interval
        self._t0 = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; write a line when ``interval`` seconds have passed."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(now)

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line (``loss=0.1234``)."""
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        """Write the final line (once)."""
        if not self._closed:
            self._closed = True
            self._write(time.monotonic(), final=True)

    def _write(self, now: float, final: bool = False) -> None:
        elapsed = now - self._t0
        done = self.n - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.1f} {self.unit}s/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if not final and self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {_duration((self.total - self.n) / rate)} left")
        if self._postfix:
            parts.append(self._postfix)
        head = f"{self.desc}: " if self.desc else ""
        print(head + ("done, " if final else "") + ", ".join(parts), file=self.file, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Silent:
    """The reporter when progress is off."""

    n = 0

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        """Nothing."""

    def set_postfix(self, **values: Any) -> None:
        """Nothing."""

    def close(self) -> None:
        """Nothing."""
