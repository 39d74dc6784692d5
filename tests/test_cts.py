"""Concrete Ticket Search: objectives, GradBalance, exact survivor counts, frozen weights, end to end."""

import json
import math

import pytest
import torch

import prac_plugin
from prac_plugin import PracError, TicketMask
from prac_plugin.tickets.masks import prunable_parameter_names
from prac_plugin.strategies.cts.search import GradBalance, Lagrangian, divergence
from prac_plugin.strategies.cts.search import ConcreteSearchConfig
from prac_plugin.strategies.cts.search import concrete_ticket_search
from prac_plugin.strategies.cts.search import concrete_gate_, gate_backward_

from conftest import quick_recipe


def test_reverse_and_forward_kl_are_taken_in_the_right_order():
    p, q = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.5, 0.5]])
    sparse, dense = p.log(), q.log()  # logits whose softmax is p (sparse) and q (dense)
    kl_pq = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.3681
    kl_qp = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.5108
    assert divergence(sparse, dense, "reverse_kl").item() == pytest.approx(kl_pq, rel=1e-5)
    assert divergence(sparse, dense, "forward_kl").item() == pytest.approx(kl_qp, rel=1e-5)
    assert divergence(sparse, dense, "cross_entropy", torch.tensor([1])).item() == pytest.approx(-math.log(0.1), rel=1e-5)
    assert divergence(dense, dense, "reverse_kl").item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("form, open_probability", [("paper", lambda t, T: torch.sigmoid(t)), ("reference_code", lambda t, T: torch.sigmoid(T * t))])
def test_concrete_gate_forms_and_their_chain_rule_slope(form, open_probability):
    T = 2.0 / 3.0
    u = torch.tensor([0.2, 0.5, 0.9])
    theta = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    noise = torch.log(u) - torch.log1p(-u)
    expected = torch.sigmoid((theta + noise) / T) if form == "paper" else torch.sigmoid(theta + noise / T)
    soft = concrete_gate_(u.clone(), theta, T, form)
    assert torch.allclose(soft, expected, atol=1e-6)
    # the search applies the gate's derivative by hand; it must equal autograd's
    upstream = torch.tensor([0.3, -1.0, 2.0])
    (grad,) = torch.autograd.grad(soft, theta, upstream)
    assert torch.allclose(gate_backward_(upstream.clone(), soft.detach().clone(), T, form), grad, atol=1e-6)
    # how often a gate is open (above 1/2) for logit(0.05): 5% in the paper's form, more in the reference code's
    logit = torch.full((200_000,), math.log(0.05 / 0.95))
    draws = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    opened = (concrete_gate_(draws, logit, T, form) > 0.5).float().mean()
    assert opened.item() == pytest.approx(open_probability(logit[0], T).item(), abs=0.002)


def test_gradbalance_penalty_only_while_too_dense():
    balance = GradBalance(density=0.1, num_weights=100)  # allowed: 11 expected survivors
    task = torch.randn(100)
    sparse_enough = torch.full((100,), math.log(0.05 / 0.95))
    assert torch.equal(balance.combine(sparse_enough, task.clone()), task)  # err < 0: lambda* = 0
    too_dense = torch.full((100,), math.log(0.5 / 0.5))
    fresh = GradBalance(density=0.1, num_weights=100)
    out = fresh.combine(too_dense, task.clone())
    penalty = (100 / 11) * 0.25 * torch.ones(100)
    assert torch.allclose(out, task + task.norm() / penalty.norm() * penalty)  # lambda = lambda* on the first step
    again = fresh.combine(too_dense, 2 * task)  # then the moving average
    lam = 0.99 * (task.norm() / penalty.norm()) + 0.01 * (2 * task.norm() / penalty.norm())
    assert torch.allclose(again, 2 * task + lam * penalty, rtol=1e-5)


def test_lagrangian_adds_the_penalty_at_the_current_multiplier_then_takes_a_dual_step():
    control = Lagrangian(density=0.1, num_weights=100, dual_lr=0.5)  # allowed: 11 expected survivors
    task = torch.randn(100)
    too_dense = torch.zeros(100)  # sigmoid 0.5: 50 expected survivors, err = 100 * (50 / 11 - 1)
    error = 100 * (50 / 11 - 1)
    assert torch.equal(control.combine(too_dense, task.clone()), task)  # lambda starts at 0
    assert control.lam.item() == pytest.approx(0.5 * error)
    penalty = (100 / 11) * 0.25 * torch.ones(100)
    assert torch.allclose(control.combine(too_dense, task.clone()), task + 0.5 * error * penalty)
    sparse_enough = torch.full((100,), math.log(0.01 / 0.99))  # 1 expected survivor: err = 100 * (1 / 11 - 1)
    control.combine(sparse_enough, task.clone())
    assert control.lam.item() == pytest.approx(2 * 0.5 * error + 0.5 * 100 * (1 / 11 - 1), rel=1e-5)  # shrinks...
    for _ in range(10):
        control.combine(sparse_enough, task.clone())
    assert control.lam.item() == 0.0  # ...and never below zero


@pytest.mark.parametrize("control, holds", [("lagrangian", True), ("gradbalance", False)])
def test_only_the_lagrangian_holds_the_budget_against_a_task_that_wants_every_weight(control, holds):
    # Every logit's task gradient pulls it up (through the sigmoid, as a real loss does). GradBalance weighs the
    # penalty at most as much as the task (lambda* = |g_t| / |g_s|), so the strongly pulled logits escape; the
    # Lagrangian multiplier keeps growing until the expected density is back at 1.1 x target.
    density, d = 0.1, 1000
    logits = torch.full((d,), math.log(density / (1 - density)), requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    cfg = ConcreteSearchConfig(density, 1, sparsity_control=control, dual_lr=0.1)
    balance = cfg.density_control(d)
    pull = torch.rand(d, generator=torch.Generator().manual_seed(0))
    expected = []
    for _ in range(1500):
        s = torch.sigmoid(logits.detach())
        logits.grad = balance.combine(logits.detach(), -pull * s * (1 - s))
        optimizer.step()
        expected.append(torch.sigmoid(logits.detach()).mean().item())
    late = sum(expected[-300:]) / 300
    if holds:
        assert 0.09 <= late <= 0.12  # 1.1 x 0.1 = 0.11, oscillating around it
    else:
        assert late > 0.4


def test_search_with_the_lagrangian_keeps_the_exact_count_and_freezes_the_model(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    names = prunable_parameter_names(tiny_net, ignore=["fc"])
    cfg = ConcreteSearchConfig(density=0.1, steps=100, seed=0, sparsity_control="lagrangian")
    result = concrete_ticket_search(tiny_net, names, toy_batches(), cfg)
    assert result.mask.num_remaining == 148 and result.expected_density <= 0.1 * 1.1
    assert all(torch.equal(value, before[key]) for key, value in tiny_net.state_dict().items())


def toy_batches(seed=0, n=256, batch=64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)

    def batches(epoch):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for chunk in order.split(batch):
            yield x[chunk], y[chunk]

    return batches


def test_search_drives_density_to_target_keeps_exact_count_and_freezes_the_model(tiny_net):
    for _ in range(3):  # give BN running statistics non-trivial values
        tiny_net(torch.randn(32, 1, 8, 8))
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    names = prunable_parameter_names(tiny_net, ignore=["fc"])
    total = sum(dict(tiny_net.named_parameters())[n].numel() for n in names)
    cfg = ConcreteSearchConfig(density=0.1, steps=300, seed=0)
    result = concrete_ticket_search(tiny_net, names, toy_batches(), cfg)
    assert result.mask.num_remaining == round(0.1 * total) == 148
    assert result.mask.num_total == total and sorted(result.mask.masks) == sorted(names)
    assert 0.08 <= result.expected_density <= 0.1 * 1.1 * 1.02  # held at or just under 1.1 x target
    # the task pulls the density up; GradBalance engages (lambda > 0) and brings it back to 1.1 x target
    assert max(h["expected_density"] for h in result.history) > 0.1 * 1.1 * 1.02
    assert any(h["lambda"] > 0 for h in result.history) and result.history[-1]["expected_density"] <= 0.1 * 1.1 * 1.02
    for key, value in tiny_net.state_dict().items():  # weights and BN statistics untouched
        assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in tiny_net.parameters()) and tiny_net.training
    assert result.forward_passes == 2 * result.backward_passes == 2 * 300 * 64


def test_search_is_deterministic_and_ties_break_by_index(tiny_net):
    names = prunable_parameter_names(tiny_net, ignore=["fc"])
    cfg = ConcreteSearchConfig(density=0.2, steps=20, seed=3)
    a = concrete_ticket_search(tiny_net, names, toy_batches(), cfg).mask
    b = concrete_ticket_search(tiny_net, names, toy_batches(), cfg).mask
    assert a.equal(b)
    from prac_plugin.tickets.masks import keep_largest

    assert keep_largest(torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5]), 2).tolist() == [False, True, True, False, False]


@pytest.mark.parametrize(
    "ticket, message",
    [
        ({"densities": [0.1, 1.0]}, "ticket.densities entry 1.0 is outside (0, 1)"),
        ({"densities": [0.0]}, "ticket.densities entry 0.0 is outside (0, 1)"),
        ({"densities": []}, "ticket.densities is empty"),
        ({"objective": "js"}, "ticket.objective = 'js' is not allowed; choose one of 'reverse_kl', 'forward_kl', 'cross_entropy'"),
        ({"sparsity_control": "l0"}, "ticket.sparsity_control = 'l0' is not allowed; choose one of 'gradbalance', 'lagrangian'"),
        ({"dual_lr": 0.0}, "CTS dual_lr = 0.0 must be positive"),
        ({"concrete_form": "hard"}, "ticket.concrete_form = 'hard' is not allowed; choose one of 'paper', 'reference_code'"),
    ],
)
def test_cts_bad_options(ticket, message):
    raw = quick_recipe()
    raw["ticket"] = {"strategy": "cts", **ticket}
    with pytest.raises(PracError) as info:
        prac_plugin.parse_recipe(raw)
    assert message in str(info.value)


def test_search_on_a_model_without_prunable_weights_is_an_error():
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4))
    with pytest.raises(PracError, match="no prunable Conv/Linear weights"):
        prunable_parameter_names(model)


def test_cts_end_to_end_on_digits(tmp_path):
    raw = quick_recipe(train={"epochs": 3})
    raw["ticket"] = {"strategy": "cts", "densities": [0.1, 0.03], "ignore": ["fc"], "rewind": "1ep", "search_steps": 15, "search_batch_size": 256}
    rows = prac_plugin.run(raw, str(tmp_path / "cts"))
    assert [round(r["weights_remaining_pct"], 2) for r in rows] == [100.0, 10.0, 3.0]
    total = 64 * 300 + 300 * 100
    rewind = json.loads((tmp_path / "cts" / "rewind.json").read_text())["step"]
    for level, density in ((1, 0.1), (2, 0.03)):
        metrics = json.loads((tmp_path / "cts" / f"level_{level:02d}" / "metrics.json").read_text())
        mask = TicketMask.load(tmp_path / "cts" / f"level_{level:02d}" / "mask.safetensors")
        assert mask.num_remaining == round(density * total) == metrics["remaining_weights"]
        assert metrics["start_step"] == rewind and metrics["optimizer_steps"] == metrics["total_steps"] - rewind
        # 1294 training examples in batches of 256: 6 batches an epoch (the last of 14), 15 steps = 2 epochs + 3 batches
        assert metrics["cts_search_steps"] == 15 and metrics["cts_search_backward_passes"] == 2 * 1294 + 3 * 256
        assert metrics["test_acc"] > 0.3


def test_cts_under_bf16_autocast(tmp_path):
    raw = quick_recipe(train={"epochs": 2, "mixed_precision": "bf16"})
    raw["ticket"] = {"strategy": "cts", "densities": [0.05], "ignore": ["fc"], "rewind": "1ep", "search_steps": 10}
    prac_plugin.run(raw, str(tmp_path / "bf16"))
    metrics = json.loads((tmp_path / "bf16" / "level_01" / "metrics.json").read_text())
    assert metrics["remaining_weights"] == round(0.05 * (64 * 300 + 300 * 100)) and metrics["test_acc"] > 0.3
    assert all(h["loss"] == h["loss"] for h in metrics["cts_search_history"])  # no NaN under autocast
