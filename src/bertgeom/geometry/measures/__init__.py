"""The measure registry: the one list of geometry measures.

Every module of this package that defines a :class:`~bertgeom.geometry.measures.base.Measure`
subclass registers it with :func:`register`; :func:`registry` imports the package's modules
(so adding a measure is adding a module) and returns the measures in report order. ``--only``,
table names, the resume fingerprint, the report's sections and Methods, and the list in
docs/formats.md all derive from it. A measure defined elsewhere (a plugin, a test) registers
the same way and appears everywhere too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from bertgeom.geometry.measures.base import Measure

_REGISTRY: dict[str, type[Measure]] = {}
_LOADED = False


def register(cls: type[Measure]) -> type[Measure]:
    """Class decorator: add ``cls`` to the registry under ``cls.name`` (replacing a measure of
    the same class re-registered, e.g. on module reload; another class of that name is an
    error)."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}: a measure needs a name that is an identifier")
    old = _REGISTRY.get(cls.name)
    if old is not None and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"measure name {cls.name!r} is taken by {old.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a measure (tests that register a toy one)."""
    _REGISTRY.pop(name, None)


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _LOADED = True


def registry() -> dict[str, type[Measure]]:
    """Every registered measure by name, in report order."""
    _load_builtin()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def names(default_only: bool = False) -> tuple[str, ...]:
    """Registered measure names (those computed when ``--only`` is empty, with
    ``default_only``)."""
    return tuple(n for n, m in registry().items() if m.default or not default_only)


def select(only: str | Iterable[str] = "") -> list[type[Measure]]:
    """The measures named in ``only`` (comma-separated or a list; empty = the defaults), in
    registry order; an unknown name is a ``ConfigError`` listing the valid ones."""
    from bertgeom.errors import ConfigError

    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only)]
    wanted = [w for w in wanted if w]
    reg = registry()
    bad = [w for w in wanted if w not in reg]
    if bad:
        raise ConfigError(f"only: unknown measure(s) {', '.join(bad)} (valid: {', '.join(reg)})")
    if not wanted:
        return [m for m in reg.values() if m.default]
    return [m for n, m in reg.items() if n in wanted]


def table_names() -> dict[str, str]:
    """Table name -> the measure that writes it."""
    return {t: name for name, m in registry().items() for t in m.tables}
