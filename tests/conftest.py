import os

# the test machines have no Hub access: fail Hub look-ups at once instead of after network time-outs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# decoded-image cache of the test session, not the user's
os.environ.setdefault("PRAC_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"prac-test-cache-{os.getpid()}"))

import pytest  # noqa: E402
import torch
from torch import nn

import prac_plugin  # noqa: F401  (registers the LTH models into timm)


class TinyNet(nn.Module):
    """Conv + BN + two Linear layers: enough structure for mask tests."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 6 * 6, 10)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet()


def quick_recipe(**overrides) -> dict:
    """A seconds-long digits recipe; keyword arguments replace whole sections' keys."""
    recipe = {
        "model": {"name": "lenet_300_100", "kwargs": {"img_size": 8}},
        "data": {"path": "builtin:digits", "val_fraction": 0.1},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "seed": 0},
        "ticket": {"strategy": "ltr", "levels": 2, "fraction": 0.2, "ignore": ["fc"], "rewind": "1ep"},
        "data_selection": {"strategy": "full"},
        "run": {"tracker": "none"},
    }
    for section, values in overrides.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    return recipe
