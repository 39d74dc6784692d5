import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from prac_plugin import PracError
from prac_plugin.data.sources import BatchSource, augment_batch, load_data, resolve_normalization
from prac_plugin.config.recipes import DataSection
from prac_plugin.config.schema import from_dict


def data_cfg(**kwargs) -> DataSection:
    return from_dict(DataSection, kwargs, "data")


def _images(n, size=8, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(n)]


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory):
    """A CIFAR-100-like local parquet dataset: ``img`` and ``fine_label`` columns, train and test files."""
    folder = tmp_path_factory.mktemp("pq")
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=list("abcd"))})
    files = {}
    for split, n in (("train", 40), ("test", 12)):
        ds = datasets.Dataset.from_dict({"img": _images(n, seed=n), "fine_label": [i % 4 for i in range(n)]}, features=features)
        files[split] = str(folder / f"{split}.parquet")
        ds.to_parquet(files[split])
    return files


def test_digits_builtin_splits_are_seeded_and_recorded():
    bundle = load_data(data_cfg(path="builtin:digits", val_fraction=0.1, split_seed=3))
    assert (bundle.num_classes, bundle.in_chans, bundle.image_size) == (10, 1, (8, 8))
    assert bundle.info["sizes"] == {"train": 1294, "val": 144, "test": 359}
    assert bundle.info["split_seed"] == 3 and bundle.info["val_fraction"] == 0.1
    rows = torch.cat([bundle.train.row_ids, bundle.val.row_ids]).sort().values
    assert torch.equal(rows, torch.arange(1438))  # train and val partition the source split
    again = load_data(data_cfg(path="builtin:digits", val_fraction=0.1, split_seed=3))
    assert torch.equal(again.val.row_ids, bundle.val.row_ids)
    other = load_data(data_cfg(path="builtin:digits", val_fraction=0.1, split_seed=4))
    assert not torch.equal(other.val.row_ids, bundle.val.row_ids)
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.images.shape == (1294, 1, 8, 8)
    assert int(bundle.train.images.max()) == 255


def test_local_parquet_detects_img_and_fine_label(parquet_files):
    bundle = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0.25, in_memory=True))
    assert (bundle.image_column, bundle.label_column) == ("img", "fine_label")
    assert bundle.class_names == list("abcd") and bundle.num_classes == 4 and bundle.in_chans == 3
    assert bundle.info["sizes"] == {"train": 30, "val": 10, "test": 12}
    source = datasets.load_dataset("parquet", data_files=parquet_files)["train"]
    row = int(bundle.train.row_ids[5])
    expected = torch.from_numpy(np.array(source[row]["img"])).permute(2, 0, 1)
    assert torch.equal(bundle.train.images[5], expected)
    assert int(bundle.train.labels[5]) == source[row]["fine_label"]


def test_column_overrides_and_missing_columns(parquet_files):
    with pytest.raises(PracError, match="data.label_column 'target' is not a column of the dataset; columns: img, fine_label"):
        load_data(data_cfg(path="parquet", data_files=parquet_files, label_column="target"))
    ds = datasets.Dataset.from_dict({"picture": _images(4), "label": [0, 1, 0, 1]})
    ds.to_parquet(str(parquet_files["train"]) + ".other.parquet")
    with pytest.raises(PracError, match="dataset has no image column .*set data.image_column"):
        load_data(data_cfg(path="parquet", data_files=str(parquet_files["train"]) + ".other.parquet"))
    bundle = load_data(data_cfg(path="parquet", data_files=str(parquet_files["train"]) + ".other.parquet", image_column="picture", val_fraction=0.5))
    assert bundle.image_column == "picture" and len(bundle.train) == 2


def test_validation_split_required_when_fraction_unset(parquet_files):
    with pytest.raises(PracError, match="no validation split .*data.val_fraction is not set"):
        load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=None))
    bundle = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0))
    assert bundle.val is None and len(bundle.train) == 40
    with pytest.raises(PracError, match="data.val_split 'dev' is not a split"):
        load_data(data_cfg(path="parquet", data_files=parquet_files, val_split="dev"))


def test_imagefolder_grayscale_and_missing_dataset(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i, img in enumerate(_images(5, size=6, mode="L", seed=len(label))):
            img.save(tmp_path / "train" / label / f"{i}.png")
    bundle = load_data(data_cfg(path="imagefolder", data_dir=str(tmp_path), val_fraction=0.2))
    assert bundle.in_chans == 1 and bundle.class_names == ["cat", "dog"] and bundle.image_size == (6, 6)
    with pytest.raises(PracError, match="data.path 'no-such-org/no-such-dataset' could not be loaded"):
        load_data(data_cfg(path="no-such-org/no-such-dataset"))
    with pytest.raises(PracError, match="unknown built-in dataset 'builtin:mnist'"):
        load_data(data_cfg(path="builtin:mnist"))


def test_streaming_path_matches_in_memory_batches(parquet_files):
    """The DataLoader path (large datasets) serves the same images and labels as the in-memory path."""
    memory = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0.25, in_memory=True))
    stream = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0.25, in_memory=False, num_workers=0))
    assert stream.train.images is None and stream.in_memory is False
    cfg = data_cfg(path="parquet", num_workers=0)
    mean, std = [0.5] * 3, [0.25] * 3
    positions = torch.tensor([3, 0, 7, 1, 2])
    a = list(BatchSource(memory.test, memory, cfg, mean, std, torch.device("cpu")).batches(positions, 2, training=False))
    b = list(BatchSource(stream.test, stream, cfg, mean, std, torch.device("cpu")).batches(positions, 2, training=False))
    assert [len(x[1]) for x in a] == [2, 2, 1]
    for (xa, ya, pa), (xb, yb, pb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(pa, pb)
        assert torch.allclose(xa, xb, atol=1e-5)


def test_augment_batch_is_a_padded_shifted_crop_and_a_flip():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(images, 0, False, generator), images)
    for _ in range(20):
        out = augment_batch(images, 2, True, generator)
        assert out.shape == images.shape
        for i in range(2):
            padded = torch.nn.functional.pad(images[i], (2, 2, 2, 2))
            windows = [padded[:, y : y + 4, x : x + 4] for y in range(5) for x in range(5)]
            assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    flips = augment_batch(images.repeat(200, 1, 1, 1), 0, True, generator)
    flipped = (flips == images.repeat(200, 1, 1, 1).flip(-1)).flatten(1).all(1).float().mean()
    assert 0.35 < flipped < 0.65


def test_normalization_from_dataset_model_and_recipe():
    bundle = load_data(data_cfg(path="builtin:digits"))
    mean, std, source = resolve_normalization(data_cfg(normalize="auto"), bundle, torch.nn.Identity())
    pixels = bundle.train.images.double() / 255
    assert source == "dataset" and mean[0] == pytest.approx(pixels.mean().item()) and std[0] == pytest.approx(pixels.std().item())
    model = torch.nn.Identity()
    model.pretrained_cfg = {"mean": (0.2, 0.4, 0.6), "std": (0.1, 0.1, 0.1)}
    mean, std, source = resolve_normalization(data_cfg(normalize="model"), bundle, model)
    assert (mean, source) == ([pytest.approx(0.4)], "model")  # 3-channel config averaged for 1-channel data
    mean, std, _ = resolve_normalization(data_cfg(normalize={"mean": [0.1], "std": [0.3]}), bundle, model)
    assert (mean, std) == ([0.1], [0.3])


def test_split_slicing(parquet_files):
    bundle = load_data(data_cfg(path="parquet", data_files=parquet_files, train_split="train[:20]", test_split="test[50%:]", val_fraction=0.25))
    assert bundle.info["sizes"] == {"train": 15, "val": 5, "test": 6}
    assert int(bundle.train.row_ids.max()) < 20
    with pytest.raises(PracError, match=r"data.train_split 'dev\[:5\]' is not a split"):
        load_data(data_cfg(path="parquet", data_files=parquet_files, train_split="dev[:5]"))


def test_decoded_images_are_cached_per_dataset_fingerprint(parquet_files, tmp_path, monkeypatch):
    monkeypatch.setenv("PRAC_CACHE", str(tmp_path / "cache"))
    first = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0.25, in_memory=True))
    entries = sorted((tmp_path / "cache" / "decoded").glob("*.safetensors"))
    assert len(entries) == 2  # train and test splits
    import prac_plugin.data.sources as data_module

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data_module, "_decode", no_decoding)
    again = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0.25, in_memory=True))
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.images, first.test.images)
    monkeypatch.undo()
    monkeypatch.setenv("PRAC_CACHE", str(tmp_path / "cache"))
    entries[0].write_bytes(b"garbage")  # a damaged entry is rebuilt
    rebuilt = load_data(data_cfg(path="parquet", data_files=parquet_files, val_fraction=0.25, in_memory=True))
    assert torch.equal(rebuilt.test.images, first.test.images) and torch.equal(rebuilt.train.images, first.train.images)


def test_a_process_serves_its_share_or_the_whole_split():
    bundle = load_data(data_cfg(path="builtin:digits"))
    rank1 = BatchSource(bundle.test, bundle, data_cfg(), [0.5], [0.25], torch.device("cpu"), rank=1, world_size=2)
    positions = torch.arange(len(bundle.test))
    mine = torch.cat([idx for _, _, idx in rank1.batches(positions, 64, training=False)])
    everything = torch.cat([idx for _, _, idx in rank1.batches(positions, 64, training=False, shard=False)])
    assert torch.equal(everything, positions)  # scoring statistics over the whole split on every process
    assert torch.equal(mine, torch.cat([c[1::2] for c in positions.split(64)]))  # training: every other example of a batch
