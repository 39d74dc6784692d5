"""CTS as its authors run it: the search normalises with batch statistics, and the mask it finds is a working
network before any training, far better than a random mask of the same per-layer densities.

The network is a small residual BatchNorm CNN trained for a few epochs on scikit-learn's digits; the search runs
at 2% density over the convolutions (the classifier is kept, as `ignore: [fc]` does) and both masks are scored on
held-out digits with BatchNorm on batch statistics, the convention of the authors' networks and of the engine's
start-point check.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

from prac_plugin.models.batchnorm import batch_statistics
from prac_plugin.tickets.masks import TicketMask, prunable_parameter_names
from prac_plugin.strategies.cts.search import ConcreteSearchConfig
from prac_plugin.strategies.cts.search import concrete_ticket_search
from prac_plugin.strategies.cts.search import search_mode

DENSITY = 0.02
SEARCH_STEPS, SEARCH_BATCH = 250, 128  # about 23 epochs of 1,400 digits: a search of its own length, as the authors' 20 epochs of CIFAR-10


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualNet(nn.Module):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.layer1, self.layer2 = Block(channels), Block(channels)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images, labels, order[:1400], order[1400:]


def trained_net(digits, seed: int) -> nn.Module:
    images, labels, train, _ = digits
    torch.manual_seed(seed)
    net = ResidualNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(6):
        for index in train[torch.randperm(len(train))].split(64):
            optimizer.zero_grad()
            F.cross_entropy(net(images[index]), labels[index]).backward()
            optimizer.step()
    return net


def masked_accuracy(net: nn.Module, mask: TicketMask, digits) -> float:
    images, labels, _, held_out = digits
    params = dict(net.named_parameters())
    saved = {name: params[name].detach().clone() for name in mask.masks}
    with torch.no_grad():
        for name, keep in mask.masks.items():
            params[name].mul_(keep)
        net.eval()
        with batch_statistics(net):
            accuracy = (net(images[held_out]).argmax(1) == labels[held_out]).float().mean().item()
        for name, value in saved.items():
            params[name].copy_(value)
    return accuracy


def shuffled_within_layers(mask: TicketMask, seed: int) -> TicketMask:
    generator = torch.Generator().manual_seed(seed)
    return TicketMask({n: m.flatten()[torch.randperm(m.numel(), generator=generator)].view_as(m) for n, m in mask.masks.items()})


def search(net, digits, batchnorm: str, seed: int) -> TicketMask:
    images, labels, train, _ = digits

    def batches(epoch):
        order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))]
        for index in order.split(SEARCH_BATCH):
            yield images[index], labels[index]

    names = prunable_parameter_names(net, ignore=["fc"])
    return concrete_ticket_search(net, names, batches, ConcreteSearchConfig(DENSITY, SEARCH_STEPS, batchnorm=batchnorm, seed=seed)).mask


@pytest.fixture(scope="module")
def gaps(digits):
    """Per seed and BatchNorm mode: (searched mask's accuracy, random mask's, survivors per layer)."""
    found, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is as fast, and spares a loaded machine
    try:
        _search_both_modes(digits, found)
    finally:
        torch.set_num_threads(threads)
    return found


def _search_both_modes(digits, found: dict) -> None:
    for seed in (0, 1):
        net = trained_net(digits, seed)
        for batchnorm in ("batch", "running"):
            mask = search(net, digits, batchnorm, seed)
            found[seed, batchnorm] = (masked_accuracy(net, mask, digits), masked_accuracy(net, shuffled_within_layers(mask, seed), digits),
                                      [layer.remaining for layer in mask.layers()])


@pytest.mark.parametrize("seed", [0, 1])
def test_searched_mask_beats_a_random_one_of_the_same_layer_densities_before_training(gaps, seed):
    searched, random_mask, survivors = gaps[seed, "batch"]
    assert searched >= random_mask + 0.20, (searched, random_mask)
    assert min(survivors) >= 1, survivors  # no layer emptied


@pytest.mark.parametrize("seed", [0, 1])
def test_searching_with_frozen_running_statistics_finds_worse_masks(gaps, seed):
    """Why `batch` is the default: with the dense network's running statistics the relaxed network is nearly
    input-blind at this density, and its mask is no better than a random one."""
    batch_gap = gaps[seed, "batch"][0] - gaps[seed, "batch"][1]
    running_gap = gaps[seed, "running"][0] - gaps[seed, "running"][1]
    assert running_gap < batch_gap - 0.10, (running_gap, batch_gap)


def test_search_mode_normalises_with_the_batch_and_leaves_every_buffer_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(100.0)
    buffers = {name: (value, value.clone()) for name, value in model.named_buffers()}
    model.train()
    x = torch.randn(64, 1, 6, 6) * 3 + 2
    with search_mode(model, "batch"), torch.no_grad():
        out = model[:2](x)
        assert not model.training and not model[2].training  # no dropout during the search
        batch_normalised = F.batch_norm(model[0](x), None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        torch.testing.assert_close(out, batch_normalised)  # the current batch's statistics, not the running ones
        assert torch.equal(model(x), model(x))  # eval mode: deterministic
    with search_mode(model, "running"), torch.no_grad():
        frozen = model[:2](x)
        expected = (model[0](x) - 5.0) / (100.0 + bn.eps) ** 0.5 * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(frozen, expected)
    assert model.training and all(m.training for m in model.modules())
    for name, value in model.named_buffers():
        original, copy = buffers[name]
        assert value is original and torch.equal(value, copy), name
