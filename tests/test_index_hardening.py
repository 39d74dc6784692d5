"""Index files are not trusted: content checksum, per-row labels against the dataset, required signature, every
malformed metadata field one `PracError` (and one CLI line), and property-based tests of the reader."""

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from prac_plugin import PracError
from prac_plugin.cli import main
from prac_plugin.index_files.format import CHECKSUM_FIELD, PracIndex, content_sha256, signature

from conftest import quick_recipe

NUM_ROWS = 10
LABELS = torch.arange(NUM_ROWS) % 3  # the toy dataset's labels, by source row
CLASS_NAMES = ["a", "b", "c"]


def toy_signature(labels=LABELS):
    """A real `signature` (it carries the labels, as `dataset_signature` and the timm hook's identity do)."""
    return signature("toy", None, None, "train", labels, "label", "{}")


def make_index(rows=(1, 4, 7), labels=None, **metadata) -> PracIndex:
    rows = torch.tensor(rows)
    stored = LABELS[rows] if labels is None else torch.tensor(labels)
    meta = {**toy_signature(), "class_names": json.dumps(CLASS_NAMES), "model": "lenet", **metadata}
    stats = {"labels": stored, "forgetting": torch.arange(len(rows)).float(), "never_learned": torch.zeros(len(rows), dtype=torch.bool)}
    return PracIndex(rows, meta, stats)


def read_raw(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())


def write_raw(path, tensors, metadata, checksum="recompute"):
    """Write a file as another tool might: ``checksum`` "recompute" (a consistent file), "keep" or "drop"."""
    metadata = dict(metadata)
    if checksum == "recompute":
        metadata[CHECKSUM_FIELD] = content_sha256(tensors, metadata)
    elif checksum == "drop":
        metadata.pop(CHECKSUM_FIELD, None)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def assert_same(a: PracIndex, b: PracIndex):
    assert torch.equal(a.rows, b.rows) and sorted(a.statistics) == sorted(b.statistics)
    for name in a.statistics:  # bitwise, so NaN scores compare equal
        x, y = a.statistics[name], b.statistics[name]
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.contiguous().view(torch.uint8).tolist() == y.contiguous().view(torch.uint8).tolist()


# -- 1. the content checksum --------------------------------------------------------------------------------------
def test_save_writes_version_2_with_a_checksum_that_load_verifies(tmp_path):
    path = make_index().save(tmp_path / "s.prac.safetensors")
    tensors, meta = read_raw(path)
    assert meta["format_version"] == "2" and meta[CHECKSUM_FIELD] == content_sha256(tensors, meta)
    assert PracIndex.load(path).format_version == 2


def test_the_checksum_follows_its_documented_byte_layout():
    """An independent implementation of the layout in `content_sha256`'s docstring, and a pinned digest: the bytes
    behind a published checksum may never change silently."""
    tensors = {"rows": torch.tensor([1, 258], dtype=torch.int64), "flag": torch.tensor([True, False]),
               "score": torch.tensor([0.5, -1.0], dtype=torch.float32)}
    metadata = {"format": "prac-index", "num_rows": "300", CHECKSUM_FIELD: "ignored"}
    digest = hashlib.sha256()
    pieces = [b"prac-index content v1"]
    for name, dtype, fmt in (("flag", "BOOL", "<2B"), ("rows", "I64", "<2q"), ("score", "F32", "<2f")):
        pieces.append(json.dumps({"dtype": dtype, "name": name, "shape": [2]}).encode())
        pieces.append(struct.pack(fmt, *tensors[name].tolist()))
    pieces.append(b'{"format": "prac-index", "num_rows": "300"}')
    for piece in pieces:
        digest.update(struct.pack("<Q", len(piece)) + piece)
    assert content_sha256(tensors, metadata) == digest.hexdigest()
    assert content_sha256(dict(reversed(tensors.items())), dict(reversed(metadata.items()))) == digest.hexdigest()
    assert digest.hexdigest() == "3f9290ff8c89b602ed5f7f15077e08bf0096f9696fc0c415153d6ae7bac03af4"


@pytest.mark.parametrize("change", ["row in range", "label", "forgetting", "metadata value", "metadata removed"])
def test_any_change_after_saving_is_refused_as_changed_content(tmp_path, change):
    path = make_index().save(tmp_path / "s.prac.safetensors")
    tensors, meta = read_raw(path)
    if change == "row in range":
        tensors["rows"] = torch.tensor([1, 5, 7])  # still sorted, in range: the attack a range check misses
    elif change == "label":
        tensors["labels"] = torch.tensor([1, 2, 1])
    elif change == "forgetting":
        tensors["forgetting"] = tensors["forgetting"] + 1
    elif change == "metadata value":
        meta["model"] = "resnet50"
    else:
        del meta["class_names"]
    write_raw(path, tensors, meta, checksum="keep")
    with pytest.raises(PracError, match=rf"index file '{path}': its content changed after it was written \({CHECKSUM_FIELD} is"):
        PracIndex.load(path)


def test_a_flipped_byte_in_the_tensor_data_is_refused(tmp_path):
    path = make_index().save(tmp_path / "s.prac.safetensors")
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    rows_start = 8 + header + json.loads(data[8:8 + header])["rows"]["data_offsets"][0]
    data[rows_start + 8] ^= 0x02  # the second row, 4 -> 6: sorted and in range
    path.write_bytes(bytes(data))
    with pytest.raises(PracError, match="its content changed after it was written"):
        PracIndex.load(path)


def test_a_version_digit_changed_to_1_does_not_skip_the_checksum(tmp_path):
    path = make_index().save(tmp_path / "s.prac.safetensors")
    data = path.read_bytes()
    assert data.count(b'"format_version":"2"') == 1
    path.write_bytes(data.replace(b'"format_version":"2"', b'"format_version":"1"'))  # one bit
    with pytest.raises(PracError, match="its content changed after it was written"):
        PracIndex.load(path)


def test_a_version_2_file_without_its_checksum_is_refused(tmp_path):
    path = make_index().save(tmp_path / "s.prac.safetensors")
    write_raw(path, *read_raw(path), checksum="drop")
    with pytest.raises(PracError, match=f"has no metadata {CHECKSUM_FIELD}, which every format version 2 file carries"):
        PracIndex.load(path)


def version_1_file(path, rows=(1, 4, 7), **overrides):
    """A file as prac_plugin wrote it before checksums: format_version 1, no content_sha256."""
    index = make_index()
    meta = {"format": "prac-index", "format_version": "1", **index.metadata, "size": str(len(rows)), **overrides}
    return write_raw(path, {**index.statistics, "rows": torch.tensor(rows)}, meta, checksum="drop")


def test_version_1_files_load_with_every_check_but_the_checksum_and_resave_as_version_2(tmp_path):
    path = version_1_file(tmp_path / "old.prac.safetensors")
    old = PracIndex.load(path)
    assert old.format_version == 1 and CHECKSUM_FIELD not in old.metadata
    old.check_dataset(toy_signature())  # signature and per-row labels still checked
    with pytest.raises(PracError, match="metadata class_names = 'oops' is not allowed"):
        PracIndex.load(version_1_file(tmp_path / "bad.prac.safetensors", class_names="oops"))
    with pytest.raises(PracError, match="rows must be sorted and distinct; row 4 .* repeats"):
        PracIndex.load(version_1_file(tmp_path / "dup.prac.safetensors", rows=(1, 4, 4)))
    new = PracIndex.load(old.save(tmp_path / "new.prac.safetensors"))
    assert new.format_version == 2 and new.metadata[CHECKSUM_FIELD] and new.metadata["model"] == "lenet"
    assert_same(old, new)


# -- 2. per-row labels against the dataset ------------------------------------------------------------------------
def test_stored_labels_are_compared_with_the_dataset_at_those_rows(tmp_path):
    # a file consistent in itself (valid checksum, same label hash), but row 4's label is not the dataset's
    index = PracIndex.load(make_index(labels=[1, 2, 1]).save(tmp_path / "s.prac.safetensors"))
    with pytest.raises(PracError, match=r"^x: row 4 has label 2 in the file, 1 in toy split train; the file's rows or labels were changed"):
        index.check_dataset(toy_signature(), "x")
    plain = dict(toy_signature())  # a signature without labels attached: the labels may be given explicitly
    index.check_dataset(plain, "x")
    with pytest.raises(PracError, match="row 4 has label 2 in the file, 1"):
        index.check_dataset(plain, "x", labels=LABELS)
    split_rows = torch.tensor([0, 1, 3, 4, 7, 9])  # a training split of source rows, with its labels
    with pytest.raises(PracError, match="row 4 has label 2 in the file, 1 in the training split"):
        index.positions_in(split_rows, "x", labels=LABELS[split_rows])
    assert make_index().positions_in(split_rows, "x", labels=LABELS[split_rows]).tolist() == [1, 3, 4]


def test_a_prac_runs_own_round_file_is_checked_against_the_training_labels(tmp_path):
    """`prac` reads its round files back with `positions_in(..., labels=)`: a round file that disagrees with the data
    the run trains on now (edited, or data changed before a resume) is refused instead of training on other rows."""
    from types import SimpleNamespace

    from prac_plugin.rundir.folder import RunDirectory
    from prac_plugin.strategies.prac.options import round_path
    from prac_plugin.strategies.prac.strategy import _set_positions

    split_rows = torch.tensor([0, 1, 3, 4, 7, 9])
    train = SimpleNamespace(row_ids=split_rows, labels=LABELS[split_rows])
    run_dir = RunDirectory(tmp_path)
    context = SimpleNamespace(run_dir=run_dir, train=train)
    round_path(tmp_path, 0).parent.mkdir()  # PrAC's own files: named by the strategy, not the run folder
    make_index().save(round_path(tmp_path, 0))
    assert _set_positions(context, 0).tolist() == [1, 3, 4]
    make_index(labels=[1, 1, 0]).save(round_path(tmp_path, 1))
    with pytest.raises(PracError, match="round 1 set: row 7 has label 0 in the file, 1 in the training split"):
        _set_positions(context, 1)


def test_the_timm_hook_checks_stored_labels_without_a_new_argument(tiny_hfds, tmp_path):
    from timm.data import create_dataset

    import prac_plugin.timm
    from prac_plugin.integrations.timm.data import dataset_identity

    dataset = create_dataset(f"hfds/{tiny_hfds['path']}", root=str(tiny_hfds["cache"]), split="train")
    identity, labels, names = dataset_identity(dataset, f"hfds/{tiny_hfds['path']}", "train")
    rows = torch.tensor([3, 10, 20])
    stored = labels[rows].clone()
    stored[1] = (stored[1] + 1) % len(names)
    path = PracIndex(rows, {**identity, "class_names": json.dumps(names)}, {"labels": stored}).save(tmp_path / "t.prac.safetensors")
    hook = prac_plugin.timm.TimmHook(torch.nn.Linear(1, 1), index=str(path))
    with pytest.raises(PracError, match=rf"--prac-index '{path}': row 10 has label {int(stored[1])} in the file, {int(labels[10])} in"):
        hook.wrap(dataset)


# -- 3. the dataset signature is required -------------------------------------------------------------------------
def test_a_file_without_the_dataset_signature_is_refused_naming_the_fields(tmp_path):
    index = make_index()
    for key in ("labels_sha256", "features_sha256"):
        del index.metadata[key]
    loaded = PracIndex.load(index.save(tmp_path / "s.prac.safetensors"))  # readable (inspect, compare) ...
    with pytest.raises(PracError, match=r"^x has no dataset signature \(labels_sha256, features_sha256 missing from its metadata\)"):
        loaded.check_dataset(toy_signature(), "x")  # ... but never matched to a dataset


# -- 4. malformed metadata and tensors: one PracError naming the field ---------------------------------------------
MALFORMED = {
    "format_version not a number": ({"format_version": "two"}, None, r"metadata format_version = 'two' is not a known version; this prac_plugin reads 1, 2"),
    "format_version fractional": ({"format_version": "1.5"}, None, r"format_version = '1.5' is not a known version"),
    "format_version 0": ({"format_version": "0"}, None, r"format_version = '0' is not a known version"),
    "format_version padded": ({"format_version": "02"}, None, r"format_version = '02' is not a known version"),
    "format_version future": ({"format_version": "3"}, None, r"has format version 3; this prac_plugin reads up to 2"),
    "format_version missing": ({"format_version": None}, None, r"has no metadata format_version"),
    "format foreign": ({"format": "weights"}, None, r"is not a PrAC index file \(format 'weights'"),
    "num_rows not a number": ({"num_rows": "ten"}, None, r"metadata num_rows = 'ten' is not allowed; it must be a whole number of at least 1"),
    "num_rows negative": ({"num_rows": "-10"}, None, r"metadata num_rows = '-10' is not allowed"),
    "num_rows huge": ({"num_rows": "9" * 40}, None, r"metadata num_rows = '9{40}' is not allowed"),
    "num_rows too small": ({"num_rows": "5"}, None, r"rows holds 7, outside the split's rows 0..4 \(metadata num_rows = 5\)"),
    "size not a number": ({"size": "3.0"}, None, r"metadata size = '3.0' is not allowed"),
    "size wrong": ({"size": "4"}, None, r"is truncated: 3 rows, metadata says 4"),
    "size missing": ({"size": None}, None, r"has no metadata size"),
    "class_names not JSON": ({"class_names": "a,b,c"}, None, r"metadata class_names = 'a,b,c' is not allowed; it must be a JSON list of strings"),
    "class_names not a list": ({"class_names": '{"a": 0}'}, None, r"class_names = '\{\"a\": 0\}' is not allowed"),
    "class_names nested deeply": ({"class_names": "[" * 100_000 + "]" * 100_000}, None, r"class_names = '\[\[\[.*' is not allowed"),
    "class_names not strings": ({"class_names": "[0, 1, 2]"}, None, r"class_names = '\[0, 1, 2\]' is not allowed"),
    "label negative": ({}, {"labels": torch.tensor([1, -1, 1])}, r"statistic 'labels' holds -1 at row 4; class labels are 0 or more"),
    "label out of range": ({}, {"labels": torch.tensor([1, 3, 1])}, r"statistic 'labels' holds 3 at row 4, but class_names lists 3 classes \(labels 0..2\)"),
    "labels float": ({}, {"labels": torch.tensor([1.0, 1.0, 1.0])}, r"statistic 'labels' must be one integer class per row \(found torch.float32"),
    "rows float": ({}, {"rows": torch.tensor([1.0, 4.0, 7.0])}, r"rows must be a 1-D int64 tensor \(found torch.float32"),
    "rows int32": ({}, {"rows": torch.tensor([1, 4, 7], dtype=torch.int32)}, r"rows must be a 1-D int64 tensor \(found torch.int32"),
    "rows 2-D": ({}, {"rows": torch.tensor([[1, 4, 7]])}, r"rows must be a 1-D int64 tensor \(found torch.int64, shape \(1, 3\)\)"),
    "rows unsorted": ({}, {"rows": torch.tensor([1, 7, 4])}, r"rows must be sorted and distinct; row 4 \(entry 2\) comes after 7"),
    "rows duplicate": ({}, {"rows": torch.tensor([1, 4, 4])}, r"rows must be sorted and distinct; row 4 \(entry 2\) repeats"),
    "rows negative": ({}, {"rows": torch.tensor([-1, 4, 7])}, r"rows holds -1; row numbers are 0 or more"),
    "statistic length": ({}, {"forgetting": torch.zeros(2)}, r"statistic 'forgetting' has 2 entries for 3 rows"),
    "statistic scalar": ({}, {"forgetting": torch.tensor(1.0)}, r"tensor 'forgetting' is a scalar"),
    "flag not bool": ({}, {"never_learned": torch.zeros(3, dtype=torch.uint8)}, r"statistic 'never_learned' has dtype torch.uint8; it is a per-row flag"),
    "dtype unsupported": ({}, {"forgetting": torch.zeros(3, dtype=torch.complex64)}, r"tensor 'forgetting' has dtype torch.complex64; allowed"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_fields_are_one_error_naming_the_field(tmp_path, case):
    """Written consistently (checksum recomputed): the field's own check speaks, not the checksum."""
    meta_changes, tensor_changes, message = MALFORMED[case]
    good = make_index().save(tmp_path / "good.prac.safetensors")
    tensors, meta = read_raw(good)
    for key, value in meta_changes.items():
        meta.pop(key) if value is None else meta.__setitem__(key, value)
    tensors.update(tensor_changes or {})
    try:
        path = write_raw(tmp_path / "bad.prac.safetensors", tensors, meta)
    except Exception:  # safetensors cannot write every dtype torch has: then the reader never meets it
        pytest.skip(f"safetensors cannot write {case}")
    with pytest.raises(PracError, match=message):
        PracIndex.load(path)
    # save refuses what load would refuse (prac_plugin never writes a file it cannot read back), except where save
    # itself sets the field (format, version, size) or the constructor normalises the rows (dtype, order)
    if not case.startswith(("format", "size", "rows float", "rows int32", "rows unsorted", "rows duplicate")):
        rows = tensors.pop("rows")
        with pytest.raises(PracError, match=message):
            PracIndex(rows, meta, tensors).save(tmp_path / "again.prac.safetensors")


# -- the CLI: one line, exit status 2 -------------------------------------------------------------------------------
def changed_row_file(tmp_path) -> Path:
    path = make_index().save(tmp_path / "s.prac.safetensors")
    tensors, meta = read_raw(path)
    tensors["rows"] = torch.tensor([1, 5, 7])
    return write_raw(path, tensors, meta, checksum="keep")


def test_cli_inspect_and_compare_print_one_line_for_a_bad_file(tmp_path, capsys):
    bad = changed_row_file(tmp_path)
    good = make_index().save(tmp_path / "g.prac.safetensors")
    tensors, meta = read_raw(good)
    malformed = write_raw(tmp_path / "m.prac.safetensors", tensors, {**meta, "num_rows": "ten"})
    for argv, message in ((["index", "inspect", str(bad)], "its content changed after it was written"),
                          (["index", "compare", str(good), str(malformed)], "metadata num_rows = 'ten' is not allowed")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("prac: error: ") and message in err and len(err.strip().splitlines()) == 1
    # the real command line: no traceback either
    result = subprocess.run([sys.executable, "-m", "prac_plugin", "index", "inspect", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("prac: error: index file") and len(result.stderr.strip().splitlines()) == 1


def test_cli_inspect_names_the_format_and_checksum(tmp_path, capsys):
    assert main(["index", "inspect", str(make_index().save(tmp_path / "s.prac.safetensors"))]) == 0
    assert "format: version 2, content SHA-256 verified" in capsys.readouterr().out
    assert main(["index", "inspect", str(version_1_file(tmp_path / "old.prac.safetensors"))]) == 0
    assert "format: version 1 (no content checksum; save it again to add one)" in capsys.readouterr().out


def test_cli_run_with_an_index_whose_labels_differ_from_the_dataset(tmp_path, capsys):
    """`prac run` with data_selection.strategy index: the strategy's unchanged call to check_dataset compares the
    stored labels with digits' own (the file is otherwise valid: checksum, row count, label hash)."""
    from prac_plugin.config.schema import from_dict
    from prac_plugin.data.sources import load_data
    from prac_plugin.config.recipes import DataSection
    from prac_plugin.index_files.format import dataset_signature

    bundle = load_data(from_dict(DataSection, quick_recipe()["data"], "data"))
    rows = bundle.train.row_ids[:20].sort().values
    stored = bundle.source_labels[rows].clone()
    stored[5] = (stored[5] + 1) % 10
    path = PracIndex(rows, {**dataset_signature(bundle), "class_names": json.dumps(bundle.class_names)},
                     {"labels": stored}).save(tmp_path / "d.prac.safetensors")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(quick_recipe(data_selection={"strategy": "index", "path": str(path)}, ticket={"levels": 1})))
    assert main(["run", str(recipe), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    expected = f"prac: error: index file '{path}': row {int(rows[5])} has label {int(stored[5])} in the file, {int(bundle.source_labels[rows[5]])} in"
    assert err.startswith(expected) and len(err.strip().splitlines()) == 1


# -- 5. property-based: the reader never fails with anything but PracError -----------------------------------------
# PRAC_HYPOTHESIS_EXAMPLES=5000 for a longer hunt; 60 keeps each test to a few seconds on a 2-core CPU
FAST = settings(max_examples=int(os.environ.get("PRAC_HYPOTHESIS_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
TEXT = st.text(max_size=12)


@st.composite
def index_sets(draw):
    num_rows = draw(st.integers(1, 2000))
    rows = sorted(draw(st.sets(st.integers(0, num_rows - 1), min_size=1, max_size=min(num_rows, 40))))
    n, classes = len(rows), draw(st.integers(1, 12))
    stats = {}
    if draw(st.booleans()):
        stats["labels"] = torch.tensor(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    if draw(st.booleans()):
        stats["forgetting"] = torch.tensor(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype=torch.float32)
    if draw(st.booleans()):
        stats["never_learned"] = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if draw(st.booleans()):
        stats["presentations"] = torch.tensor(draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=n, max_size=n)), dtype=torch.int32)
    extra = draw(st.dictionaries(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).filter(
        lambda k: k not in ("format", "format_version", "size", "num_rows", "class_names", CHECKSUM_FIELD)), TEXT, max_size=4))
    meta = {**extra, "num_rows": str(num_rows), "class_names": json.dumps([f"c{i}" for i in range(classes)])}
    return PracIndex(torch.tensor(rows), meta, stats)


@FAST
@given(index=index_sets())
def test_property_valid_sets_round_trip(tmp_path, index):
    loaded = PracIndex.load(index.save(tmp_path / "p.prac.safetensors"))
    assert_same(index, loaded)
    assert {k: loaded.metadata[k] for k in index.metadata} == index.metadata and loaded.format_version == 2


def load_or_prac_error(path):
    """The property: a PracError, or an index whose stored checksum is valid (so its content is what was saved)."""
    try:
        index = PracIndex.load(path)
    except PracError:
        return None
    if index.format_version == 2:
        tensors = {"rows": index.rows, **index.statistics}
        assert index.metadata[CHECKSUM_FIELD] == content_sha256(tensors, index.metadata)
    return index


DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "F16": 2, "BF16": 2,
               "F32": 4, "F64": 8, "C64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


@st.composite
def safetensors_like(draw):
    """Mostly well-formed safetensors bytes (so the reader's own checks are reached, version 1 needing no checksum)
    with arbitrary dtypes, shapes, data and metadata; sometimes a header or length gone wrong."""
    entries, offset = {}, 0
    for name in draw(st.lists(st.sampled_from(["rows", "labels", "forgetting", "never_learned", "x"]), max_size=4, unique=True)):
        dtype = "I64" if name == "rows" and draw(st.booleans()) else draw(st.sampled_from(sorted(DTYPE_SIZES)))
        shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=2) if draw(st.integers(0, 5)) else st.just([]))
        size = DTYPE_SIZES[dtype] * (shape[0] if shape else 1) * (shape[1] if len(shape) > 1 else 1)
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if entries and not draw(st.integers(0, 5)):  # a header that lies
        bad = entries[draw(st.sampled_from(sorted(entries)))]
        bad[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(
            st.sampled_from(["XX", [-1], [2**40, 2**40], [2**63], [5, 3], None, "I64", [0, 2**64 - 1]]))
    metadata = draw(st.dictionaries(st.sampled_from(["format_version", "size", "num_rows", "class_names", CHECKSUM_FIELD]),
                                    st.sampled_from(["1", "2", "3", "5", "[]", '["a", "b"]', "0"]) | TEXT, max_size=5))
    metadata.setdefault("format", draw(st.sampled_from(["prac-index", "prac-index", "x"])))
    if draw(st.integers(0, 5)):
        entries["__metadata__"] = metadata
    header = json.dumps(entries).encode() + b" " * draw(st.integers(0, 7))
    length = len(header) if draw(st.integers(0, 9)) else draw(st.integers(0, 2**64 - 1))
    data = draw(st.binary(min_size=offset, max_size=offset))
    tail = draw(st.sampled_from(["exact", "exact", "exact", "more", "less"]))
    data = data + b"\0" if tail == "more" else data[:-1] if tail == "less" else data
    return struct.pack("<Q", length) + header + data


@FAST
@given(data=st.binary(max_size=300) | safetensors_like())
def test_property_arbitrary_bytes_load_or_raise_prac_error(tmp_path, data):
    path = tmp_path / "f.prac.safetensors"
    path.write_bytes(data)
    load_or_prac_error(path)


@pytest.fixture(scope="module")
def saved_file(tmp_path_factory):
    return make_index(rows=(0, 2, 4, 5, 9)).save(tmp_path_factory.mktemp("saved") / "s.prac.safetensors").read_bytes()


@pytest.fixture(scope="module")
def saved_index(saved_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "s.prac.safetensors"
    path.write_bytes(saved_file)
    return PracIndex.load(path)


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.integers(0, 10**6),
                                st.integers(1, 255)), min_size=1, max_size=3))
def test_property_flips_truncations_and_insertions(tmp_path, saved_file, saved_index, edits):
    data = bytearray(saved_file)
    for kind, where, value in edits:
        at = where % max(1, len(data))
        if kind == "flip" and data:
            data[at] ^= value
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif data:
            del data[at]
    path = tmp_path / "e.prac.safetensors"
    path.write_bytes(bytes(data))
    index = load_or_prac_error(path)
    if index is not None:  # only an edit that leaves the content unchanged (e.g. header padding) may load
        assert_same(saved_index, index)
        assert index.metadata == saved_index.metadata


METADATA_VALUES = st.sampled_from(["", "0", "1", "2", "-1", "3", "10", "1e3", " 5", "[]", '["a"]', "[1]", "null", "{}", "x" * 300]) | TEXT


@FAST
@given(key=st.sampled_from(["format", "format_version", "size", "num_rows", "class_names", "labels_sha256", "model", CHECKSUM_FIELD]),
       value=METADATA_VALUES | st.none(), checksum=st.sampled_from(["keep", "recompute"]))
def test_property_mutated_metadata_values(tmp_path, saved_file, saved_index, key, value, checksum):
    """A changed value with the old checksum is always refused; with a recomputed checksum it loads only if valid."""
    source = tmp_path / "src.prac.safetensors"
    source.write_bytes(saved_file)
    tensors, meta = read_raw(source)
    assume(meta.get(key) != value)
    meta.pop(key) if value is None else meta.__setitem__(key, value)
    path = write_raw(tmp_path / "m.prac.safetensors", tensors, meta, checksum=checksum if key != CHECKSUM_FIELD else "keep")
    index = load_or_prac_error(path)
    if checksum == "keep" or key == CHECKSUM_FIELD:
        assert index is None or (key == "format_version" and value == "1")  # version 1 files carry no checksum
    if index is not None:  # the rows and statistics are the saved ones, whatever metadata passed the checks
        assert_same(saved_index, index)
