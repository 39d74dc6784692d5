"""Registry of strategies, looked up by name from recipes.

Two kinds: ``ticket`` (which weights: ltr, ...) and ``data_selection`` (which examples: full, random, ...).
Other installed packages add strategies through the entry-point group ``prac_plugin.strategies``; each
entry point names a strategy class carrying ``kind`` and ``name`` attributes.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..errors import PracError, shown

ENTRY_POINT_GROUP = "prac_plugin.strategies"
KINDS = ("ticket", "data_selection")

_registry: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_entry_points_loaded = False


def register(cls: type) -> type:
    """Class decorator: add a strategy class (with ``kind`` and ``name``) to the registry."""
    kind, name = getattr(cls, "kind", None), getattr(cls, "name", None)
    if kind not in KINDS or not isinstance(name, str) or not name:
        raise TypeError(f"strategy {cls!r} needs kind in {KINDS} and a non-empty name")
    existing = _registry[kind].get(name)
    if existing is not None and existing is not cls:
        raise TypeError(f"{kind} strategy {name!r} is already registered by {existing.__module__}")
    _registry[kind][name] = cls
    return cls


def load_entry_points(force: bool = False) -> None:
    """Import and register the strategies that installed packages advertise."""
    global _entry_points_loaded
    if _entry_points_loaded and not force:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register(ep.load())
        except Exception as exc:  # a broken third-party plugin must not break the built-ins
            raise PracError(f"strategy entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from None


def available(kind: str) -> list[str]:
    load_entry_points()
    return sorted(_registry[kind])


def get(kind: str, name: str) -> type:
    """The strategy class registered as ``name``; an unknown name lists the available ones."""
    if name not in _registry[kind]:
        load_entry_points()
    try:
        return _registry[kind][name]
    except KeyError:
        label = "ticket" if kind == "ticket" else "data_selection"
        raise PracError(f"unknown {label}.strategy {shown(name)}; available: {', '.join(available(kind))}") from None
