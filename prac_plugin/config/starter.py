"""The starter recipe: LeNet-300-100 on the embedded digits, one schedule for the quick start and every example.

Its model, data and schedule are here; its ticket and data_selection sections are the default strategies' own
starter sections (each strategy declares its `Starter`), and a strategy's starter recipe (``prac recipe --example
NAME``) is this recipe with the changes that strategy declares. recipes/quickstart.yaml is this recipe (a test
keeps them equal).
"""

from __future__ import annotations

import copy

from .. import registry

BASE = {
    "model": {"name": "lenet_300_100", "kwargs": {"img_size": 8}},
    "data": {"path": "builtin:digits", "val_fraction": 0.1, "split_seed": 0},
    "train": {"epochs": 15, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0001,
              "schedule": "cosine", "seed": 0},
}


def strategy_section(kind: str, name: str) -> dict:
    """A recipe section choosing strategy ``name`` with the keys its starter declares."""
    starter = getattr(registry.spec(kind, name), "starter", None)
    return {"strategy": name, **copy.deepcopy(dict(starter.section if starter else {}))}


def quickstart_recipe() -> dict:
    """The starter recipe itself: the default strategies on the base model, data and schedule."""
    return {**copy.deepcopy(BASE), **{kind: strategy_section(kind, registry.default(kind)) for kind in registry.KINDS}}


def starter_recipe(kind: str, name: str) -> dict:
    """Strategy ``name``'s starter recipe: the quick start's with its section and the other changes it declares."""
    recipe = quickstart_recipe()
    recipe[kind] = strategy_section(kind, name)
    starter = getattr(registry.spec(kind, name), "starter", None)
    if starter is not None:
        recipe.update(copy.deepcopy(dict(starter.replace)))
        for section, values in starter.update.items():
            recipe[section].update(copy.deepcopy(dict(values)))
    return recipe


def __getattr__(name: str):
    if name == "QUICKSTART_RECIPE":  # the constant this module held before strategies declared their sections
        return quickstart_recipe()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
