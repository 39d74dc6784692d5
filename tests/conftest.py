import os
import sys

# the test machines have no Hub access: fail Hub look-ups at once instead of after network time-outs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# decoded-image cache of the test session, not the user's
os.environ.setdefault("PRAC_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"prac-test-cache-{os.getpid()}"))
# One intra-op thread, here and in every process a test starts (before torch is imported, so it takes hold).
# The tests' models are tiny: a second thread gains little on a quiet 2-core CPU, and on a loaded one its
# OpenMP barriers spin-wait for a descheduled partner: the in-process runs took 3-5 times their single-thread
# time (issue 29). The launched runs that compare float sums already pinned it; set OMP_NUM_THREADS to test others.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest
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


def install_strategy_package(tmp_path, monkeypatch, module: str, source, entry: str, kind: str) -> None:
    """Make ``source`` an installed package advertising ``entry`` ("name = module:Class", or "name = module.options:SPEC"
    naming a spec) in the strategies' entry-point group, as a third-party package would; the registry forgets it when
    the test ends. ``source`` is one module's text, or {path: text} of the files of a package folder ``module/`` (a
    strategy's folder laid out as the built-ins' are: ``options.py``, ``strategy.py``)."""
    import textwrap

    from prac_plugin import registry

    files = {f"{module}.py": source} if isinstance(source, str) else {f"{module}/{path}": text for path, text in source.items()}
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(textwrap.dedent(text))
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setitem(registry._registry, kind, dict(registry._registry[kind]))
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)


TINY_CLASSES, TINY_SIZE = 4, 16


def coloured_images(rng, labels, colors, size: int = TINY_SIZE) -> list:
    """Noisy class-coloured RGB images: learnable in a few epochs, with some forgetting on the way."""
    from PIL import Image

    return [Image.fromarray(np.clip(colors[c] + rng.normal(0, 90, (size, size, 3)), 0, 255).astype(np.uint8)) for c in labels]


@pytest.fixture(scope="session")
def tiny_hfds(tmp_path_factory):
    """A tiny Hugging Face parquet dataset for timm's hfds/ reader (train 256, validation 64, 4 classes, 16x16) and a
    datasets cache folder: {"path", "cache", "labels" (of the train split)}."""
    import datasets

    root = tmp_path_factory.mktemp("tiny_hfds")
    rng = np.random.default_rng(0)
    colors = rng.integers(90, 165, (TINY_CLASSES, 3))
    names = [f"c{i}" for i in range(TINY_CLASSES)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    labels = {}
    for split, n in (("train", 256), ("validation", 64)):
        labels[split] = rng.integers(0, TINY_CLASSES, n)
        images = coloured_images(rng, labels[split], colors)
        datasets.Dataset.from_dict({"image": images, "label": labels[split].tolist()}, features=features).to_parquet(str(root / "ds" / f"{split}.parquet"))
    return {"path": root / "ds", "cache": root / "cache", "labels": torch.from_numpy(labels["train"]).long()}


def undeclared_files(run_path) -> list[str]:
    """Files of a run folder that neither the run folder names (`prac_plugin.rundir.folder`) nor the run's
    strategies declare (``run_files``; NN stands for a level or round number): a strategy owns its files."""
    import re
    from pathlib import Path

    import yaml

    from prac_plugin import registry
    from prac_plugin.rundir import folder
    from prac_plugin.rundir.lock import LOCK_NAME

    run_path = Path(run_path)
    recipe = yaml.safe_load((run_path / folder.RECIPE_FILE).read_text())
    named = [folder.RECIPE_FILE, folder.RECIPE_RECORD, "init.safetensors", "rewind.safetensors", "rewind.json",
             folder.REWIND_OPTIMIZER_FILE, "summary.json", "summary.csv", "summary.md", "curve.png", LOCK_NAME,
             *(f"level_NN/{name}" for name in (folder.MASK_FILE, folder.WEIGHTS_FILE, folder.METRICS_FILE)),
             *(f"{name}/*" for name in (folder.CHECKPOINTS, *folder.ANALYSES))]
    for kind in registry.KINDS:
        named += list(registry.spec(kind, recipe[kind]["strategy"]).run_files)
    patterns = [re.compile(re.escape(p).replace("NN", r"\d\d").replace(r"\*", ".*") + "$") for p in named]
    files = [p.relative_to(run_path).as_posix() for p in run_path.rglob("*") if p.is_file()]
    return sorted(f for f in files if not any(pattern.match(f) for pattern in patterns))
