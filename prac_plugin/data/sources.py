"""Hugging Face image-classification datasets -> training / validation / test splits the engine can batch.

Small datasets are decoded once into uint8 tensors and served from memory, with crop-with-padding and
flips done on whole batches of tensors; larger ones stream through timm's transforms and a DataLoader.
Every split keeps ``row_ids``: the row of each example in its source Hugging Face split, so that
per-example statistics and index files refer to the dataset, not to a shuffled copy of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from safetensors.torch import load_file

from ..errors import PracError
from ..rundir.files import atomic_save_safetensors
from .builtin import load_builtin

if TYPE_CHECKING:  # recipes import the strategies, which use the engine: types only here
    from ..config.recipes import DataSection

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")
VALIDATION_SPLITS = ("validation", "valid", "val")
IN_MEMORY_LIMIT_BYTES = 4 << 30


@dataclass
class ImageSplit:
    """One split: labels and source row ids always in memory; images as uint8 NCHW or a HF dataset."""

    name: str
    labels: torch.Tensor
    row_ids: torch.Tensor
    images: Optional[torch.Tensor] = None
    hf: Optional[datasets.Dataset] = None

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass
class DataBundle:
    train: ImageSplit
    val: Optional[ImageSplit]
    test: Optional[ImageSplit]
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    image_column: str
    label_column: str
    in_memory: bool
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    # identity of the source training split (before a validation set is carved out), for index files
    source_labels: Optional[torch.Tensor] = None
    features_json: str = ""


# -- loading --------------------------------------------------------------------------------------
def load_source(cfg: DataSection) -> datasets.DatasetDict:
    """All splits of the configured dataset (``datasets.load_dataset`` or a built-in)."""
    if cfg.path.startswith("builtin:"):
        return load_builtin(cfg.path.split(":", 1)[1], cfg.data_dir)
    try:
        loaded = datasets.load_dataset(
            cfg.path, cfg.name, data_dir=cfg.data_dir, data_files=cfg.data_files, revision=cfg.revision, cache_dir=cfg.cache_dir
        )
    except Exception as exc:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ConnectionError...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PracError(f"data.path {cfg.path!r} could not be loaded with datasets.load_dataset: {first_line}") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def detect_column(ds: datasets.Dataset, wanted: Optional[str], candidates: tuple[str, ...], role: str) -> str:
    columns = list(ds.column_names)
    if wanted is not None:
        if wanted not in columns:
            raise PracError(f"data.{role}_column {wanted!r} is not a column of the dataset; columns: {', '.join(columns)}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise PracError(
        f"dataset has no {role} column (looked for {', '.join(candidates)}; columns: {', '.join(columns)}); "
        f"set data.{role}_column"
    )


_SLICE = re.compile(r"^(?P<split>[\w.-]+)\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\]$")


def _split(source: datasets.DatasetDict, name: str, role: str) -> datasets.Dataset:
    """A split by name, with optional slicing as in ``datasets``: ``train[:2000]``, ``train[10%:]``."""
    match = _SLICE.match(name)
    base = match.group("split") if match else name
    if base not in source:
        raise PracError(f"data.{role}_split {name!r} is not a split of the dataset; splits: {', '.join(source)}")
    ds = source[base]
    if match:
        bounds = [match.group("start"), match.group("stop")]
        n = len(ds)
        start, stop = (None if b is None else (round(int(b[:-1]) * n / 100) if b.endswith("%") else int(b)) for b in bounds)
        ds = ds.select(range(n)[slice(start, stop)])
    return ds


def _column_array(ds: datasets.Dataset, column: str) -> np.ndarray:
    """One column as a numpy array, read as a single batch (``ds[column]`` iterates row by row)."""
    return np.asarray(ds.select_columns([column]).with_format("numpy")[0 : len(ds)][column])


def _labels(ds: datasets.Dataset, column: str) -> torch.Tensor:
    values = _column_array(ds, column)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise PracError(f"label column {column!r} must hold one integer class per row (found {values.dtype}, shape {values.shape})")
    return torch.from_numpy(values.astype(np.int64))


def features_json(features: datasets.Features) -> str:
    """The feature schema as canonical JSON, for the schema hash of index files. Image columns count as
    decoded whatever a reader set (timm's hfds reader turns decoding off): the data is the same."""
    features = features.copy()
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            features[name] = dataclasses.replace(feature, decode=True)
    return json.dumps(features.to_dict(), sort_keys=True)


def _image_mode(ds: datasets.Dataset, column: str) -> str:
    first = ds[0][column]
    return "L" if getattr(first, "mode", "RGB") in ("1", "L", "I", "I;16", "F") else "RGB"


def _decode(ds: datasets.Dataset, column: str, chunk: int = 2048) -> np.ndarray:
    """All images of ``ds`` as one uint8 array (N, H, W, C); raises ValueError when sizes differ."""
    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        mode = _image_mode(ds, column)
        parts = []
        for start in range(0, len(ds), chunk):
            batch = ds[start : start + chunk][column]
            parts.append(np.stack([np.asarray(img.convert(mode)) for img in batch]))  # ValueError if sizes differ
        array = np.concatenate(parts)
    else:
        array = _column_array(ds, column)
        if array.dtype == object:
            raise ValueError("images of different shapes")
        if array.dtype != np.uint8:
            array = np.clip(array if array.max() > 1.0 else array * 255.0, 0, 255).astype(np.uint8)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise PracError(f"image column {column!r} decodes to shape {array.shape[1:]}, not an image")
    if array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):  # stored channel-first
        array = array.transpose(0, 2, 3, 1)
    return array


def _estimate_bytes(ds: datasets.Dataset, column: str) -> int:
    sample = _decode(ds.select(range(min(4, len(ds)))), column)
    return int(np.prod(sample.shape[1:])) * len(ds)


def _to_tensor(array: np.ndarray, image_size: Optional[int]) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images


def _cache_dir() -> Path:
    return Path(os.environ.get("PRAC_CACHE", Path.home() / ".cache" / "prac_plugin")) / "decoded"


def _decoded_images(ds: datasets.Dataset, column: str, image_size: Optional[int], path: str) -> torch.Tensor:
    """uint8 NCHW images of ``ds``, decoded once per machine: cached by the dataset's fingerprint.

    A ``datasets`` fingerprint hashes local files and times, so it is a sound key for a local cache (and
    only for that). Built-in datasets are cheap to build and are not cached.
    """
    fingerprint = getattr(ds, "_fingerprint", None)
    if path.startswith("builtin:") or not fingerprint:
        return _to_tensor(_decode(ds, column), image_size)
    cache = _cache_dir() / f"{fingerprint}-{column}-{image_size or 'native'}.safetensors"
    if cache.is_file():
        try:
            return load_file(str(cache))["images"]
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    images = _to_tensor(_decode(ds, column), image_size)
    try:
        atomic_save_safetensors({"images": images}, cache)
    except OSError:  # a read-only or full cache disk only costs the next run a decode
        pass
    return images


def split_identity(cfg: DataSection, split: Optional[str] = None) -> tuple[dict[str, str], torch.Tensor, list[str]]:
    """(index-file signature, labels, class names) of one split of the configured dataset (default: the training
    split), from its labels and schema alone: no image is decoded."""
    from ..index_files.format import signature

    source = load_source(cfg)
    name = split or cfg.train_split
    ds = _split(source, name, "train")
    column = detect_column(ds, cfg.label_column, LABEL_COLUMNS, "label")
    labels = _labels(ds, column)
    feature = ds.features[column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else []
    return signature(cfg.path, cfg.name, cfg.revision, name, labels, column, features_json(ds.features)), labels, names


def _carve_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < fraction < 1.0:
        raise PracError(f"data.val_fraction = {fraction} must be in (0, 1), or 0 for no validation set")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise PracError(f"data.val_fraction = {fraction} holds out all {n:,} examples of the training split, leaving none to train on; "
                        f"allowed: below {(n - 0.5) / n:.6g} here")
    return order[n_val:].sort().values, order[:n_val].sort().values


def load_data(cfg: DataSection) -> DataBundle:
    """Load, split and (when small enough) decode the dataset described by ``cfg``."""
    source = load_source(cfg)
    train_full = _split(source, cfg.train_split, "train")
    if len(train_full) == 0:
        raise PracError(f"training split {cfg.train_split!r} of data.path {cfg.path!r} is empty")
    image_column = detect_column(train_full, cfg.image_column, IMAGE_COLUMNS, "image")
    label_column = detect_column(train_full, cfg.label_column, LABEL_COLUMNS, "label")

    # validation: a named split, a detected one, or a seeded fraction of the training split
    info: dict = {"path": cfg.path, "config": cfg.name, "revision": cfg.revision, "train_split": cfg.train_split}
    val_name = cfg.val_split or next((s for s in VALIDATION_SPLITS if s in source and s != cfg.train_split), None)
    train_rows = torch.arange(len(train_full))
    val_rows = None
    if val_name is not None:
        val_ds = _split(source, val_name, "val")
        info["val_split"] = val_name
    elif cfg.val_fraction is None:
        raise PracError(
            f"dataset has no validation split (splits: {', '.join(source)}) and data.val_fraction is not set; "
            "set data.val_fraction (e.g. 0.1), data.val_split, or 0 for no validation set"
        )
    elif cfg.val_fraction == 0:
        val_ds = None
    else:
        train_rows, val_rows = _carve_validation(len(train_full), cfg.val_fraction, cfg.split_seed)
        val_ds = train_full
        info.update(val_split=f"{cfg.train_split}[{cfg.val_fraction:g} seeded]", val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)
    test_name = cfg.test_split or ("test" if "test" in source and cfg.train_split != "test" else None)
    test_ds = _split(source, test_name, "test") if test_name else None
    info["test_split"] = test_name

    in_memory = cfg.in_memory
    if in_memory == "auto":
        try:
            in_memory = _estimate_bytes(train_full, image_column) <= IN_MEMORY_LIMIT_BYTES
        except ValueError:
            in_memory = False

    decoded: dict[int, torch.Tensor] = {}  # train and a carved validation set share one decoding
    labels_of: dict[int, torch.Tensor] = {}  # ... and one read of the label column

    def make(name: str, ds: datasets.Dataset, rows: Optional[torch.Tensor]) -> ImageSplit:
        if id(ds) not in labels_of:
            labels_of[id(ds)] = _labels(ds, label_column)
        rows = torch.arange(len(ds)) if rows is None else rows
        labels = labels_of[id(ds)][rows]
        if in_memory:
            if id(ds) not in decoded:
                try:
                    decoded[id(ds)] = _decoded_images(ds, image_column, cfg.image_size, cfg.path)
                except ValueError:
                    raise PracError(f"images of split {name!r} differ in size; set data.in_memory: false or data.image_size") from None
            return ImageSplit(name, labels, rows, images=decoded[id(ds)][rows])
        return ImageSplit(name, labels, rows, hf=ds)

    train = make("train", train_full, train_rows)
    val = make("val", val_ds, val_rows) if val_ds is not None else None
    test = make("test", test_ds, None) if test_ds is not None else None

    feature = train_full.features[label_column]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else []
    num_classes = len(class_names) if class_names else int(train.labels.max()) + 1
    if train.images is not None:
        in_chans, image_size = int(train.images.shape[1]), tuple(train.images.shape[2:])
    else:
        in_chans = 1 if _image_mode(train_full, image_column) == "L" else 3
        image_size = (cfg.image_size, cfg.image_size) if cfg.image_size else tuple(np.asarray(train_full[0][image_column]).shape[:2])
    info.update(
        sizes={"train": len(train), "val": len(val) if val else 0, "test": len(test) if test else 0},
        image_column=image_column, label_column=label_column, in_memory=bool(in_memory),
        num_classes=num_classes, in_chans=in_chans, image_size=list(image_size),
    )
    source_labels = labels_of[id(train_full)]
    return DataBundle(train, val, test, num_classes, in_chans, image_size, image_column, label_column, bool(in_memory),
                      class_names, info, source_labels, features_json(train_full.features))


# -- normalization ----------------------------------------------------------------------------------
def resolve_normalization(cfg: DataSection, bundle: DataBundle, model: torch.nn.Module) -> tuple[list[float], list[float], str]:
    """Per-channel (mean, std) in [0, 1] units and where they came from."""
    mode = cfg.normalize
    if isinstance(mode, dict):
        if set(mode) != {"mean", "std"}:
            raise PracError(f"data.normalize mapping needs exactly the keys mean and std, got {sorted(mode)}")
        mean, std = [float(v) for v in mode["mean"]], [float(v) for v in mode["std"]]
        source = "recipe"
    else:
        if mode == "auto":
            mode = "dataset" if bundle.in_memory else "model"
        if mode == "none":
            mean, std = [0.0] * bundle.in_chans, [1.0] * bundle.in_chans
        elif mode == "model":
            pretrained = getattr(model, "pretrained_cfg", None) or {}
            mean, std = list(pretrained.get("mean", (0.485, 0.456, 0.406))), list(pretrained.get("std", (0.229, 0.224, 0.225)))
        else:
            images = bundle.train.images
            if images is None:  # streamed: estimate from the first images
                array = _decode(bundle.train.hf.select(range(min(2048, len(bundle.train.hf)))), bundle.image_column)
                images = torch.from_numpy(array).permute(0, 3, 1, 2)
            flat = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
            mean, std = flat.mean(1).tolist(), flat.std(1).clamp_min(1e-6).tolist()
        source = mode
    if len(mean) != bundle.in_chans:  # e.g. a 3-channel pretrained config on grayscale data
        mean, std = [sum(mean) / len(mean)] * bundle.in_chans, [sum(std) / len(std)] * bundle.in_chans
    return mean, std, source


# -- batching ----------------------------------------------------------------------------------------
def augmentation_draws(n: int, padding: int, hflip: bool, generator: torch.Generator):
    """The random numbers one augmented batch of ``n`` images consumes: crop offsets and flips."""
    dy = dx = flip = None
    if padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def augment_batch(images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip for a whole uint8 batch at once."""
    n, _, h, w = images.shape
    dy, dx, flip = augmentation_draws(n, padding, hflip, generator)
    if dy is not None:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy, dx = dy.to(images.device), dx.to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch_index = torch.arange(n, device=images.device)[:, None, None, None]
        channel_index = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch_index, channel_index, rows, cols]
    if flip is not None:
        images = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
    return images


class _HFImages(torch.utils.data.Dataset):
    """Map-style view of a HF split yielding (transformed image, label, position) for timm transforms."""

    def __init__(self, split: ImageSplit, column: str, mode: str, transform):
        self.split, self.column, self.mode, self.transform = split, column, mode, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int):
        row = int(self.split.row_ids[position])
        image = self.split.hf[row][self.column]
        if not hasattr(image, "convert"):
            from PIL import Image

            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        return self.transform(image.convert(self.mode)), self.split.labels[position], position


class BatchSource:
    """Yields (normalized float images, labels, positions) batches of one split on a device."""

    def __init__(self, split: ImageSplit, bundle: DataBundle, cfg: DataSection, mean, std, device: torch.device,
                 rank: int = 0, world_size: int = 1):
        self.split, self.cfg, self.device = split, cfg, device
        self.image_column = bundle.image_column
        self.rank, self.world_size = rank, world_size
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.images = split.images.to(device) if split.images is not None else None
        self.labels = split.labels.to(device)
        self._transforms = {}
        if self.images is None:
            from timm.data import create_transform

            size = (bundle.in_chans, *bundle.image_size)
            # at the images' own size an eval center crop would only cut borders off; resized data uses timm's 0.875
            crop_pct = cfg.crop_pct if cfg.crop_pct is not None else (1.0 if cfg.image_size is None else None)
            for training in (True, False):
                self._transforms[training] = create_transform(
                    size, is_training=training, mean=tuple(mean), std=tuple(std),
                    hflip=0.5 if cfg.augment.hflip else 0.0, scale=(0.08, 1.0) if training else None,
                    crop_pct=None if training else crop_pct,
                )
            self._mode = "L" if bundle.in_chans == 1 else "RGB"

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std

    def batches(self, positions: torch.Tensor, batch_size: int, training: bool, generator: Optional[torch.Generator] = None,
                start_batch: int = 0, shard: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Batches over ``positions`` in the given order: this process's share of each global batch, or
        (``shard=False``) every batch, for statistics each process needs over the whole split."""
        chunks = torch.split(positions, batch_size)
        if shard and self.world_size > 1:
            chunks = [c[self.rank :: self.world_size] for c in chunks]
        augment = training and (self.cfg.augment.random_crop_padding or self.cfg.augment.hflip)
        if augment and self.images is not None:
            # starting mid-epoch (a rewind point, a resumed checkpoint): consume the skipped batches' random
            # numbers, so every later batch is augmented exactly as in an uninterrupted epoch
            for chunk in chunks[:start_batch]:
                augmentation_draws(len(chunk), self.cfg.augment.random_crop_padding, self.cfg.augment.hflip, generator)
        chunks = chunks[start_batch:]
        if self.images is not None:
            for chunk in chunks:
                index = chunk.to(self.device)
                images = self.images[index]
                if augment:
                    images = augment_batch(images, self.cfg.augment.random_crop_padding, self.cfg.augment.hflip, generator)
                yield self._normalize(images), self.labels[index], index
            return
        dataset = _HFImages(self.split, self.image_column, self._mode, self._transforms[training])
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=[c.tolist() for c in chunks], num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )
        for images, labels, index in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), index.to(self.device)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
