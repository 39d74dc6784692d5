"""Offline datasets built as Hugging Face ``DatasetDict`` objects, so they take the same path as Hub data.

- ``builtin:digits``: scikit-learn's 1,797 8x8 digits (shipped inside scikit-learn), split 80/20 into
  train/test by a fixed seed; pixel values 0..16 scaled to 0..255.
- ``builtin:fashion_mnist``: Fashion-MNIST from its idx files (Debian's ``dataset-fashion-mnist`` puts them
  in ``/usr/share/datasets/fashion-mnist``; ``data.data_dir`` points elsewhere).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import datasets
import numpy as np

from ..errors import PracError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _as_dataset(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> datasets.Dataset:
    height, width = images.shape[1:3]
    features = datasets.Features(
        {"image": datasets.Array2D(shape=(height, width), dtype="uint8"), "label": datasets.ClassLabel(names=class_names)}
    )
    return datasets.Dataset.from_dict({"image": images, "label": labels.astype(np.int64)}, features=features)


def digits() -> datasets.DatasetDict:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = len(images) // 5
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    names = [str(i) for i in range(10)]
    return datasets.DatasetDict(
        {"train": _as_dataset(images[train], bunch.target[train], names), "test": _as_dataset(images[test], bunch.target[test], names)}
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise PracError(f"{str(path)!r} is not an unsigned-byte idx file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise PracError(f"idx file {str(path)!r} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise PracError(
        f"Fashion-MNIST file {stem}(.gz) not found in {str(folder)!r}; install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or set data.data_dir"
    )


def fashion_mnist(data_dir: str | None = None) -> datasets.DatasetDict:
    folder = Path(data_dir or FASHION_MNIST_DIR)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        splits[split] = _as_dataset(images, labels, FASHION_MNIST_CLASSES)
    return datasets.DatasetDict(splits)


BUILTINS = {"digits": digits, "fashion_mnist": fashion_mnist}


def load_builtin(name: str, data_dir: str | None) -> datasets.DatasetDict:
    if name not in BUILTINS:
        raise PracError(f"unknown built-in dataset 'builtin:{name}'; available: {', '.join('builtin:' + n for n in BUILTINS)}")
    return BUILTINS[name](data_dir) if name == "fashion_mnist" else BUILTINS[name]()
