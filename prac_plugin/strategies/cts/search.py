"""Concrete Ticket Search (Arora & Teuscher, 2025): search a whole mask near initialization.

One logit per prunable weight; every forward draws logistic noise and uses the soft mask
sigmoid((logit + noise) / temperature) on frozen weights (un-augmented inputs; BatchNorm normalises with the
statistics of the current batch, as in the authors' networks, or with frozen running statistics). The loss is a
divergence between the sparse and the dense network's outputs (reverse KL by default, scaled by 100), and
GradBalance adds the gradient of a density penalty, weighted so the expected density stays on target
(optionally a Lagrangian multiplier updated by dual ascent instead). ``concrete_form: reference_code`` uses
the gate of the authors' released code instead, sigmoid(logit + noise / temperature).
The ticket keeps exactly the top round(density * d) logits.

Memory: the masked weights are formed per layer inside ``torch.func.functional_call``; besides the
logits (and Adam's two moments) at most one masked copy of the prunable weights exists at a time.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ...models.batchnorm import batch_statistics
from ...errors import PracError
from ...tickets.masks import TicketMask, keep_largest_per_tensor_floor
from .checks import cts_keep_count
from .options import BATCHNORM_MODES, OBJECTIVES, check_search_settings


def divergence(sparse_logits: torch.Tensor, dense_logits: torch.Tensor, objective: str, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean per-example objective: KL(p_sparse || p_dense), KL(p_dense || p_sparse) or cross-entropy."""
    log_sparse = F.log_softmax(sparse_logits.float(), dim=1)
    log_dense = F.log_softmax(dense_logits.float(), dim=1)
    if objective == "reverse_kl":
        return (log_sparse.exp() * (log_sparse - log_dense)).sum(1).mean()
    if objective == "forward_kl":
        return (log_dense.exp() * (log_dense - log_sparse)).sum(1).mean()
    if objective == "cross_entropy":
        return F.nll_loss(log_sparse, labels)
    raise PracError(f"unknown CTS objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


def concrete_gate_(noise: torch.Tensor, logits: torch.Tensor, temperature: float, form: str = "paper") -> torch.Tensor:
    """Turn uniform draws ``noise`` (in place, to save a copy of the weights) into the soft mask.

    ``paper``: sigmoid((logit + L) / T) with L = log u - log(1 - u), so a gate is above 1/2 with probability
    sigmoid(logit), the density GradBalance controls. ``reference_code``: sigmoid(logit + L / T), the authors'
    released code (its logits are scaled by T before the division); there a gate is above 1/2 with probability
    sigmoid(T * logit), denser than the controlled sigmoid(logit) for sparse targets.
    """
    noise.clamp_(1e-6, 1 - 1e-6).logit_()
    if form == "paper":
        return noise.add_(logits).div_(temperature).sigmoid_()
    return noise.div_(temperature).add_(logits).sigmoid_()


def gate_backward_(grad: torch.Tensor, soft: torch.Tensor, temperature: float, form: str = "paper") -> torch.Tensor:
    """Chain rule through the gate by hand, in ``grad``'s memory (``soft`` is consumed):
    d soft / d logit = soft (1 - soft) / T in the ``paper`` form, soft (1 - soft) in ``reference_code``."""
    grad.mul_(soft).mul_(soft.neg_().add_(1.0))
    return grad.div_(temperature) if form == "paper" else grad


class GradBalance:
    """Keeps the expected density sum(sigmoid(logits)) / d at the target.

    With A = factor * density * d and err = 100 * (sum(sigmoid) / A - 1), the penalty gradient
    g_s = (100 / A) * sigmoid * (1 - sigmoid) is added to the task gradient g_t with weight lambda, where
    lambda* = |g_t| / |g_s| while err > 0 (too dense) and 0 otherwise, smoothed as
    lambda <- momentum * lambda + (1 - momentum) * lambda* (lambda = lambda* on the first step).
    """

    def __init__(self, density: float, num_weights: int, factor: float = 1.1, momentum: float = 0.99):
        self.allowed = factor * density * num_weights
        self.momentum = momentum
        self.lam: Optional[torch.Tensor] = None

    def error(self, logits: torch.Tensor) -> torch.Tensor:
        return 100.0 * (torch.sigmoid(logits).sum() / self.allowed - 1.0)

    @torch.no_grad()
    def combine(self, logits: torch.Tensor, task_grad: torch.Tensor) -> torch.Tensor:
        """The gradient to apply: task gradient plus the weighted density-penalty gradient (in ``task_grad``'s memory)."""
        penalty_grad = torch.sigmoid(logits)
        error = 100.0 * (penalty_grad.sum() / self.allowed - 1.0)
        penalty_grad.mul_(penalty_grad.neg().add_(1.0)).mul_(100.0 / self.allowed)  # (100 / A) s (1 - s)
        ratio = task_grad.norm() / penalty_grad.norm().clamp_min(1e-30)
        target = torch.where(error > 0, ratio, torch.zeros_like(ratio))  # no host sync
        self.lam = target if self.lam is None else self.momentum * self.lam + (1.0 - self.momentum) * target
        return task_grad.add_(penalty_grad.mul_(self.lam))


class Lagrangian:
    """Keeps the expected density at the target by dual ascent, an alternative to GradBalance.

    The penalty lambda * err (err = 100 * (sum(sigmoid(logits)) / A - 1), A = factor * density * d, as in
    GradBalance) is added to the loss, so its gradient lambda * (100 / A) * sigmoid * (1 - sigmoid) is added to
    the task gradient; after every step lambda <- max(0, lambda + dual_lr * err). Unlike GradBalance, lambda
    does not follow the task gradient's norm: it grows while the logits are too dense and shrinks back once they
    are sparse enough, so it settles where the penalty balances the task on average.
    """

    def __init__(self, density: float, num_weights: int, factor: float = 1.1, dual_lr: float = 0.01):
        self.allowed = factor * density * num_weights
        self.dual_lr = dual_lr
        self.lam: Optional[torch.Tensor] = None

    @torch.no_grad()
    def combine(self, logits: torch.Tensor, task_grad: torch.Tensor) -> torch.Tensor:
        """The gradient to apply (in ``task_grad``'s memory), then the dual step on lambda."""
        penalty_grad = torch.sigmoid(logits)
        error = 100.0 * (penalty_grad.sum() / self.allowed - 1.0)
        penalty_grad.mul_(penalty_grad.neg().add_(1.0)).mul_(100.0 / self.allowed)
        lam = torch.zeros_like(error) if self.lam is None else self.lam
        task_grad.add_(penalty_grad.mul_(lam))
        self.lam = (lam + self.dual_lr * error).clamp_min(0.0)  # no host sync
        return task_grad


@contextmanager
def frozen_parameters(model: torch.nn.Module):
    """The search trains only its logits: the model's parameters need no gradient meanwhile."""
    requires = {p: p.requires_grad for p in model.parameters()}
    for p in requires:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in requires.items():
            p.requires_grad_(flag)


@contextmanager
def search_mode(model: torch.nn.Module, batchnorm: str):
    """Eval mode for the search (no dropout), BatchNorm normalising with ``batchnorm`` statistics; on exit the
    modules' modes are as they were and no BatchNorm buffer has changed.

    ``batch`` (the CTS authors', whose ResNets use ``track_running_stats=False``): teacher and masked network
    normalise with the current batch's statistics. ``running``: with the dense model's frozen running statistics,
    not the authors' method: at 1-3% density the soft mask shrinks pre-BN activations roughly by the density,
    frozen statistics do not rescale them, the relaxed network turns nearly input-blind and the top-k can empty
    whole layers.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise PracError(f"unknown CTS batchnorm mode {batchnorm!r}; choose one of {', '.join(BATCHNORM_MODES)}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with batch_statistics(model) if batchnorm == "batch" else nullcontext():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


@dataclass
class ConcreteSearchConfig:
    density: float
    steps: int
    lr: float = 0.1
    decay_at: float = 0.88
    decay_gamma: float = 0.1
    temperature: float = 2.0 / 3.0
    final_temperature: Optional[float] = None  # anneal geometrically to this value when set
    objective: str = "reverse_kl"
    loss_scale: float = 100.0
    target_factor: float = 1.1
    lambda_momentum: float = 0.99
    sparsity_control: str = "gradbalance"
    dual_lr: float = 0.01  # lagrangian only
    concrete_form: str = "paper"
    batchnorm: str = "batch"
    min_per_layer: int = 0  # the ticket keeps at least this many weights of each tensor
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.density < 1.0:
            raise PracError(f"CTS density {self.density!r} is outside (0, 1)")
        if self.steps < 1:
            raise PracError(f"CTS search needs at least one step (got {self.steps})")
        check_search_settings(self.objective, self.sparsity_control, self.concrete_form, self.batchnorm, self.dual_lr)

    def density_control(self, num_weights: int):
        """GradBalance (the paper's) or Lagrangian dual ascent, for ``num_weights`` prunable weights."""
        if self.sparsity_control == "lagrangian":
            return Lagrangian(self.density, num_weights, self.target_factor, self.dual_lr)
        return GradBalance(self.density, num_weights, self.target_factor, self.lambda_momentum)


@dataclass
class SearchResult:
    mask: TicketMask
    steps: int
    forward_passes: int  # examples through the network (dense + sparse)
    backward_passes: int  # examples through backward
    wall_time: float
    expected_density: float
    history: list = field(default_factory=list)


def concrete_ticket_search(
    model: torch.nn.Module,
    names: list[str],
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    cfg: ConcreteSearchConfig,
    reduce_grad: Callable[[torch.Tensor], torch.Tensor] = lambda g: g,
) -> SearchResult:
    """Search a mask over the weights ``names`` of ``model`` (left unchanged) with ``cfg.steps`` Adam steps.

    ``batches(epoch)`` yields (images, labels) of un-augmented training data; ``reduce_grad`` averages the
    logit gradient across processes when there are several.
    """
    params = dict(model.named_parameters())
    weights = [params[n].detach() for n in names]
    sizes = [w.numel() for w in weights]
    total = sum(sizes)
    if total == 0:
        raise PracError("CTS found no prunable weights in the model")
    device = weights[0].device
    init = math.log(cfg.density / (1.0 - cfg.density))
    logits = torch.full((total,), init, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=cfg.lr)
    balance = cfg.density_control(total)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    started = time.perf_counter()
    step = forward = backward = 0
    history = []
    with frozen_parameters(model), search_mode(model, cfg.batchnorm):
        epoch = 0
        while step < cfg.steps:
            for images, labels in batches(epoch):
                if step == int(cfg.decay_at * cfg.steps):
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * cfg.decay_gamma
                temperature = cfg.temperature
                if cfg.final_temperature is not None:
                    temperature = cfg.temperature * (cfg.final_temperature / cfg.temperature) ** (step / max(1, cfg.steps - 1))
                with torch.no_grad():
                    dense_logits = model(images)
                    soft = concrete_gate_(torch.rand(total, device=device, generator=generator), logits, temperature, cfg.concrete_form)
                soft.requires_grad_(True)
                masked = {n: w * m.view_as(w) for n, w, m in zip(names, weights, soft.split(sizes))}
                sparse_logits = functional_call(model, masked, (images,))
                loss = cfg.loss_scale * divergence(sparse_logits, dense_logits, cfg.objective, labels)
                (task_grad,) = torch.autograd.grad(loss, soft)
                del masked, sparse_logits
                with torch.no_grad():
                    gate_backward_(task_grad, soft.detach(), temperature, cfg.concrete_form)
                    del soft
                logits.grad = balance.combine(logits.detach(), reduce_grad(task_grad))
                optimizer.step()
                logits.grad = None  # not alive during the next forward and backward
                forward += 2 * labels.numel()
                backward += labels.numel()
                step += 1
                if step % max(1, cfg.steps // 20) == 0 or step == cfg.steps:
                    history.append({"step": step, "loss": float(loss.detach()), "expected_density": float(torch.sigmoid(logits.detach()).mean()),
                                    "lambda": float(balance.lam)})
                if step >= cfg.steps:
                    break
            epoch += 1
    keep = cts_keep_count(cfg.density, total)
    del optimizer  # free Adam's moments before sorting the logits
    flags = keep_largest_per_tensor_floor(logits.detach().float().cpu().split(sizes), keep, cfg.min_per_layer)
    mask = TicketMask({n: f.view_as(w) for n, f, w in zip(names, flags, weights)})
    return SearchResult(mask, step, forward, backward, time.perf_counter() - started, float(torch.sigmoid(logits.detach()).mean()), history)
