"""Property tests of the recipe loader (issue 16 hardening, part 3): whatever text, mapping or override a user
gives, loading ends in a valid Recipe or one PracError naming the problem, never another exception's traceback."""

from __future__ import annotations

import dataclasses
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prac_plugin import PracError
from prac_plugin.config.recipes import SECTIONS, DataSection, ModelSection, Recipe, RunSection, TrainSection, apply_overrides, load_recipe, parse_recipe
from prac_plugin import registry

from conftest import quick_recipe

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _keys(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


KEYS = {
    "model": _keys(ModelSection), "data": _keys(DataSection), "train": _keys(TrainSection), "run": _keys(RunSection),
    "ticket": sorted({k for name in registry.available("ticket") for k in _keys(registry.get("ticket", name).Options)} | {"strategy"}),
    "data_selection": sorted({k for name in registry.available("data_selection")
                              for k in _keys(registry.get("data_selection", name).Options)} | {"strategy"}),
}
STRATEGY_NAMES = registry.available("ticket") + registry.available("data_selection")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 3), st.sampled_from([10**400, -(10**400), 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.sampled_from(STRATEGY_NAMES),
    st.sampled_from(["1ep", "0it", "500it", "none", "auto", "global", "layer", "no", "bf16", "builtin:digits", "fc", "*"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


@st.composite
def sections(draw):
    """Mappings with the real section and key names (and some strangers), holding arbitrary values."""
    raw = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=6)):
        keys = draw(st.lists(st.sampled_from(KEYS[section]), unique=True, max_size=4))
        raw[section] = {k: draw(values) for k in keys}
        if draw(st.integers(0, 9)) == 0:
            raw[section] = draw(values)  # a section that is not a mapping
    if draw(st.integers(0, 9)) == 0:
        raw[draw(st.text(max_size=5))] = draw(values)
    return raw


def _outcome(call):
    """Run ``call``: a Recipe or a PracError are the only allowed outcomes (anything else propagates)."""
    try:
        result = call()
    except PracError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), str(exc)
        return exc
    assert isinstance(result, Recipe)
    return result


@SETTINGS
@given(raw=sections())
def test_any_mapping_of_sections_is_a_recipe_or_a_prac_error(raw):
    _outcome(lambda: parse_recipe(raw))


@SETTINGS
@given(section=st.sampled_from(SECTIONS), updates=st.dictionaries(st.text(max_size=12), values, max_size=3))
def test_changing_keys_of_a_working_recipe_is_a_recipe_or_a_prac_error(section, updates):
    recipe = quick_recipe()
    recipe[section] = {**recipe[section], **{k: v for k, v in updates.items()}}
    for key in list(updates)[:1]:  # and a real key of the section with the first value
        recipe[section][KEYS[section][hash(key) % len(KEYS[section])]] = updates[key]
    _outcome(lambda: parse_recipe(recipe))


edge_values = st.one_of(
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, 2**64, 10**400, -(10**400), 0.0, -0.0, 1.0, 0.5, 1e-12, 1 - 1e-12, 1e308]),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), None, True, False, "", "0", "-1", "1ep", "0it", "0ep", "x"]),
    st.lists(st.sampled_from([0, -1, 1, 0.5, 2**64, None, "a"]), max_size=3), st.dictionaries(st.sampled_from(["a", "fc"]), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(SECTIONS), data=st.data())
def test_every_real_key_with_edge_values_is_a_recipe_or_a_prac_error(section, data):
    """Each key the schema knows, given the values that break code (huge ints, NaN, 0, -1, wrong types)."""
    recipe = quick_recipe()
    if section == "ticket":
        recipe["ticket"] = {"strategy": data.draw(st.sampled_from(registry.available("ticket")))}
        keys = _keys(registry.get("ticket", recipe["ticket"]["strategy"]).Options)
    elif section == "data_selection":
        recipe[section] = {"strategy": data.draw(st.sampled_from(registry.available("data_selection")))}
        keys = _keys(registry.get("data_selection", recipe[section]["strategy"]).Options) or ["strategy"]
    else:
        keys = KEYS[section]
    for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True)):
        recipe[section][key] = data.draw(edge_values)
    _outcome(lambda: parse_recipe(recipe))


override_keys = st.one_of(
    st.text(max_size=15),
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS), st.sampled_from(sorted({k for ks in KEYS.values() for k in ks}))),
    st.builds(lambda s, k, j: f"{s}.{k}.{j}", st.sampled_from(SECTIONS), st.text(string.ascii_letters, max_size=5), st.text(max_size=4)),
)
override_values = st.one_of(st.text(max_size=15), st.builds(lambda v: yaml.safe_dump(v, default_flow_style=True).strip(), values),
                            st.sampled_from(["[", "{a: ", "*x", "&a 1", "!!python/object:os.system ls", "1e-3", "1e999", "-1", "0", "~", "- a\n- b"]))


@SETTINGS
@given(items=st.lists(st.one_of(st.text(max_size=20), st.builds(lambda k, v: f"{k}={v}", override_keys, override_values)), max_size=4))
def test_any_override_is_a_recipe_or_a_prac_error(items):
    _outcome(lambda: parse_recipe(apply_overrides(quick_recipe(), items)))


yaml_fragments = st.sampled_from([
    "model:", "data:", "train:", "ticket:", "run:", "data_selection:", "  name: lenet_300_100", "  epochs: 2", "  lr: 1e-3",
    "  levels: -1", "  strategy: cts", "  densities: [0.1, 2]", "  batch_size: 0", "- a", "  - b", "a: &x 1", "b: *x", "*y",
    "  kwargs: {img_size: 8}", "{", "}", "[", "]", ": :", "'", '"', "\t", "  fraction: .inf", "  val_fraction: 1", "!!binary x",
    "!!python/tuple [1]", "%YAML 1.1", "---", "...", "? x", "  checkpoint_every: 0ep", "  milestones: [0]", "x: !!float abc",
    "  seed: 99999999999999999999999", "  lr: 1" + "0" * 400,
])


@SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.lists(yaml_fragments, max_size=12).map("\n".join)))
def test_any_recipe_file_is_a_recipe_or_a_prac_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if text.isprintable() else path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _outcome(lambda: load_recipe(path))


@SETTINGS
@given(text=st.lists(yaml_fragments, max_size=12).map("\n".join), items=st.lists(st.builds(lambda k, v: f"{k}={v}", override_keys, override_values), max_size=3))
def test_a_recipe_file_with_overrides_is_a_recipe_or_a_prac_error(tmp_path_factory, text, items):
    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_text(text)
    _outcome(lambda: load_recipe(path, items))


@pytest.mark.parametrize("text,message", [
    ("train: {lr: !!float abc}", "is not valid YAML: a value yaml cannot read"),
    ("train: {lr: !!float ''}", "is not valid YAML: a value yaml cannot read"),
    ("ticket: 3", "ticket should be a mapping of keys, got 3"),
    ("ticket: [a]", r"ticket should be a mapping of keys, got \['a'\]"),
    ("train: {lr: 1" + "0" * 400 + "}", "train.lr = an integer of 401 digits is too large for a float"),
    ("model: {\"a\\nb\": 1}", r"unknown key model.'a\\nb'"),
    ("train: {seed: 4294967296}", r"train.seed = 4294967296 must be in 0..2\*\*32-1"),
    ("data: {split_seed: -1}", r"data.split_seed = -1 must be in 0..2\*\*63-1"),
    ("data_selection: {strategy: random, seed: 4294967296}", r"data_selection.seed = 4294967296 must be in 0..2\*\*32-1"),
    ("model: {in_chans: 0}", "model.in_chans = 0 must be at least 1"),
    ("data: {augment: {random_crop_padding: -2}}", "data.augment.random_crop_padding = -2 must be 0"),
])
def test_escapes_hypothesis_found_are_prac_errors(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(PracError, match=message):
        load_recipe(path)


def test_overrides_on_a_recipe_that_is_not_a_mapping_and_scientific_floats(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- a\n")
    with pytest.raises(PracError, match="a recipe must be a mapping"):
        load_recipe(path, ["train.lr=0.1"])
    with pytest.raises(PracError, match=r"override 'train.lr=!!float abc': value is not valid YAML \(ValueError\)"):
        apply_overrides({}, ["train.lr=!!float abc"])
    assert apply_overrides({}, ["train.lr=1e-3", "ticket.fraction=2E-1"]) == {"train": {"lr": 1e-3}, "ticket": {"fraction": 0.2}}
    path.write_text("train: {lr: 1e-3}\n")
    assert load_recipe(path).train.lr == 1e-3
