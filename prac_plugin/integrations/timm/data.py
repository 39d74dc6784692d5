"""Sample ids through timm's data pipeline, and the identity of a timm training dataset.

Why the ids ride inside the target tensor: the target is the one per-example value every timm path
carries unchanged and in step with its image. ``fast_collate`` and ``default_collate`` stack it,
``PrefetchLoader`` moves it to the device together with the batch (it unpacks exactly ``(input, target)``),
``DistributedSampler`` and worker processes shuffle and reorder it with its image. A side channel (reading
the sampler's indices) would drift out of step with worker prefetching, the multi-epoch loader and the
prefetcher's look-ahead; an extra tuple element would break ``PrefetchLoader``.

So a wrapped dataset returns ``int64 [label, row]`` targets, collated to ``(B, 2)``. Mixup and cutmix need
class indices, so `IdMixup` / `IdFastCollateMixup` (timm's classes with the ids split off first) mix the
labels and append ``[hard label, row // 2**24, row % 2**24]`` to the float soft targets: every value below
2**24 is exact in float32, so rows up to 2**48 survive. `unpack` splits either form on the device with
slicing only (no host synchronization) and gives the hard labels correctness is recorded against.
"""

from __future__ import annotations

import copy
import hashlib
import os
from typing import Any, Sequence

import torch
from timm.data import AugMixDataset, FastCollateMixup, Mixup, create_transform  # loaded by `import timm` itself

from ...errors import PracError
from ...index_files.format import signature

ROW_SPLIT = 1 << 24  # rows travel as two float32 parts below this bound
MIXED_EXTRA = 3  # columns appended to a soft target: hard label, row high part, row low part


def dataset_identity(dataset: Any, name: str, split: str) -> tuple[dict[str, str], torch.Tensor, list[str]]:
    """(index-file signature, source labels, class names) of a timm ``hfds/`` or folder dataset.

    ``hfds/`` datasets hash exactly as ``prac`` hashes the same Hugging Face split, so index files move both
    ways. A folder's row order is timm's sorted file list; its hash (``files_sha256``) guards that order.
    timm's ``AugMixDataset`` (``--aug-splits``) is looked through: its rows are the wrapped dataset's.

    Hugging Face ``datasets`` is imported here, not with the hook: only the PrAC flags need it.
    """
    import datasets
    from timm.data.readers.reader_hfds import ReaderHfds
    from timm.data.readers.reader_image_folder import ReaderImageFolder

    from ...data.sources import _labels, features_json

    if isinstance(dataset, AugMixDataset):
        dataset = dataset.dataset
    reader = getattr(dataset, "reader", None)
    if isinstance(reader, ReaderHfds):
        if getattr(reader, "target_keys", None):
            raise PracError(f"dataset {name!r} has multi-field targets ({reader.label_key!r}); PrAC needs one class per row")
        hf = reader.dataset
        labels = _labels(hf, reader.label_key)
        feature = hf.features.get(reader.label_key)
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else []
        path = name.split("/", 1)[1] if name.lower().startswith("hfds/") else name
        return signature(path, None, None, split, labels, reader.label_key, features_json(hf.features)), labels, names
    if isinstance(reader, ReaderImageFolder):
        labels = torch.tensor([target for _, target in reader.samples], dtype=torch.int64)
        names = sorted(reader.class_to_idx, key=reader.class_to_idx.get)
        schema = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        files = "\n".join(os.path.relpath(path, reader.root) for path, _ in reader.samples)
        identity = signature(name or f"folder:{os.path.normpath(reader.root)}", None, None, split,
                             labels, "label", features_json(schema))
        identity["files_sha256"] = hashlib.sha256(files.encode()).hexdigest()
        return identity, labels, names
    raise PracError(
        f"training dataset {name!r} is read by {type(reader or dataset).__name__}; PrAC sample ids need an hfds/ "
        "(Hugging Face datasets) or image-folder dataset"
    )


class SampleIdDataset(torch.utils.data.Dataset):
    """A timm map-style dataset whose targets are ``int64 [label, source row]``, optionally only some rows.

    ``transform`` reads and writes the wrapped dataset's (``create_loader`` sets it); other attributes
    (``reader``, ``filename``...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Any, rows: torch.Tensor | None = None):
        self.dataset = dataset
        self.rows = None if rows is None else rows.tolist()

    def __len__(self) -> int:
        return len(self.dataset) if self.rows is None else len(self.rows)

    def __getitem__(self, index: int):
        row = index if self.rows is None else self.rows[index]
        image, target, *extra = self.dataset[row]
        return (image, torch.tensor([int(target), row], dtype=torch.int64), *extra)

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, value) -> None:
        self.dataset.transform = value

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def pack_mixed(soft: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Soft targets with the hard labels and the rows appended as exact float32 columns."""
    rows = rows.to(torch.int64)
    extra = torch.stack([labels.to(torch.int64), torch.div(rows, ROW_SPLIT, rounding_mode="floor"), rows % ROW_SPLIT], 1)
    return torch.cat([soft, extra.to(soft.dtype)], 1)


def unpack(target: torch.Tensor, mixed_width: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target for the loss, hard labels, source rows) of a batch's id-carrying target.

    ``mixed_width`` is the packed width of mixed targets (classes + 3), None when no mixup was wrapped: a
    float target then means an unwrapped mixup garbled the ``[label, row]`` pairs, which must not pass.
    """
    if target.dtype == torch.int64 and target.ndim == 2 and target.shape[1] == 2:
        return target[:, 0], target[:, 0], target[:, 1]
    if target.is_floating_point() and target.ndim == 2 and target.shape[1] == mixed_width:
        rows = target[:, -2].long() * ROW_SPLIT + target[:, -1].long()
        return target[:, :-MIXED_EXTRA], target[:, -MIXED_EXTRA].long(), rows
    hint = "pass collate_fn and mixup_fn through prac.wrap(...)" if target.is_floating_point() else "wrap the training dataset with prac.wrap(...)"
    raise PracError(f"the training target (dtype {target.dtype}, shape {tuple(target.shape)}) carries no sample ids; {hint}")


class IdMixup(Mixup):
    """timm's ``Mixup`` (called on device batches) for ``[label, row]`` targets; returns packed soft targets."""

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        labels, rows = target[:, 0], target[:, 1]
        x, soft = super().__call__(x, labels)
        return x, pack_mixed(soft, labels, rows)


class IdFastCollateMixup(FastCollateMixup):
    """timm's ``FastCollateMixup`` (the prefetcher's collate) for ``[label, row]`` targets; returns packed
    soft targets. In the 'half' modes timm keeps the first half of the batch, and so do the ids."""

    def __call__(self, batch, _=None):
        pairs = torch.stack([sample[1] for sample in batch])
        output, soft = super().__call__([(sample[0], int(sample[1][0])) for sample in batch])
        return output, pack_mixed(soft, pairs[: len(soft), 0], pairs[: len(soft), 1])


def carry_ids(mixup: Mixup | None) -> Mixup | None:
    """The id-carrying twin of a timm ``Mixup`` or ``FastCollateMixup`` with the same settings (None stays None)."""
    if mixup is None or not isinstance(mixup, Mixup):
        return mixup
    twin_class = IdFastCollateMixup if isinstance(mixup, FastCollateMixup) else IdMixup
    twin = twin_class.__new__(twin_class)
    twin.__dict__.update(mixup.__dict__)
    return twin


def eval_view(dataset: Any, data_config: dict) -> Any:
    """The training split as evaluation sees it: a shallow copy of the dataset with timm's eval transform
    (resize, center crop, normalize) for the model's data config; no augmentation, every row once."""
    base = dataset.dataset if isinstance(dataset, AugMixDataset) else dataset
    view = copy.copy(base)
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    view.transform = create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False)
    return view


@torch.no_grad()
def eval_predictions(models: Sequence[torch.nn.Module], dataset: Any, data_config: dict, batch_size: int,
                     workers: int = 0) -> list[torch.Tensor]:
    """Eval-mode argmax predictions of each model for every row of a timm training dataset, un-augmented.

    With several processes each predicts rows ``rank::world`` and the results are combined with a maximum over
    processes (-1 elsewhere): every row is predicted once, by every model, in one pass over the data.
    """
    view = eval_view(dataset, data_config)
    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    rows = torch.arange(rank, len(view), world)
    first = next(models[0].parameters())
    device, dtype = first.device, first.dtype
    outputs = [torch.full((len(view),), -1, dtype=torch.long, device=device) for _ in models]
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(view, rows.tolist()), batch_size=batch_size, shuffle=False,
                                         num_workers=workers)
    start = 0
    for images, _ in loader:
        positions = rows[start : start + len(images)].to(device)
        start += len(images)
        images = images.to(device=device, dtype=dtype)
        for model, out in zip(models, outputs):
            logits = model(images)
            out[positions] = (logits[0] if isinstance(logits, (tuple, list)) else logits).argmax(1)
    for model, mode in zip(models, modes):
        model.train(mode)
    if distributed:
        for out in outputs:
            dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return outputs
