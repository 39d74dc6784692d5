"""Registry of strategies, looked up by name from recipes.

Two kinds: ``ticket`` (which weights: ltr, ...) and ``data_selection`` (which examples: full, random, ...).
Every strategy, built-in or another package's, is an entry point of the group ``prac_plugin.strategies`` naming a
strategy class that carries ``kind`` and ``name`` attributes; the built-ins' are in this package's pyproject.toml.
A strategy's module is imported when its name is first looked up (an entry point named like the strategy is
tried first), so reading a recipe imports only the strategies it names.
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from .errors import PracError, shown

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


def _source_tree_entry_points() -> list[EntryPoint]:
    """The built-ins' entry points read from pyproject.toml, for a source checkout run without installing it (the
    GPU machine runs the checkout on PYTHONPATH): the same lines an install would register, no second list."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        text = pyproject.read_text()
    except OSError:
        return []
    section = re.search(r'^\[project\.entry-points\."' + re.escape(ENTRY_POINT_GROUP) + r'"\]\n(.*?)(?=^\[|\Z)', text, re.M | re.S)
    lines = re.findall(r'^([\w.-]+)\s*=\s*"([^"]+)"', section.group(1), re.M) if section else []
    return [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in lines]


def _entry_points(name: str | None = None) -> list[EntryPoint]:
    found = list(entry_points(group=ENTRY_POINT_GROUP))
    if not any(ep.value.startswith(__package__ + ".") for ep in found):  # this package is not installed
        found += _source_tree_entry_points()
    return [ep for ep in found if name is None or ep.name == name]


def _load(ep) -> None:
    try:
        register(ep.load())
    except Exception as exc:  # a broken third-party plugin is named, not a traceback
        raise PracError(f"strategy entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from None


def load_entry_points(force: bool = False, name: str | None = None) -> None:
    """Import and register the strategies that installed packages advertise (only those named ``name``, if given)."""
    global _entry_points_loaded
    if name is not None:
        for ep in _entry_points(name):
            _load(ep)
        return
    if _entry_points_loaded and not force:
        return
    _entry_points_loaded = True
    for ep in _entry_points():
        _load(ep)


def available(kind: str) -> list[str]:
    load_entry_points()
    return sorted(_registry[kind])


def get(kind: str, name: str) -> type:
    """The strategy class registered as ``name``; an unknown name lists the available ones."""
    if name not in _registry[kind] and isinstance(name, str):
        load_entry_points(name=name)
    if name not in _registry[kind]:
        load_entry_points()
    try:
        return _registry[kind][name]
    except KeyError:
        label = "ticket" if kind == "ticket" else "data_selection"
        raise PracError(f"unknown {label}.strategy {shown(name)}; available: {', '.join(available(kind))}") from None
