"""``prac recipe``: every recipe key with its type, default, allowed values and a line of help, read from the
schema's dataclasses and the registered strategies' option classes (third-party ones too), and commented starter
recipes that run as printed.

Help comes from a field's ``metadata["help"]``, else from its class's ``HELP`` dict, else from the tables below
(the built-in sections and strategies); a key without any is listed with its type and default alone.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any, Optional

import yaml

from .schema import _type_name
from .starter import QUICKSTART_RECIPE
from ..errors import PracError
from .recipes import SECTIONS, AugmentSection, DataSection, ModelSection, RunSection, TrainSection

_TICKET_COMMON = {
    "levels": "pruning levels after the dense level 0",
    "fraction": "share of the remaining prunable weights removed per level",
    "scope": "global: one pool over all prunable tensors; layer: the fraction from each tensor",
    "include": "glob patterns: prune only these parameters or modules, or type:GLOB on module classes (type:Conv*); empty: every Conv/Linear weight",
    "ignore": "glob patterns of parameters or modules never pruned (e.g. fc, the classifier), or type:GLOB",
    "rewind": "rewind point: 0it (initialization), 500it, 2ep, 1ep50it",
    "rewind_optimizer": "also rewind the optimizer state (open_lth starts each level with a fresh optimizer)",
    "min_per_layer": "global pruning keeps at least this many weights of every prunable tensor (0: no floor)",
}
_EARLY_BIRD = {
    "early_bird": "stop a level when its would-be mask stops changing (the reference code's early-bird)",
    "early_bird_eps": "early-bird: share of the remaining weights whose keep/prune decision changed, below which masks count as unchanged",
    "early_bird_window": "early-bird: epochs in a row below the distance",
}
_BUDGET = "steps of a level trained on a subset: linear (paper: |P|/|D| of the steps), quadratic (reference code), none"

HELP: dict[tuple[str, str], dict[str, str]] = {
    ("model", ""): {
        "name": "any timm.create_model name (the classic LTH models are registered into timm)",
        "pretrained": "start from timm's pretrained weights",
        "num_classes": "classes of the classifier (default: the dataset's)",
        "in_chans": "input channels (default: the dataset's)",
        "kwargs": "more keyword arguments for timm.create_model",
    },
    ("data", ""): {
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
    ("augment", ""): {
        "random_crop_padding": "pad by N pixels and crop back at random (0: off)",
        "hflip": "random horizontal flips",
    },
    ("train", ""): {
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
    },
    ("run", ""): {
        "output_dir": "run folder (default: runs/<recipe name>; --output wins)",
        "tracker": "auto (tensorboard when installed), tensorboard or none",
        "checkpoint_every": "mid-level checkpoints for resuming: 1ep, 500it or none",
        "checkpoint_keep": "mid-level checkpoints kept",
    },
    ("ticket", "ltr"): dict(_TICKET_COMMON),
    ("ticket", "cts"): {
        **{k: _TICKET_COMMON[k] for k in ("include", "ignore", "rewind", "rewind_optimizer", "min_per_layer")},
        "densities": "target densities of the tickets, each in (0, 1): one level each",
        "search_at": "search the mask at the rewind point or at initialization",
        "objective": "reverse_kl (sparse against dense outputs), forward_kl or cross_entropy",
        "loss_scale": "factor on the search objective",
        "temperature": "temperature of the concrete (relaxed Bernoulli) gates",
        "final_temperature": "anneal the temperature to this value (null: constant)",
        "search_epochs": "length of the search in epochs at search_batch_size (the authors: 20, a length of its own, not scaled with training)",
        "search_steps": "length of the search in steps (overrides search_epochs)",
        "search_batch_size": "batch of the search",
        "lr": "Adam learning rate of the mask logits",
        "decay_at": "share of the search after which the search's lr drops x0.1",
        "target_factor": "GradBalance aims at this factor times the target number of weights",
        "sparsity_control": "gradbalance (the paper's) or lagrangian (dual ascent)",
        "dual_lr": "step of the Lagrangian's dual variable",
        "concrete_form": "paper: sigmoid((logit + noise) / T); reference_code: sigmoid(logit + noise / T)",
        "batchnorm": "BatchNorm during the search: batch (the authors': the current batch's statistics) or running (frozen; not the authors' method)",
    },
    ("ticket", "structured"): {  # a fresh optimizer every level: the pruned shapes change
        **{k: v for k, v in _TICKET_COMMON.items() if k not in ("rewind_optimizer", "min_per_layer")},
        "fraction": "share of the remaining channels removed per level",
        "min_keep": "no layer falls below this share of its dense channels (and never below one)",
        "attention": "ViT attention: heads (remove whole heads) or head_dims (shrink every head)",
        "importance_p": "norm of the group magnitude (1 or 2)",
        "normalizer": "normalization of group scores before global ranking: mean, max, sum or none",
        "round_to": "keep channel counts multiples of this (null: any)",
    },
    ("data_selection", "full"): {},
    ("data_selection", "random"): {
        "fraction": "share of the training split drawn per level",
        "sizes_from": "a PrAC run folder: level L draws as many examples as that run's level L trained on",
        "seed": "seed of the draws",
        "resample_each_level": "draw anew at every level",
        "full_first_level": "level 0 trains on the whole split",
        "budget": _BUDGET,
        **_EARLY_BIRD,
        "preset": "reference: PrAC's reference-code settings, for a control spending what PrAC spends (see prac)",
    },
    ("data_selection", "prac"): {
        "forgetting_threshold": "E_F: an example forgotten more than this many times (or never learned) is critical",
        "criteria": "both (CET u CEP, the paper's PrAC set), cet or cep",
        "budget": _BUDGET,
        **_EARLY_BIRD,
        "select_rounds": "prac select: pruned rounds after the dense one",
        "preset": "reference: the reference code's settings for unset keys (early-bird 0.08 over 5 epochs, quadratic budget, conv weights only, rewind 3ep); null: the paper's",
    },
    ("data_selection", "index"): {
        "path": "a *.prac.safetensors index file (local or hf://), checked against the dataset",
        "full_first_level": "level 0 trains on the whole split",
        "budget": _BUDGET,
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
    if section not in ("ticket", "data_selection"):
        raise PracError(f"unknown recipe section {section!r}; sections: {', '.join(SECTIONS)}")
    from .. import registry

    name = strategy or ("ltr" if section == "ticket" else "full")
    return registry.get(section, name).Options, name


def describe(section: str, strategy: Optional[str] = None) -> list[KeyDoc]:
    """The keys of a section (or of a strategy's options), in declaration order."""
    cls, name = section_class(section, strategy)
    hints = typing.get_type_hints(cls)
    table = {**HELP.get((section, name), {}), **getattr(cls, "HELP", {})}
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
    lines = [f"## {title}", "", "| key | type | default | help |", "|---|---|---|---|"]
    lines += [f"| `{d.key}` | {d.type.replace('|', chr(92) + '|')} | `{_cell(d.default)}` | {d.help} |" for d in describe(section, strategy)]
    return "\n".join(lines) + "\n"


def reference(what: str = "") -> str:
    """``prac recipe [SECTION | SECTION.strategy=NAME]``: the tables asked for (all sections and strategies by default)."""
    from .. import registry

    if not what:
        parts = [markdown(s) for s in ("model", "data", "augment", "train")]
        parts += [markdown(kind, name) for kind in ("ticket", "data_selection") for name in registry.available(kind)]
        return "\n".join(parts + [markdown("run")])
    section, _, rest = what.partition(".")
    if rest:
        key, _, name = rest.partition("=")
        if key != "strategy" or not name:
            raise PracError(f"{what!r}: ask for a section (train) or a strategy (ticket.strategy=cts)")
        return markdown(section, name)
    if section in ("ticket", "data_selection"):
        names = registry.available(section)
        return "\n".join(markdown(section, name) for name in names)
    return markdown(section)


# -- starter recipes -----------------------------------------------------------------------------------------------
def examples() -> dict[str, dict]:
    """Starter recipes on the embedded digits, each a few seconds to a minute on a CPU."""
    ltr = copy.deepcopy(QUICKSTART_RECIPE)
    prac = copy.deepcopy(ltr)
    prac["data_selection"] = {"strategy": "prac", "forgetting_threshold": 0, "criteria": "both", "budget": "linear"}
    cts = copy.deepcopy(ltr)
    cts["ticket"] = {"strategy": "cts", "densities": [0.05, 0.02, 0.01], "ignore": ["fc"], "rewind": "1ep", "search_at": "rewind",
                     "objective": "reverse_kl", "search_epochs": 20, "search_batch_size": 512}
    structured = copy.deepcopy(ltr)
    structured["model"] = {"name": "cifar_resnet20"}
    structured["train"].update(epochs=8)
    structured["ticket"] = {"strategy": "structured", "levels": 4, "fraction": 0.2, "scope": "global", "min_keep": 0.1, "rewind": "1ep"}
    return {"ltr": ltr, "prac": prac, "cts": cts, "structured": structured}


_STRATEGY_HELP = {
    "ticket": "ticket strategy: ltr, cts, structured, or a plugin's",
    "data_selection": "data selection: full, random, prac, index, or a plugin's",
}
_EXAMPLE_TITLES = {
    "ltr": "lottery ticket rewinding (IMP with weight rewinding) on the whole training split",
    "prac": "PrAC-LTR: every level trained and pruned on its PrAC set of critical examples",
    "cts": "Concrete Ticket Search: one ticket per target density, searched at the rewind point",
    "structured": "structured tickets: whole channels removed, each level a smaller timm model",
}


def example(name: str) -> str:
    """A commented starter recipe: every key with its line of help. Runs as printed (``prac run FILE``)."""
    recipes = examples()
    if name not in recipes:
        raise PracError(f"--example {name!r} is not one of {', '.join(recipes)}")
    recipe = recipes[name]
    lines = [f"# {_EXAMPLE_TITLES[name]}, on scikit-learn's digits (embedded, offline).",
             f"# prac recipe --example {name} > recipe.yaml && prac run recipe.yaml    (keys: prac recipe SECTION)"]
    for section, values in recipe.items():
        strategy = values.get("strategy") if section in _STRATEGY_HELP else None
        docs = {d.key: d.help for d in describe(section, strategy)}
        docs["strategy"] = _STRATEGY_HELP.get(section, "")
        lines.append(f"{section}:")
        for key, value in values.items():
            text = docs.get(key, "")
            entry = f"  {key}: {_cell(value)}"
            lines.append(f"{entry:<36}# {text}" if text else entry)
    return "\n".join(lines) + "\n"
