"""Recipes: the YAML schema of a run, loading, validation and ``--set key=value`` overrides."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .schema import from_dict, to_dict
from ..errors import PracError, not_a_file, shown
from .. import registry


@dataclass
class ModelSection:
    """Any ``timm.create_model`` name; num_classes and in_chans default to the dataset's."""

    name: str = "lenet_300_100"
    pretrained: bool = False
    num_classes: Optional[int] = None
    in_chans: Optional[int] = None
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("num_classes", "in_chans"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise PracError(f"model.{key} = {getattr(self, key)} must be at least 1 (or null for the dataset's)")


@dataclass
class AugmentSection:
    random_crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self):
        if self.random_crop_padding < 0:
            raise PracError(f"data.augment.random_crop_padding = {self.random_crop_padding} must be 0 (no crop) or more")


@dataclass
class DataSection:
    """Arguments of ``datasets.load_dataset`` plus how to split, decode and augment.

    ``path`` is a Hub id, a builder (``parquet``, ``imagefolder``, ``arrow``), a local folder, or one of
    the plugin's offline built-ins: ``builtin:digits`` (scikit-learn), ``builtin:fashion_mnist`` (idx files).
    """

    path: str = "builtin:digits"
    name: Optional[str] = None
    data_dir: Optional[str] = None
    data_files: Union[str, list, dict, None] = None
    revision: Optional[str] = None
    cache_dir: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = None
    test_split: Optional[str] = None
    val_fraction: Optional[float] = 0.1
    split_seed: int = 0
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    in_memory: Union[bool, Literal["auto"]] = "auto"
    image_size: Optional[int] = None
    crop_pct: Optional[float] = None
    augment: AugmentSection = field(default_factory=AugmentSection)
    normalize: Union[Literal["auto", "dataset", "model", "none"], dict] = "auto"
    num_workers: int = 2

    def __post_init__(self):
        if self.num_workers < 0:
            raise PracError(f"data.num_workers = {self.num_workers} must be 0 or more")
        if self.image_size is not None and self.image_size < 1:
            raise PracError(f"data.image_size = {self.image_size} must be at least 1 (or null for the images' own size)")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise PracError(f"data.val_fraction = {self.val_fraction} must be in [0, 1)")
        if not 0 <= self.split_seed < 2**63:  # a torch generator seed
            raise PracError(f"data.split_seed = {self.split_seed} must be in 0..2**63-1")
        if self.crop_pct is not None and not 0.0 < self.crop_pct <= 1.0:
            raise PracError(f"data.crop_pct = {self.crop_pct} must be in (0, 1]")


@dataclass
class TrainSection:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1024
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True
    schedule: Literal["constant", "step", "cosine"] = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: Optional[float] = None
    mixed_precision: Union[Literal["no", "bf16", "fp16"], bool] = "no"  # YAML reads a bare `no` as false
    cpu: bool = False
    seed: int = 0
    eval_every_epochs: int = 0
    deterministic: bool = False
    channels_last: bool = False
    compile: Union[bool, Literal["inductor", "aot_eager", "eager", "cudagraphs"]] = False  # torch.compile backend
    cuda_graphs: Union[Literal["auto", "on", "off"], bool] = "auto"  # YAML reads bare on/off as true/false
    sharding: Literal["none", "fsdp2"] = "none"  # or the launcher's FSDP2 config (engine/sharding.py)

    def __post_init__(self):
        if self.mixed_precision is False:
            self.mixed_precision = "no"
        elif self.mixed_precision is True:
            raise PracError("train.mixed_precision = true is ambiguous; choose one of 'no', 'bf16', 'fp16'")
        if self.cuda_graphs is True or self.cuda_graphs is False:
            self.cuda_graphs = "on" if self.cuda_graphs else "off"
        if self.nesterov and self.momentum <= 0:
            raise PracError(f"train.nesterov needs a positive train.momentum (got {self.momentum})")
        if self.epochs < 1:
            raise PracError(f"train.epochs = {self.epochs} must be at least 1")
        if self.batch_size < 1:
            raise PracError(f"train.batch_size = {self.batch_size} must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PracError(f"train.lr = {self.lr} must be a positive finite number")
        if not 0.0 <= self.momentum < 1.0:
            raise PracError(f"train.momentum = {self.momentum} must be in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise PracError(f"train.weight_decay = {self.weight_decay} must be 0 or a positive finite number")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise PracError(f"train.grad_clip = {self.grad_clip} must be a positive finite number (or null for none)")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise PracError(f"train.gamma = {self.gamma} must be a positive finite number")
        for key in ("eval_batch_size",):
            if getattr(self, key) < 1:
                raise PracError(f"train.{key} = {getattr(self, key)} must be at least 1")
        if self.seed >= 2**32:  # numpy's seed range, which Accelerate's set_seed seeds too
            raise PracError(f"train.seed = {self.seed} must be in 0..2**32-1")
        for key in ("warmup_steps", "seed", "eval_every_epochs"):
            if getattr(self, key) < 0:
                raise PracError(f"train.{key} = {getattr(self, key)} must be 0 or more")
        bad = [m for m in self.milestones if not 0 < m <= self.epochs]
        if bad:
            raise PracError(f"train.milestones entry {bad[0]} is outside 1..{self.epochs} (train.epochs)")


@dataclass
class RunSection:
    """How a run is kept, not what it computes (changing it never makes a run directory foreign)."""

    output_dir: Optional[str] = None
    tracker: Literal["auto", "tensorboard", "none"] = "auto"
    checkpoint_every: str = "1ep"  # mid-level checkpoints: "1ep", "500it" or "none"
    checkpoint_keep: int = 2

    def __post_init__(self):
        CheckpointPolicy.parse(self.checkpoint_every, self.checkpoint_keep)


@dataclass
class Recipe:
    model: ModelSection
    data: DataSection
    train: TrainSection
    ticket: Any  # strategy options dataclass, with ``strategy`` key
    data_selection: Any
    run: RunSection

    def to_dict(self) -> dict:
        return to_dict(self)


SECTIONS = ("model", "data", "train", "ticket", "data_selection", "run")


def _strategy_section(raw: Any, section: str, kind: str) -> Any:
    """A strategy section's options, validated by the strategy's declared options class (its strategy module is
    not imported: a recipe is read without torch)."""
    if raw is not None and not isinstance(raw, dict):
        raise PracError(f"{section} should be a mapping of keys, got {shown(raw)}")
    raw = dict(raw or {})
    name = raw.pop("strategy", registry.default(kind))
    if not isinstance(name, str):
        raise PracError(f"{section}.strategy = {shown(name)} should be a strategy name")
    options = from_dict(registry.spec(kind, name).Options, raw, section)
    options.strategy = name
    return options


def apply_preset(raw: dict) -> dict:
    """Fill the keys a ``data_selection.preset`` sets and the recipe leaves unset (the recipe's own values win);
    ticket keys the ticket strategy does not have are left out. The resolved recipe records every value."""
    section = raw.get("data_selection")
    if not isinstance(section, dict) or section.get("preset") is None:
        return raw
    name, strategy = section["preset"], section.get("strategy", registry.default("data_selection"))
    if not isinstance(name, str):
        raise PracError(f"data_selection.preset = {shown(name)} should be a preset name (or null)")
    presets = getattr(registry.spec("data_selection", strategy), "presets", {}) if isinstance(strategy, str) else {}
    if name not in presets:
        allowed = ", ".join(map(repr, presets)) or "none"
        raise PracError(f"data_selection.preset = {name!r} is not a preset of data_selection.strategy {strategy!r} (presets: {allowed})")
    resolved = dict(raw)
    ticket = raw.get("ticket") if isinstance(raw.get("ticket"), dict) else {}
    ticket_name = ticket.get("strategy", registry.default("ticket"))
    ticket_fields = {f.name for f in dataclasses.fields(registry.spec("ticket", ticket_name).Options)} if isinstance(ticket_name, str) else set()
    for key, values in presets[name].items():
        given = raw.get(key)
        if given is not None and not isinstance(given, dict):
            return raw  # parse_recipe names the malformed section
        merged = dict(given or {})
        for option, value in values.items():
            if key != "ticket" or option in ticket_fields:
                merged.setdefault(option, value)
        resolved[key] = merged
    return resolved


def parse_recipe(raw: Any) -> Recipe:
    """Validate a recipe dict: unknown keys and wrong types raise `PracError` naming the key."""
    if not isinstance(raw, dict):
        raise PracError(f"a recipe must be a mapping with sections {', '.join(SECTIONS)}; got {type(raw).__name__}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise PracError(f"unknown recipe section {unknown[0]!r}; allowed sections: {', '.join(SECTIONS)}")
    raw = apply_preset(raw)
    return Recipe(
        model=from_dict(ModelSection, raw.get("model"), "model"),
        data=from_dict(DataSection, raw.get("data"), "data"),
        train=from_dict(TrainSection, raw.get("train"), "train"),
        ticket=_strategy_section(raw.get("ticket"), "ticket", "ticket"),
        data_selection=_strategy_section(raw.get("data_selection"), "data_selection", "data_selection"),
        run=from_dict(RunSection, raw.get("run"), "run"),
    )


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a copy of a raw recipe."""
    raw = copy.deepcopy(raw)
    if overrides and not isinstance(raw, dict):
        raise PracError(f"a recipe must be a mapping with sections {', '.join(SECTIONS)}; got {type(raw).__name__}")
    for item in overrides:
        if "=" not in item:
            raise PracError(f"override {shown(item)} should look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise PracError(f"override key {shown(key)} should name a section and a key, e.g. train.epochs")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PracError(f"override {shown(key)}: {part!r} is not a section")
            node = child
        try:
            value = _bounded_yaml(text, f"override {shown(item)}")
        except (yaml.YAMLError, *_TAG_ERRORS) as exc:
            raise PracError(f"override {shown(item)}: value is not valid YAML ({exc.__class__.__name__})") from None
        node[parts[-1]] = value
    return raw


# yaml's constructors for explicit tags (``!!float abc``, ``!!float ''``, ``!!timestamp 2020-13-45``) raise these
# instead of a YAMLError
_TAG_ERRORS = (ValueError, IndexError, TypeError, OverflowError)
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of YAML; a megabyte is already a mistake
MAX_RECIPE_NODES = 100_000  # values after aliases are expanded: a few hundred in a real recipe


class _BoundedLoader(yaml.SafeLoader):
    """yaml's safe loader, counting aliases (a recipe needs few, an alias bomb needs many) and reading ``1e-3`` as
    a float as YAML 1.2 does (YAML 1.1 wants ``1.0e-3`` and would leave ``lr: 1e-3`` a string)."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > 1000:
                raise PracError("more than 1000 YAML aliases")
        return super().compose_node(parent, index)


_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def _check_size(value: Any, budget: list[int]) -> None:
    """Walk the loaded recipe as it would be copied and written out, stopping once it exceeds the node budget."""
    budget[0] -= 1
    if budget[0] < 0:
        raise PracError(f"more than {MAX_RECIPE_NODES:,} values once YAML aliases are expanded")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _check_size(child, budget)


def _bounded_yaml(text: str, what: str) -> Any:
    """YAML ``text`` read safely with aliases and size bounded; a refusal names ``what``. YAML syntax and tag
    errors pass through for the caller to word."""
    try:
        value = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506  (a SafeLoader subclass)
        _check_size(value, [MAX_RECIPE_NODES])
    except PracError as exc:
        raise PracError(f"{what} is refused: {exc}") from None
    except RecursionError:
        raise PracError(f"{what} is refused: nested too deeply") from None
    return value


def load_recipe_dict(path: str | Path, what: str = "recipe") -> dict:
    """A recipe file's mapping: UTF-8 YAML of bounded size, whose aliases do not expand beyond `MAX_RECIPE_NODES`.
    ``what`` names the file in errors (a run folder's recipe.yaml is worded as damaged, not as a user's mistake)."""
    path = Path(path)
    where = f"{what} {str(path)!r}"
    problem = not_a_file(path)
    if problem:
        raise PracError(f"{where} {problem}")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise PracError(f"{where} is {path.stat().st_size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PracError(f"{where} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from None
    try:
        raw = _bounded_yaml(text, where)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PracError(f"{where} is not valid YAML{at}") from None
    except _TAG_ERRORS as exc:
        raise PracError(f"{where} is not valid YAML: a value yaml cannot read, e.g. one its !!tag does not fit ({exc.__class__.__name__})") from None
    return raw if raw is not None else {}


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    return parse_recipe(apply_overrides(load_recipe_dict(path), overrides or []))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


_EVERY = re.compile(r"^(\d+)(ep|it)$")


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to checkpoint inside a level: every N epochs, every N optimizer steps, or never."""

    every_epochs: int = 0
    every_steps: int = 0
    keep: int = 2

    @classmethod
    def parse(cls, every: str | int | None, keep: int = 2) -> "CheckpointPolicy":
        if keep < 1:
            raise PracError(f"run.checkpoint_keep = {keep} must be at least 1")
        text = str(every).strip().lower() if every is not None else "none"
        if text in ("none", "no", "false", "0", "off"):
            return cls(keep=keep)
        match = _EVERY.match(text)
        if not match or int(match.group(1)) == 0:
            raise PracError(f"run.checkpoint_every = {every!r} is not understood; write e.g. 1ep, 500it or none")
        count = int(match.group(1))
        return cls(count if match.group(2) == "ep" else 0, count if match.group(2) == "it" else 0, keep)

    @property
    def enabled(self) -> bool:
        return bool(self.every_epochs or self.every_steps)

    def due_inside_epoch(self, step: int, steps_per_epoch: int, total_steps: int) -> bool:
        """After an optimizer step that does not end an epoch (epoch ends checkpoint after their bookkeeping)."""
        return bool(self.every_steps) and step % self.every_steps == 0 and step % steps_per_epoch != 0 and step < total_steps

    def due_at_epoch_end(self, epochs_done: int, step: int) -> bool:
        if self.every_epochs:
            return epochs_done % self.every_epochs == 0
        return bool(self.every_steps) and step % self.every_steps == 0
