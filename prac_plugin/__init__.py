"""prac_plugin: lottery tickets for timm models on Hugging Face datasets, found efficiently.

Importing the package registers the classic LTH architectures (lenet_300_100, cifar_resnet20/32/56,
cifar_vgg16) into timm's model registry: at once when timm is already imported, otherwise as soon as it is.

The package itself imports no torch: its names (`TicketMask`, `run`, ...) load their modules when first used,
so ``prac --help`` and the timm hook (``import prac_plugin.timm``) pay only for what they use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from .lazy import lazy_names

from .version import __version__

_EXPORTS = {  # name -> module that defines it, imported on first use
    "PracError": ".errors",
    "MaskEnforcer": ".tickets.masks", "TicketMask": ".tickets.masks", "prunable_parameter_names": ".tickets.masks",
    "Recipe": ".config.recipes", "load_recipe": ".config.recipes", "parse_recipe": ".config.recipes",
    "RewindPoint": ".tickets.rewind",
    # the plugin contract (CONTRIBUTING.md): the interfaces and what the engine hands them ...
    "DataSelectionStrategy": ".strategies.base", "TicketStrategy": ".strategies.base", "LevelPlan": ".strategies.base",
    "TicketContext": ".strategies.base", "SelectionContext": ".strategies.base", "StartPoint": ".strategies.base",
    "PreviousLevel": ".strategies.base",
    # ... and what a strategy declares, readable without torch, and its registration
    "StrategyOptions": ".strategies.declarations", "TicketTraits": ".strategies.declarations",
    "StrategySpec": ".strategies.declarations", "Starter": ".strategies.declarations", "Column": ".strategies.declarations",
    "option": ".strategies.declarations", "register": ".registry",
    "export_ticket": ".strategies.structured.ticket", "load_structured_ticket": ".strategies.structured.ticket",
}


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


def run(recipe, output_dir: str):
    """Run a recipe (a `Recipe`, a dict, or a YAML path) into ``output_dir``; returns the summary rows."""
    from .engine.run_loop import run_recipe
    from .config.recipes import Recipe, load_recipe, parse_recipe

    if isinstance(recipe, dict):
        recipe = parse_recipe(recipe)
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return run_recipe(recipe, output_dir)


class _RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Registers the LTH architectures right after ``import timm`` completes (the package imports no timm itself)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")  # by the other finders
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        importlib.import_module(".models.lth", __name__)

    def __getattr__(self, name):  # resource readers and the like: timm's own loader's
        return getattr(self._loader, name)


def _register_models() -> None:
    if "timm" in sys.modules:
        importlib.import_module(".models.lth", __name__)
    elif not any(isinstance(finder, _RegisterAfterTimm) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTimm())


_register_models()

__all__ = ["__version__", "run", *_EXPORTS]
