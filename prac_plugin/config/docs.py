"""``prac recipe``: every recipe key with its type, default, allowed values and a line of help, read from the
schema's dataclasses and the registered strategies' declarations (third-party ones too), and commented starter
recipes that run as printed. Nothing here knows a strategy: each declares its options (help beside each field),
its one-line description and its starter recipe (``strategies/declarations.py``), read without importing torch.

Help comes from a field's ``metadata["help"]``, else from its class's ``HELP`` dict, else (the plain sections)
from `SECTION_HELP`; a key without any is listed with its type and default alone.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

import yaml

from .schema import _type_name
from .starter import starter_recipe
from ..errors import PracError
from .. import registry
from .recipes import SECTIONS, AugmentSection, DataSection, ModelSection, RunSection, TrainSection

SECTION_HELP: dict[str, dict[str, str]] = {
    "model": {
        "name": "any timm.create_model name (the classic LTH models are registered into timm)",
        "pretrained": "start from timm's pretrained weights",
        "num_classes": "classes of the classifier (default: the dataset's)",
        "in_chans": "input channels (default: the dataset's)",
        "kwargs": "more keyword arguments for timm.create_model",
    },
    "data": {
        "path": "a Hub id, a datasets builder (parquet, imagefolder), a local folder, or builtin:digits / builtin:fashion_mnist",
        "name": "dataset configuration (datasets.load_dataset's name)",
        "data_dir": "passed to datasets.load_dataset",
        "data_files": "files per split, passed to datasets.load_dataset",
        "revision": "Hub revision (pins the data an index file names)",
        "cache_dir": "datasets' cache folder",
        "train_split": "training split, slices allowed (train[:2000], train[10%:])",
        "val_split": "validation split (default: validation, valid or val if present)",
        "test_split": "test split (default: test if present)",
        "val_fraction": "without a validation split: this share of the training split, held out with split_seed; 0: none",
        "split_seed": "seed of the held-out validation rows",
        "image_column": "image column (default: image or img)",
        "label_column": "label column (default: label, labels or fine_label)",
        "in_memory": "decode the images once into uint8 tensors on the device (auto: when they fit in 4 GiB)",
        "image_size": "resize images to this size",
        "crop_pct": "evaluation center-crop share for streamed data (timm's crop_pct)",
        "augment": "training augmentation: {random_crop_padding: N, hflip: true|false}",
        "normalize": "auto, dataset (its mean and std), model (timm's pretrained config), none, or {mean: [...], std: [...]}",
        "num_workers": "DataLoader workers for streamed data",
    },
    "augment": {
        "random_crop_padding": "pad by N pixels and crop back at random (0: off)",
        "hflip": "random horizontal flips",
    },
    "train": {
        "epochs": "epochs of a full-data level (levels on subsets scale with data_selection.budget)",
        "batch_size": "training batch (the global batch with several processes)",
        "eval_batch_size": "evaluation batch",
        "optimizer": "sgd, adam or adamw (timm's optimizer factory)",
        "lr": "learning rate",
        "momentum": "SGD momentum",
        "nesterov": "Nesterov momentum",
        "weight_decay": "weight decay",
        "decay_norm_and_bias": "also decay normalization weights and biases",
        "schedule": "constant, step (x gamma at milestones) or cosine",
        "milestones": "epochs of the step schedule's decays",
        "gamma": "factor of each step decay",
        "warmup_steps": "linear warm-up steps",
        "grad_clip": "clip the gradient norm to this value (null: no clipping)",
        "mixed_precision": "no, bf16 or fp16 (fp16 with a gradient scaler, GPU only); no follows accelerate launch",
        "cpu": "train on the CPU even when a GPU is present",
        "seed": "seed of initialization, data order and augmentation",
        "eval_every_epochs": "also evaluate on the validation split every N epochs (0: at each level's end only)",
        "deterministic": "deterministic algorithms (slower; bit-identical reruns on one machine)",
        "channels_last": "channels-last memory layout for convolutions",
        "compile": "torch.compile: false, true (inductor) or a backend name",
        "cuda_graphs": "capture the training step in a CUDA graph: auto (when it can be), on (an error when it cannot) or off",
        "sharding": "none, or fsdp2: parameters, gradients and optimizer state sharded over the processes while a level trains "
                    "(also switched on by accelerate launch with an FSDP2 config); needs several processes",
    },
    "run": {
        "output_dir": "run folder (default: runs/<recipe name>; --output wins)",
        "tracker": "auto (tensorboard when installed), tensorboard or none",
        "checkpoint_every": "mid-level checkpoints for resuming: 1ep, 500it or none",
        "checkpoint_keep": "mid-level checkpoints kept",
    },
}

_PLAIN = {"model": ModelSection, "data": DataSection, "train": TrainSection, "run": RunSection, "augment": AugmentSection}


@dataclasses.dataclass
class KeyDoc:
    key: str
    type: str
    default: Any
    help: str


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return None


def section_class(section: str, strategy: Optional[str] = None) -> tuple[type, str]:
    """The dataclass of a section (for ticket/data_selection: of a strategy, the default one without a name)."""
    if section in _PLAIN:
        if strategy:
            raise PracError(f"section {section!r} has no strategies")
        return _PLAIN[section], ""
    if section not in registry.KINDS:
        raise PracError(f"unknown recipe section {section!r}; sections: {', '.join(SECTIONS)}")
    name = strategy or registry.default(section)
    return registry.spec(section, name).Options, name


def describe(section: str, strategy: Optional[str] = None) -> list[KeyDoc]:
    """The keys of a section (or of a strategy's options), in declaration order."""
    cls, name = section_class(section, strategy)
    hints = typing.get_type_hints(cls)
    table = {**(SECTION_HELP.get(section, {}) if not name else {}), **getattr(cls, "HELP", {})}
    docs = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        text = field.metadata.get("help") or table.get(field.name, "")
        docs.append(KeyDoc(field.name, _type_name(hints[field.name]), _default(field), text))
    return docs


def _cell(value: Any) -> str:
    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


def markdown(section: str, strategy: Optional[str] = None) -> str:
    """One section's keys as a Markdown table."""
    _, name = section_class(section, strategy)
    title = f"{section} (strategy: {name})" if name else section
    spec = registry.spec(section, name) if name else None
    about = [getattr(spec, "description", "")] if spec else []
    files = getattr(spec, "run_files", {}) if spec else {}
    about += ["Writes in the run folder: " + "; ".join(f"`{path}` ({what})" for path, what in files.items())] if files else []
    lines = [f"## {title}", ""] + [line for text in about if text for line in (text, "")]
    lines += ["| key | type | default | help |", "|---|---|---|---|"]
    lines += [f"| `{d.key}` | {d.type.replace('|', chr(92) + '|')} | `{_cell(d.default)}` | {d.help} |" for d in describe(section, strategy)]
    return "\n".join(lines) + "\n"


def reference(what: str = "") -> str:
    """``prac recipe [SECTION | SECTION.strategy=NAME]``: the tables asked for (all sections and strategies by default)."""
    if not what:
        parts = [markdown(s) for s in ("model", "data", "augment", "train")]
        parts += [markdown(kind, name) for kind in registry.KINDS for name in registry.available(kind)]
        return "\n".join(parts + [markdown("run")])
    section, _, rest = what.partition(".")
    if rest:
        key, _, name = rest.partition("=")
        if key != "strategy" or not name:
            raise PracError(f"{what!r}: ask for a section (train) or a strategy (ticket.strategy=cts)")
        return markdown(section, name)
    if section in registry.KINDS:
        names = registry.available(section)
        return "\n".join(markdown(section, name) for name in names)
    return markdown(section)


# -- starter recipes -----------------------------------------------------------------------------------------------
def _starters() -> dict[str, tuple[str, str]]:
    """name -> (kind, title) of every strategy declaring a starter recipe of its own, in `registry.ordered`."""
    found = {}
    for kind, name in registry.ordered():
        starter = getattr(registry.spec(kind, name), "starter", None)
        if starter is not None and starter.title:
            found.setdefault(name, (kind, starter.title))
    return found


def example_names() -> list[str]:
    """The names ``prac recipe --example`` accepts."""
    return list(_starters())


def examples() -> dict[str, dict]:
    """Starter recipes on the embedded digits, each a few seconds to a minute on a CPU."""
    return {name: starter_recipe(kind, name) for name, (kind, _) in _starters().items()}


_KIND_LABELS = {"ticket": "ticket strategy", "data_selection": "data selection"}


def _strategy_help(kind: str) -> str:
    return f"{_KIND_LABELS[kind]}: {', '.join(registry.built_in(kind))}, or a plugin's"


def example(name: str) -> str:
    """A commented starter recipe: every key with its line of help. Runs as printed (``prac run FILE``)."""
    starters = _starters()
    if name not in starters:
        raise PracError(f"--example {name!r} is not one of {', '.join(starters)}")
    kind, title = starters[name]
    recipe = starter_recipe(kind, name)
    lines = [f"# {title}, on scikit-learn's digits (embedded, offline).",
             f"# prac recipe --example {name} > recipe.yaml && prac run recipe.yaml    (keys: prac recipe SECTION)"]
    for section, values in recipe.items():
        strategy = values.get("strategy") if section in registry.KINDS else None
        docs = {d.key: d.help for d in describe(section, strategy)}
        docs["strategy"] = _strategy_help(section) if section in registry.KINDS else ""
        lines.append(f"{section}:")
        for key, value in values.items():
            text = docs.get(key, "")
            entry = f"  {key}: {_cell(value)}"
            lines.append(f"{entry:<36}# {text}" if text else entry)
    return "\n".join(lines) + "\n"
