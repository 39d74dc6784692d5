"""Mask files are untrusted input: anything but exactly a boolean mask of the model's prunable weights is one
`PracError` naming the file and the entry, never a silently wrong ticket and never another exception."""

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from prac_plugin import PracError, TicketMask, prunable_parameter_names
from prac_plugin.cli import main

from conftest import TinyNet, quick_recipe

MODEL = TinyNet()
PARAMS = {n: tuple(p.shape) for n, p in MODEL.named_parameters()}
PRUNABLE = prunable_parameter_names(MODEL)  # conv.weight, fc1.weight, fc.weight
NAMES = list(PARAMS) + ["bn.running_mean", "bn.num_batches_tracked", "other.weight", "weight", "fc2.weight", "conv"]
DTYPES = [torch.bool, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8]
GLOBS = [None, ((), ()), ((), ("fc",)), (("fc1",), ()), (("conv", "fc*"), ("fc",))]


def dense_tensors(**changes) -> dict:
    tensors = {n: torch.rand(PARAMS[n]) > 0.5 for n in PRUNABLE}
    tensors.update(changes)
    return {n: t for n, t in tensors.items() if t is not None}


def save(path, tensors: dict) -> str:
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(path))
    return str(path)


@st.composite
def masks_and_globs(draw):
    """(name -> tensor, globs): names from the model (prunable or not) and others, often exactly the prunable set
    of the globs; boolean and of the right shape most of the time."""
    globs = draw(st.sampled_from(GLOBS))
    exact = prunable_parameter_names(MODEL, *(globs or ((), ())))
    names = list(exact) if draw(st.booleans()) else draw(st.lists(st.sampled_from(PRUNABLE), unique=True))
    names += [n for n in draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True)) if n not in names and draw(st.booleans())]
    tensors = {}
    for name in names:
        dtype = draw(st.sampled_from(DTYPES) if draw(st.integers(0, 5)) == 0 else st.just(torch.bool))
        shape = PARAMS.get(name) if draw(st.integers(0, 5)) else None
        if shape is None:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        values = torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
        tensors[name] = values.to(dtype)
    return tensors, globs


def expected_valid(tensors: dict, globs) -> bool:
    """The rule, stated independently of the reader: boolean prunable weights of the right shapes (and, with
    globs, exactly the prunable set they give)."""
    if not tensors or any(t.dtype != torch.bool for t in tensors.values()):
        return False
    if any(n not in PRUNABLE or tuple(t.shape) != PARAMS[n] for n, t in tensors.items()):
        return False
    return globs is None or set(tensors) == set(prunable_parameter_names(MODEL, *globs))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=masks_and_globs())
def test_any_tensor_file_loads_as_saved_or_is_a_prac_error(tmp_path, case):
    tensors, globs = case
    path = save(tmp_path / "mask.safetensors", tensors)
    kwargs = {} if globs is None else {"include": globs[0], "ignore": globs[1]}
    event("valid" if expected_valid(tensors, globs) else "invalid")
    try:
        mask = TicketMask.load(path, MODEL, **kwargs)
    except PracError as exc:
        assert not expected_valid(tensors, globs), f"a valid mask was refused: {exc}"
        assert path in str(exc)
        return
    assert expected_valid(tensors, globs)
    assert mask.equal(TicketMask(tensors))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_garbage_bytes_are_a_prac_error(tmp_path, data):
    path = tmp_path / "mask.safetensors"
    path.write_bytes(data)
    with pytest.raises(PracError, match="mask file"):
        TicketMask.load(path, MODEL)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), dtype=st.sampled_from(["BOOL", "F32", "U16", "U32", "F8_E4M3", "C64", "XYZ", "U1"]),
       flip=st.integers(0, 255))
def test_truncated_and_crafted_files_are_a_prac_error(tmp_path, cut, dtype, flip):
    good = tmp_path / "good.safetensors"
    save(good, dense_tensors())
    data = good.read_bytes()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data[: cut % len(data)])  # truncated anywhere
    with pytest.raises(PracError):
        TicketMask.load(path, MODEL)
    header = json.dumps({"conv.weight": {"dtype": dtype, "shape": [4, 1, 3, 3], "data_offsets": [0, 36]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes([flip]) * 36)  # foreign dtypes, any byte values
    try:
        mask = TicketMask.load(path, MODEL)
    except PracError:
        return
    assert dtype == "BOOL" and mask.num_remaining == (36 if flip else 0)  # any non-zero byte reads as True


def test_each_problem_names_the_file_and_the_entry(tmp_path):
    cases = {
        "float mask": (dense_tensors(**{"fc1.weight": torch.ones(PARAMS["fc1.weight"])}),
                       r"entry 'fc1.weight' is float32; a mask must be boolean.*looks like a weights file"),
        "int mask": (dense_tensors(**{"conv.weight": torch.ones(PARAMS["conv.weight"], dtype=torch.int64)}),
                     r"entry 'conv.weight' is int64; a mask must be boolean"),
        "bias": (dense_tensors(**{"conv.bias": torch.ones(4, dtype=torch.bool)}), r"entry 'conv.bias' is not a prunable weight"),
        "norm layer": (dense_tensors(**{"bn.weight": torch.ones(4, dtype=torch.bool)}), r"entry 'bn.weight' is not a prunable weight"),
        "unknown": (dense_tensors(**{"head.weight": torch.ones(3, dtype=torch.bool)}), r"entry 'head.weight' is not a parameter of TinyNet"),
        "shape": (dense_tensors(**{"fc.weight": torch.ones(4, 10, dtype=torch.bool)}),
                  r"entry 'fc.weight' has shape \(4, 10\), the model's weight has \(3, 10\)"),
        "empty": ({}, r"holds no entries"),
    }
    for name, (tensors, message) in cases.items():
        path = save(tmp_path / f"{name}.safetensors", tensors)
        with pytest.raises(PracError, match=message) as info:
            TicketMask.load(path, MODEL)
        assert repr(path) in str(info.value), name
    weights = save(tmp_path / "weights.safetensors", MODEL.state_dict())  # a weights file passed as a mask
    with pytest.raises(PracError, match=r"is int64; a mask must be boolean \(True = weight kept\); it looks like a weights file \(entry 'bn.bias' holds float32"):
        TicketMask.load(weights, MODEL)
    with pytest.raises(PracError, match="looks like a weights file"):
        TicketMask.load(weights)  # without a model too


def test_with_the_run_globs_the_entries_are_exactly_the_prunable_set(tmp_path):
    complete = save(tmp_path / "ok.safetensors", dense_tensors(**{"fc.weight": None}))
    assert set(TicketMask.load(complete, MODEL, include=[], ignore=["fc"]).masks) == {"conv.weight", "fc1.weight"}
    classifier = save(tmp_path / "classifier.safetensors", dense_tensors())  # holds the ignored classifier
    with pytest.raises(PracError, match=r"classifier.safetensors' does not hold exactly .*ignore \['fc'\]: entry 'fc.weight' is not prunable"):
        TicketMask.load(classifier, MODEL, ignore=["fc"])
    TicketMask.load(classifier, MODEL)  # without the globs the classifier may be pruned: accepted
    missing = save(tmp_path / "missing.safetensors", dense_tensors(**{"conv.weight": None, "fc.weight": None}))
    with pytest.raises(PracError, match=r"entry 'conv.weight' is missing"):
        TicketMask.load(missing, MODEL, ignore=["fc"])
    both = save(tmp_path / "both.safetensors", dense_tensors(**{"conv.weight": None}))
    with pytest.raises(PracError, match=r"entry 'conv.weight' is missing; entry 'fc.weight' is not prunable"):
        TicketMask.load(both, MODEL, ignore=["fc"])


def test_prac_retrain_refuses_a_replaced_mask_and_reports_the_loaded_density(tmp_path, capsys):
    """A run's level mask swapped for a float tensor or a mask with the ignored classifier is one `prac: error:`;
    an edited but valid mask is trained and its own density reported."""
    import prac_plugin

    run = tmp_path / "run"
    prac_plugin.run(quick_recipe(ticket={"levels": 1}), str(run))
    mask_path = run / "level_01" / "mask.safetensors"
    original = TicketMask.load(mask_path)
    recorded = json.loads((run / "level_01" / "metrics.json").read_text())["weights_remaining_pct"]
    capsys.readouterr()

    save(mask_path, {n: m.float() for n, m in original.masks.items()})
    assert main(["retrain", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prac: error: mask file") and "must be boolean" in err[0]

    save(mask_path, {**original.masks, "fc.weight": torch.ones(10, 100, dtype=torch.bool)})  # recipe ignores fc
    assert main(["retrain", str(run)]) == 2
    assert "entry 'fc.weight' is not prunable" in capsys.readouterr().err

    halved = {n: m & (torch.rand(m.shape) < 0.5) for n, m in original.masks.items()}  # a user's edit: fewer weights
    save(mask_path, halved)
    assert main(["retrain", str(run)]) == 0
    result = json.loads((run / "full_data" / "level_01.json").read_text())
    assert result["weights_remaining_pct"] == pytest.approx(100 * TicketMask(halved).density)
    assert result["weights_remaining_pct"] < recorded - 10
