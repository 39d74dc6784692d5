import math

import pytest
import torch
from torch import nn

from prac_plugin import MaskEnforcer, PracError, TicketMask, prunable_parameter_names
from prac_plugin.tickets.masks import count_to_prune


def test_prunable_names_are_conv_and_linear_weights_only(tiny_net):
    assert prunable_parameter_names(tiny_net) == ["conv.weight", "fc1.weight", "fc.weight"]
    assert prunable_parameter_names(tiny_net, ignore=["fc"]) == ["conv.weight", "fc1.weight"]
    assert prunable_parameter_names(tiny_net, ignore=["fc*"]) == ["conv.weight"]
    assert prunable_parameter_names(tiny_net, include=["fc1.weight"]) == ["fc1.weight"]


def test_pattern_matching_nothing_is_an_error(tiny_net):
    with pytest.raises(PracError, match="'classifier'"):
        prunable_parameter_names(tiny_net, ignore=["classifier"])


def test_count_to_prune_is_ceil_of_fraction_of_remaining():
    assert count_to_prune(0.2, 1000) == 200  # 0.2 * 1000 is 200.00000000000003 in floats: not 201
    assert count_to_prune(0.2, 1001) == 201
    assert count_to_prune(0.5, 3) == 2
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(PracError, match="outside"):
            count_to_prune(bad, 10)


def test_global_pruning_removes_exact_count_of_smallest_magnitudes(tiny_net):
    mask = TicketMask.dense(tiny_net, ignore=["fc"])
    total = 4 * 9 + 144 * 10
    assert mask.num_total == total
    pruned = mask.prune_magnitude(tiny_net, 0.2, "global")
    assert pruned.num_remaining == total - math.ceil(0.2 * total)
    params = dict(tiny_net.named_parameters())
    kept = torch.cat([params[n].abs().flatten()[m.flatten()] for n, m in pruned.masks.items()])
    removed = torch.cat([params[n].abs().flatten()[~m.flatten()] for n, m in pruned.masks.items()])
    assert kept.min() >= removed.max()
    assert "fc.weight" not in pruned.masks


def test_layer_scope_prunes_each_tensor_by_the_fraction(tiny_net):
    pruned = TicketMask.dense(tiny_net).prune_magnitude(tiny_net, 0.2, "layer")
    assert {l.name: l.remaining for l in pruned.layers()} == {
        "conv.weight": 36 - math.ceil(7.2), "fc1.weight": 1440 - 288, "fc.weight": 30 - 6,
    }
    for name, m in pruned.masks.items():  # the smallest weights of each tensor are the removed ones
        w = dict(tiny_net.named_parameters())[name].abs()
        assert w[m].min() >= w[~m].max()


def test_fraction_applies_to_remaining_weights_over_levels(tiny_net):
    mask = TicketMask.dense(tiny_net, ignore=["fc"])
    remaining = [mask.num_remaining]
    for _ in range(5):
        with torch.no_grad():  # new magnitudes each level, pruned weights at zero as after training
            for name, p in tiny_net.named_parameters():
                if name in mask.masks:
                    p.copy_(torch.randn_like(p) * mask.masks[name])
        new = mask.prune_magnitude(tiny_net, 0.2)
        assert (new.masks["fc1.weight"] <= mask.masks["fc1.weight"]).all()  # never revives a weight
        mask = new
        remaining.append(mask.num_remaining)
    for before, after in zip(remaining, remaining[1:]):
        assert after == before - math.ceil(round(0.2 * before, 6))
    assert abs(mask.density - 0.8**5) < 2e-3


def test_bad_scope_is_an_error(tiny_net):
    with pytest.raises(PracError, match="'neuron'"):
        TicketMask.dense(tiny_net).prune_magnitude(tiny_net, 0.2, "neuron")


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_training(tiny_net, opt_name):
    mask = TicketMask.dense(tiny_net).prune_magnitude(tiny_net, 0.7)
    enforcer = MaskEnforcer(tiny_net, mask)
    enforcer.apply()
    opt = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3),
        "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    }[opt_name](tiny_net.parameters())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    start = {n: p.detach().clone() for n, p in tiny_net.named_parameters()}
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(tiny_net(x), y).backward()
        enforcer.mask_gradients()
        opt.step()
        enforcer.apply()
    params = dict(tiny_net.named_parameters())
    for name, m in mask.masks.items():
        assert torch.count_nonzero(params[name][~m]) == 0
        assert not torch.equal(params[name][m], start[name][m])  # survivors did train
        # the optimizer state never grew at pruned positions either
        for value in opt.state[params[name]].values():
            if torch.is_tensor(value) and value.shape == m.shape:
                assert torch.count_nonzero(value[~m]) == 0


def test_mask_file_round_trip_and_mismatch_errors(tiny_net, tmp_path):
    mask = TicketMask.dense(tiny_net).prune_magnitude(tiny_net, 0.5)
    path = tmp_path / "mask.safetensors"
    mask.save(path, {"level": "1"})
    again = TicketMask.load(path, tiny_net)
    assert again.equal(mask)
    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(PracError, match="'conv.weight' is not a parameter"):
        TicketMask.load(path, other)
    wrong = TicketMask({"fc.weight": torch.ones(4, 10, dtype=torch.bool)})
    with pytest.raises(PracError, match=r"shape \(4, 10\).*\(3, 10\)"):
        wrong.check_model(tiny_net)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(PracError, match="corrupt or truncated"):
        TicketMask.load(path)


def test_state_dict_stays_clean_and_loads_into_a_fresh_model(tiny_net):
    keys = set(tiny_net.state_dict())
    mask = TicketMask.dense(tiny_net).prune_magnitude(tiny_net, 0.5)
    MaskEnforcer(tiny_net, mask).apply()
    assert set(tiny_net.state_dict()) == keys
    fresh = type(tiny_net)()
    fresh.load_state_dict(tiny_net.state_dict(), strict=True)
    assert torch.count_nonzero(fresh.fc1.weight) == mask.masks["fc1.weight"].sum()
