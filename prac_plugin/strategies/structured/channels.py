"""Channel-level pruning of one level with torch-pruning, and replay of a pruning history on other weights.

A *structure* is what rebuilds a compact ticket from its dense timm model, as plain JSON::

    {"model": {"name": "cifar_resnet20", "kwargs": {...}}, "input_size": [3, 32, 32],
     "levels": [{"history": [[layer, prunes_outputs, [indices]], ...], "attention": {name: {num_heads, head_dim}}}, ...]}

Each level's history holds torch-pruning's root operations, with indices into the model as it was when that
level was pruned; replaying the levels in order on a fresh dense model reproduces the ticket's architecture
and keeps exactly the surviving channels of whatever weights that model holds (rewind weights, BN statistics).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Optional

import timm
import torch
import torch_pruning as tp
from torch import nn

from ...compat.torch_pruning_private import channel_groups, group_check_deferred, passes_group_check
from ...errors import PracError
from ...tickets.masks import PRUNABLE_MODULES, prunable_parameter_names

# torch-pruning warns for every unwrapped nn.Parameter (ViT pos_embed, cls_token) that it prunes the last dimension: as meant
warnings.filterwarnings("ignore", message=".*Torch-Pruning will prune the last non-singleton dimension.*")
warnings.filterwarnings("ignore", message=".*Unwrapped parameters detected.*")


@dataclass
class ChannelPruning:
    """How one level prunes: ``fraction`` of the remaining channels (``global`` ranking or per ``layer``),
    never below ``min_keep`` of a layer's dense channels (heads for attention), classifier and ``ignore`` kept."""

    fraction: float
    scope: Literal["global", "layer"] = "global"
    min_keep: float = 0.1
    attention: Literal["heads", "head_dims"] = "heads"
    p: int = 2
    normalizer: Literal["mean", "max", "sum", "none"] = "mean"
    round_to: Optional[int] = None
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """timm's multi-head attention modules (``qkv`` Linear, ``num_heads``, ``head_dim``), by name."""
    return {
        name: m for name, m in model.named_modules()
        if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)
        and isinstance(getattr(m, "head_dim", None), int)
    }


def set_attention(model: nn.Module, shapes: dict[str, dict[str, int]]) -> None:
    """Give attention modules their pruned head count and size; ``scale`` follows ``head_dim`` as in
    ``F.scaled_dot_product_attention`` (timm's fused path), so fused and unfused attention agree."""
    modules = attention_modules(model)
    for name, shape in shapes.items():
        attn = modules.get(name)
        if attn is None:
            raise PracError(f"pruning history sets heads of {name!r}, which is not an attention module of {type(model).__name__}")
        heads, dim = int(shape["num_heads"]), int(shape["head_dim"])
        if 3 * heads * dim != attn.qkv.out_features:
            raise PracError(
                f"attention {name!r}: {heads} heads x {dim} dims do not fit its qkv layer ({attn.qkv.out_features} outputs)"
            )
        attn.num_heads, attn.head_dim = heads, dim
        if hasattr(attn, "attn_dim"):
            attn.attn_dim = heads * dim
        if hasattr(attn, "scale"):
            attn.scale = dim ** -0.5


def _widths(module: nn.Module) -> tuple[int, int]:
    """(output, input) channels of a Conv or Linear layer."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.out_channels, module.in_channels


def layer_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(output, input) channels of every Conv/Linear layer: the dense reference for the per-layer floor."""
    return {name: _widths(m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_MODULES)}


@contextmanager
def blame_layer(model: nn.Module, what: str) -> Iterator[None]:
    """Turn an exception raised while ``model`` runs into a `PracError` naming the innermost layer that was running."""
    names = {m: n for n, m in model.named_modules()}
    running: list[str] = []

    def enter(module: nn.Module, args) -> None:
        running.append(names[module])

    def leave(module: nn.Module, args, output) -> None:  # returns None: the output is left alone
        running.pop()

    handles = [h for m in names for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        yield
    except PracError:
        raise
    except Exception as exc:  # torch-pruning and timm raise many types; the user needs the layer and the reason
        layer = running[-1] if running else None
        where = f"layer {layer!r} ({type(model.get_submodule(layer)).__name__})" if layer else f"model {type(model).__name__}"
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PracError(f"{what}: {where} fails: {reason}; leave it out with ticket.ignore or use ticket.strategy: ltr") from None
    finally:
        for handle in handles:
            handle.remove()


def _classifier_modules(model: nn.Module) -> list[nn.Module]:
    get = getattr(model, "get_classifier", None)
    found = get() if callable(get) else None
    found = found if isinstance(found, (tuple, list)) else [found]
    return [m for m in found if isinstance(m, nn.Module)]


class _LevelPruner:
    """One level of group-magnitude channel pruning on ``model`` (in place), with per-layer floors.

    The floor works through the importance: each group's ``floor`` strongest channels (or heads) score +inf,
    so a finite global threshold never takes them; a per-layer top-k, or a global threshold that had to reach
    +inf because the fraction asks for more than the layers hold above their floors, is trimmed to the
    channels above the floor before the group is pruned.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, cfg: ChannelPruning, dense: nn.Module):
        self.model, self.cfg = model, cfg
        self.names = {m: n for n, m in model.named_modules()}
        self.dense_widths = layer_widths(dense)
        self.dense_heads = {n: a.num_heads for n, a in attention_modules(dense).items()}
        self.attention = attention_modules(model)
        self.attention_of_proj = {getattr(a, "proj", None): n for n, a in self.attention.items()}
        keep = {n.rsplit(".", 1)[0] for n in prunable_parameter_names(model, cfg.include, cfg.ignore)}
        ignored = [m for n, m in model.named_modules() if isinstance(m, PRUNABLE_MODULES) and n not in keep]
        self.magnitude = tp.importance.GroupMagnitudeImportance(p=cfg.p, normalizer=None if cfg.normalizer == "none" else cfg.normalizer)
        self.protected: dict[nn.Module, torch.Tensor] = {}
        self.floors: dict[nn.Module, tuple[int, int]] = {}  # root -> (floor, channels per unit: 1, or head_dim for heads)
        heads = cfg.attention == "heads"
        with blame_layer(model, f"torch-pruning cannot trace {type(model).__name__}"):
            self.pruner = tp.pruner.BasePruner(
                model, example, importance=self._importance, global_pruning=cfg.scope == "global",
                pruning_ratio=cfg.fraction, ignored_layers=ignored + _classifier_modules(model), round_to=cfg.round_to,
                num_heads={a.qkv: a.num_heads for a in self.attention.values()},
                prune_num_heads=heads, prune_head_dims=not heads, head_pruning_ratio=cfg.fraction if heads else 0.0,
            )

    def _channel_groups(self, group) -> int:
        dg, pruner = self.pruner.DG, self.pruner
        counts = [
            channel_groups(pruner, dg.is_out_channel_pruning_fn(dep.handler)).get(dep.target.module, 1)
            for dep, _ in group
        ]
        return max(counts, default=1)

    @torch.no_grad()
    def _importance(self, group) -> torch.Tensor:
        imp = self.magnitude(group)
        root, handler = group[0].dep.target.module, group[0].dep.handler
        outputs = self.pruner.DG.is_out_channel_pruning_fn(handler)
        units = imp.view(self._channel_groups(group), -1)  # rows: channel groups (heads), columns: channels in each
        attention = None if outputs else self.attention_of_proj.get(root)
        if attention is not None and self.cfg.attention == "heads":
            floor = max(1, math.ceil(self.cfg.min_keep * self.dense_heads[attention]))
            units[units.mean(1).topk(min(floor, units.shape[0])).indices, :] = math.inf
            self.floors[root] = (floor, units.shape[1])
        else:
            dense = self.dense_widths[self.names[root]][0 if outputs else 1]
            floor = max(1, math.ceil(self.cfg.min_keep * dense / units.shape[0]))
            units[:, units.mean(0).topk(min(floor, units.shape[1])).indices] = math.inf
            self.floors[root] = (floor * units.shape[0], 1)
        self.protected[root] = torch.isinf(imp).cpu()
        return imp

    def step(self) -> tuple[list, list[str]]:
        """Prune; returns torch-pruning's history of this level and the layers now at their floor."""
        dg = self.pruner.DG
        # The pruner drops a group whose selection covers all of its channels before yielding it; with floors the
        # selection may include the protected channels, which are trimmed here, so its check runs after trimming.
        with group_check_deferred(dg):
            for group in self.pruner.step(interactive=True):
                root, handler, idxs = group[0].dep.target.module, group[0].dep.handler, list(group[0].idxs)
                protected = self.protected.get(root)
                kept = [i for i in idxs if protected is None or not protected[i]]
                if len(kept) != len(idxs):
                    if not kept:
                        continue
                    group = dg.get_pruning_group(root, handler, kept)
                if passes_group_check(dg, group):
                    group.prune()
        at_floor = []
        for root, (floor, per_unit) in self.floors.items():
            out, inp = _widths(root)
            width = out if root not in self.attention_of_proj else inp
            if width // per_unit <= floor:
                at_floor.append(self.names[root])
        history = [[name, bool(outputs), [int(i) for i in idxs]] for name, outputs, idxs in self.pruner.pruning_history()]
        return history, sorted(at_floor)


def _pruned_attention(model: nn.Module, mode: str) -> dict[str, dict[str, int]]:
    """Head count and size of every attention module after pruning (``heads`` keeps head_dim, ``head_dims`` the count)."""
    shapes = {}
    for name, attn in attention_modules(model).items():
        qkv = attn.qkv.out_features
        if mode == "heads":
            shapes[name] = {"num_heads": qkv // (3 * attn.head_dim), "head_dim": attn.head_dim}
        else:
            shapes[name] = {"num_heads": attn.num_heads, "head_dim": qkv // (3 * attn.num_heads)}
    return shapes


def check_forward(model: nn.Module, example: torch.Tensor, what: str) -> None:
    """One eval-mode forward pass, a failure naming the layer."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), blame_layer(model, what):
        model(example)
    model.train(was_training)


def prune_level(model: nn.Module, example: torch.Tensor, cfg: ChannelPruning, dense: nn.Module) -> tuple[dict, list[str]]:
    """Prune ``model`` in place by one level (scores from its current weights); returns the level's structure
    entry (history and attention shapes) and the names of the layers left at their floor.

    ``dense`` is the unpruned model of the run (only its widths are read: the floor is relative to it).
    """
    model.eval()  # tracing runs a forward pass: in train mode it would move the BN running statistics
    level = _LevelPruner(model, example, cfg, dense)
    history, at_floor = level.step()
    shapes = _pruned_attention(model, cfg.attention)
    set_attention(model, shapes)
    check_forward(model, example, f"the pruned {type(model).__name__} does not run")
    return {"history": history, "attention": shapes}, at_floor


def _check_entry(model: nn.Module, graph: tp.DependencyGraph, entry, where: str) -> None:
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[2], list)):
        raise PracError(f"{where}: entry {entry!r} should be [layer name, prunes outputs (bool), [indices]]")
    name, outputs, idxs = entry
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise PracError(f"{where} prunes layer {name!r}, which {type(model).__name__} does not have") from None
    pruner = graph.get_pruner_of_module(module)
    width = None if pruner is None else (pruner.get_out_channels(module) if outputs else pruner.get_in_channels(module))
    if width is None:
        raise PracError(f"{where} prunes layer {name!r} ({type(module).__name__}), which has no prunable channels")
    bad = [i for i in idxs if not isinstance(i, int) or not 0 <= i < width]
    if bad or len(set(idxs)) >= width:
        what = f"index {bad[0]!r}" if bad else f"all {width} channels"
        raise PracError(
            f"{where} removes {what} of layer {name!r}, which has {width} {'output' if outputs else 'input'} channels here: "
            "the history was made for another model or model.kwargs"
        )


def replay(model: nn.Module, levels: list, example: torch.Tensor) -> nn.Module:
    """Apply each level's pruning history to ``model`` (in place, keeping its current values at the surviving
    channels, BN running statistics included); every entry is checked against the model before it is applied."""
    model.eval()  # the dependency graph is traced with a forward pass, which must not update BN statistics
    for number, level in enumerate(levels, 1):
        if not isinstance(level, dict) or not isinstance(level.get("history"), list):
            raise PracError(f"pruning history level {number} should be a mapping with a 'history' list")
        with blame_layer(model, f"torch-pruning cannot trace {type(model).__name__}"):
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        for entry in level["history"]:
            _check_entry(model, graph, entry, f"pruning history level {number}")
            graph.load_pruning_history([entry])  # one entry at a time, so each is checked against the current widths
        set_attention(model, level.get("attention", {}))
    return model


def count_macs_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass on ``example`` and the number of parameters (torch-pruning's counter)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device  # level 0 counts the prepared model, on the accelerator's device
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example.to(device))
    model.train(was_training)
    return int(macs), int(params)


def create_dense(structure: dict) -> nn.Module:
    """The dense timm model a structure was pruned from (random weights; callers load theirs)."""
    spec = structure.get("model") if isinstance(structure, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise PracError("ticket structure needs model: {name, kwargs}")
    if not timm.is_model(spec["name"]):
        raise PracError(f"ticket model {spec['name']!r} is not in timm's registry")
    try:
        return timm.create_model(spec["name"], pretrained=False, **spec.get("kwargs", {}))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PracError(f"timm could not create ticket model {spec['name']!r} with {spec.get('kwargs')}: {exc}") from None


def example_input(structure: dict) -> torch.Tensor:
    size = structure.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise PracError(f"ticket structure input_size = {size!r} should be [channels, height, width]")
    return torch.zeros(1, *size)
