"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for a run: parameters, gradients and optimizer state sharded
while a level trains, the run folder written exactly as one process writes it.

What a sharded level does, and why it gives one process's files:
- **Between levels every process holds the plain model** (full weights, the engine's ``unwrapped``): the ticket
  strategy plans from it with the single-process code, so global and layer pruning see the whole model by
  construction, and the run folder is written from it in the single-process format.
- **A level trains a sharded copy** (`Sharding.shard`): each process keeps its rows of every parameter, FSDP2
  gathers them for the forward and backward passes and reduce-scatters the gradients; the mask is enforced on
  the local shards (`ShardedMaskEnforcer`: no full tensor is gathered per step); the optimizer's state is sharded
  like its parameters.
- **Wherever the rest of the engine reads the model during a level** (the rewind point, a mid-level checkpoint,
  an epoch hook, the level's end) the plain model is refreshed from the shards first (`Sharding.gather`: every
  process takes part). BatchNorm buffers are not sharded and FSDP2 does not synchronize them; they are taken
  from process 0, as DDP's buffer broadcast does, so a sharded run keeps the buffers a DDP run keeps.
- Optimizer state crosses the boundary in the single-process layout (`full_optimizer_state`,
  `local_optimizer_state`): checkpoints and the rewind point are the files a DDP run writes.

Launch: ``train.sharding: fsdp2`` in the recipe (``torchrun``), or Accelerate's FSDP config with
``fsdp_version: 2`` (`effective_sharding`). On a CPU Accelerate does not shard (it joins the processes as
``MULTI_CPU`` and ignores the FSDP config), so prac_plugin applies ``fully_shard`` itself in both cases.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from ..errors import PracError

if TYPE_CHECKING:
    from ..config.recipes import Recipe

SHARDING_OPTIONS = ("none", "fsdp2")


def _launcher_flag(name: str, default: bool) -> bool:
    """A yes/no setting ``accelerate launch`` passes to its processes in the environment."""
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes")


def _launcher_sharding() -> str:
    """What ``accelerate launch`` asks for: ``fsdp2``, or ``none`` when it launched without an FSDP config."""
    if not _launcher_flag("ACCELERATE_USE_FSDP", False):
        return "none"
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise PracError(f"accelerate launch asks for FSDP version {version}; prac_plugin shards with FSDP2 only: "
                        "set fsdp_version: 2 in the config's fsdp_config (recipes/accelerate/fsdp2_cpu_2proc.yaml)")
    return "fsdp2"


def effective_sharding(recipe_sharding: str) -> str:
    """The recipe's ``train.sharding``, or the launcher's FSDP2 config when the recipe says ``none``."""
    if recipe_sharding not in SHARDING_OPTIONS:
        raise PracError(f"train.sharding = {recipe_sharding!r} is not one of {', '.join(SHARDING_OPTIONS)}")
    return "fsdp2" if recipe_sharding == "fsdp2" else _launcher_sharding()


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as units, innermost first: each block of a top-level Sequential or ModuleList (a
    timm model's ``blocks``/``stages``/``layers``), each other top-level child that holds parameters, then the
    root. FSDP2 gathers one unit's parameters at a time."""
    units = []
    for child in model.children():
        parts = list(child.children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else [child]
        units.extend(p for p in parts if any(True for _ in p.parameters()))
    return units + [model]


@dataclass
class Sharding:
    """How a run shards each level's model: FSDP2 over the default process group (a 1-d mesh, ``Shard(0)``)."""

    mixed_precision: str = "no"
    reshard_after_forward: bool = True
    local_fraction: float = 1.0  # the share of the parameters' elements this process held in the last sharded copy

    def shard(self, plain: nn.Module) -> nn.Module:
        """A sharded copy of ``plain`` (which is left as it is): every process must call it with identical weights."""
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.mixed_precision == "bf16" else MixedPrecisionPolicy()
        sharded = copy.deepcopy(plain)
        for unit in _shard_units(sharded):
            fully_shard(unit, mp_policy=policy, reshard_after_forward=self.reshard_after_forward)
        params = list(sharded.parameters())
        local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
        self.local_fraction = local / max(1, sum(p.numel() for p in params))
        return sharded

    def figures(self) -> dict:
        return {"mode": "fsdp2", "local_fraction": round(self.local_fraction, 4), "mixed_precision": self.mixed_precision,
                "reshard_after_forward": self.reshard_after_forward}

    @torch.no_grad()
    def gather(self, sharded: nn.Module, plain: nn.Module) -> None:
        """Copy the sharded model's weights into ``plain`` on every process (a collective: every process calls
        it); buffers from process 0."""
        params = dict(plain.named_parameters())
        for name, param in sharded.named_parameters():
            params[name].copy_(param.full_tensor() if isinstance(param, DTensor) else param)
        buffers = dict(plain.named_buffers())
        for name, buffer in sharded.named_buffers():
            value = buffer.detach().clone()
            dist.broadcast(value, src=0)
            buffers[name].copy_(value)

    @staticmethod
    def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's ``state_dict`` with every sharded tensor gathered whole, on the CPU: the layout one
        process's optimizer has (a collective). A snapshot: unlike ``state_dict``, whose plain tensors (Adam's
        ``step``) are the live ones, nothing in it moves when training goes on."""
        state = optimizer.state_dict()
        full = {}
        for key, values in state["state"].items():
            full[key] = {name: _snapshot(value) for name, value in values.items()}
        return {"state": full, "param_groups": state["param_groups"]}

    @staticmethod
    def local_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
        """A single-process optimizer ``state_dict`` turned into this process's shards of it, for ``optimizer``
        over sharded parameters: each tensor shaped like its parameter is split like the parameter."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        local = {}
        for key, values in state["state"].items():
            param = params[int(key)]
            local[key] = {name: _like_param(value, param) for name, value in values.items()}
        return {"state": local, "param_groups": state["param_groups"]}


def _snapshot(value: Any) -> Any:
    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    return value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value


def _like_param(value: Any, param: torch.Tensor) -> Any:
    if isinstance(param, DTensor) and isinstance(value, torch.Tensor) and value.shape == param.shape:
        # every process holds the same full value: each keeps its own chunk, nothing is sent
        return distribute_tensor(value.to(param.to_local().device), param.device_mesh, param.placements, src_data_rank=None)
    return value


class FullStateOptimizer:
    """What a step callback sees of a sharded level's optimizer: its single-process ``state_dict``, gathered
    when the callback is called (every process calls callbacks at the same step)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.param_groups = optimizer.param_groups
        self._state = Sharding.full_optimizer_state(optimizer)

    def state_dict(self) -> dict:
        return self._state


def sharding_for(recipe: "Recipe", accelerator) -> Optional["Sharding"]:
    """FSDP2 sharding when the recipe or the launcher asks for it, and what it cannot honour refused in one line."""
    if effective_sharding(recipe.train.sharding) == "none":
        return None
    if accelerator.num_processes < 2:
        raise PracError("FSDP2 sharding (train.sharding = 'fsdp2' or an FSDP launcher config) needs several processes; "
                        "this run has one: launch it with torchrun or accelerate launch, or set train.sharding: none")
    precision = str(accelerator.mixed_precision)
    if precision not in ("no", "bf16"):
        raise PracError(f"FSDP2 sharding trains in fp32 or bf16; train.mixed_precision = {precision!r} is not supported with it")
    if recipe.train.compile:
        raise PracError("FSDP2 sharding with train.compile is not supported yet; set train.compile: false")
    return Sharding(precision, _launcher_flag("FSDP_RESHARD_AFTER_FORWARD", True))
