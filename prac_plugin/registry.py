"""Registry of strategies, looked up by name from recipes.

Two kinds: ``ticket`` (which weights: ltr, ...) and ``data_selection`` (which examples: full, random, ...).
Every strategy, built-in or another package's, is an entry point of the group ``prac_plugin.strategies`` naming
either a strategy spec (`prac_plugin.strategies.declarations.StrategySpec`: the strategy's declarations, readable
without torch, naming the class to import when a run needs it) or a strategy class carrying ``kind`` and ``name``
(as a plugin may). The built-ins' entry points, in this package's pyproject.toml, name specs: reading a recipe,
``prac recipe`` and ``prac report`` import no strategy module. An entry point is loaded when its name is first
looked up (an entry point named like the strategy is tried first), so reading a recipe loads only what it names.

`spec` answers a strategy's declarations (its spec; for a strategy registered by class, the class, which carries
the same attributes); `get` the strategy class itself.
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from .errors import PracError, shown

ENTRY_POINT_GROUP = "prac_plugin.strategies"
KINDS = ("ticket", "data_selection")

DEFAULTS = {"ticket": "ltr", "data_selection": "full"}  # the strategy of a recipe section that names none: the one place

_registry: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}  # name -> its spec, or its class
_entry_points_loaded = False


def default(kind: str) -> str:
    """The strategy a recipe's ``kind`` section gets when it names none."""
    return DEFAULTS[kind]


def _origin(entry: Any) -> str:
    return entry.__module__ if isinstance(entry, type) else getattr(entry, "strategy", repr(entry))


def _same(a: Any, b: Any) -> bool:
    """A spec and the class declaring it (``spec = ...``) are one strategy."""
    return a is b or getattr(a, "spec", None) is b or getattr(b, "spec", None) is a


def register(entry: Any) -> Any:
    """Class decorator, or a call with a spec: add a strategy (with ``kind`` and ``name``) to the registry."""
    kind, name = getattr(entry, "kind", None), getattr(entry, "name", None)
    if kind not in KINDS or not isinstance(name, str) or not name:
        raise TypeError(f"strategy {entry!r} needs kind in {KINDS} and a non-empty name")
    existing = _registry[kind].get(name)
    if existing is not None and not _same(existing, entry):
        raise TypeError(f"{kind} strategy {name!r} is already registered by {_origin(existing)}")
    _registry[kind].setdefault(name, entry)
    return entry


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


def ordered() -> list[tuple[str, str]]:
    """(kind, name) of every strategy: this package's own in the order of its pyproject.toml's entry points (the
    order `prac recipe` lists them in), then the others sorted."""
    load_entry_points()
    ours = [ep.name for ep in _entry_points() if ep.value.startswith(__package__ + ".")]
    first = [(kind, name) for name in dict.fromkeys(ours) for kind in KINDS if name in _registry[kind]]
    return first + sorted((kind, name) for kind in KINDS for name in _registry[kind] if (kind, name) not in first)


def built_in(kind: str) -> list[str]:
    """This package's own strategies of ``kind``, in the order of its pyproject.toml's entry points."""
    ours = {ep.name for ep in _entry_points() if ep.value.startswith(__package__ + ".")}
    return [name for k, name in ordered() if k == kind and name in ours]


def spec(kind: str, name: str) -> Any:
    """The declarations of the strategy registered as ``name`` (options, traits, help, ...), without importing
    its class when it was registered by a spec; an unknown name lists the available ones."""
    if name not in _registry[kind] and isinstance(name, str):
        load_entry_points(name=name)
    if name not in _registry[kind]:
        load_entry_points()
    try:
        return _registry[kind][name]
    except KeyError:
        raise PracError(f"unknown {kind}.strategy {shown(name)}; available: {', '.join(available(kind))}") from None


def get(kind: str, name: str) -> type:
    """The strategy class registered as ``name`` (imported now if only its spec was); an unknown name lists the
    available ones."""
    entry = spec(kind, name)
    if isinstance(entry, type):
        return entry
    try:
        return entry.load()
    except Exception as exc:  # a broken plugin is named, not a traceback
        raise PracError(f"{kind} strategy {name!r} ({entry.strategy}) failed to load: {exc}") from None
