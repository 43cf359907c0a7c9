"""Profiles: one switch for the whole project."""

import ast
import dataclasses
import importlib
import pkgutil
import typing
from pathlib import Path

import pytest

import xmodality_lite
from xmodality_lite.config import (
    HU_WINDOW,
    HU_WINDOW_TEXT,
    MODEL_KINDS,
    PROFILES,
    SamplerName,
    get_profile,
    model_kind,
)


def test_paper_profile_is_the_papers_recipe():
    # Koch et al. 2024 §3.5: 256² crops, Adam 1e-4, batch 16, bf16, 150K steps.
    p = get_profile("paper")
    assert p.image_size == 256
    assert p.train.batch_size == 16
    assert p.train.learning_rate == 1e-4
    assert p.train.dtype == "bfloat16"
    assert p.train.steps == 150_000
    assert p.train.min_snr_gamma == 5.0
    assert p.data.hu_window == (-50.0, 350.0)


def test_environment_variable_selects_profile(monkeypatch):
    monkeypatch.setenv("XMODALITY_PROFILE", "paper")
    assert get_profile().name == "paper"
    monkeypatch.delenv("XMODALITY_PROFILE")
    assert get_profile().name == "cpu"


def test_unknown_profile_lists_valid_names(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown profile 'gpu'.*\['cpu', 'paper', 'smoke'\]"):
        get_profile("gpu")
    monkeypatch.setenv("XMODALITY_PROFILE", "huge")
    with pytest.raises(ValueError, match="huge"):
        get_profile()


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_are_frozen_and_serialisable(name):
    p = get_profile(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.image_size = 1  # type: ignore[misc]
    assert p.to_dict()["name"] == name
    assert '"image_size"' in p.to_json()


def test_profiles_grow_from_smoke_to_paper():
    sizes = [get_profile(n).image_size for n in ("smoke", "cpu", "paper")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


# ------------------------------------------------------------------ every fact has one home
PACKAGE = Path(xmodality_lite.__file__).parent


def _modules():
    """Every module of the package, imported (the lazy ones too)."""
    for info in pkgutil.walk_packages([str(PACKAGE)], "xmodality_lite."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def _registries():
    from xmodality_lite.diffusion import SAMPLERS
    from xmodality_lite.models import MODELS

    return {"HU window": (HU_WINDOW, {HU_WINDOW}),
            "model names": (MODELS, {tuple(MODELS), frozenset(MODELS)}),
            "sampler names": (SAMPLERS, {tuple(SAMPLERS), frozenset(SAMPLERS)}),
            "model kinds": (MODEL_KINDS, {MODEL_KINDS, frozenset(MODEL_KINDS)})}


def _as_fact(value):
    """A module constant in a comparable form: tuples of floats, or the set of its names."""
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    if isinstance(value, tuple | list | set | frozenset) and value and all(
            isinstance(v, str) for v in value):
        return frozenset(value)
    return None




def test_every_module_constant_for_a_fact_is_the_homes_object():
    """A module-level name whose value is the HU window, the model names, the sampler names or
    the model kinds is the one object config or the registry holds (an alias), not a copy."""
    facts = _registries()
    copies = []
    for module in _modules():
        for name, value in vars(module).items():
            fact = _as_fact(value)
            if fact is None:
                continue
            for what, (home, forms) in facts.items():
                if fact in {_as_fact(f) for f in forms} and value is not home:
                    copies.append(f"{module.__name__}.{name} ({what})")
    assert not copies, f"copies instead of the home's object: {copies}"


def _literals(tree):
    """Every tuple/list/set display of constants in a module's source, evaluated."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            try:
                yield node.lineno, ast.literal_eval(node)
            except ValueError:
                continue


# Literals that are the home, or a type that must spell its values out: the `Literal[...]` types
# in config are checked equal to the registries' keys below.
HOMES = {"HU window": {"config.py"}, "sampler names": {"config.py"}, "model kinds": {"config.py"}}


def test_no_second_literal_of_a_fact_in_the_source():
    """Source text, not only module attributes: the window (−50, 350), the model names, the
    sampler names and the model kinds are written out once, in their home."""
    facts = {what: {_as_fact(f) for f in forms} for what, (_, forms) in _registries().items()}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for line, value in _literals(ast.parse(path.read_text())):
            for what, forms in facts.items():
                if _as_fact(value) in forms and rel not in HOMES.get(what, set()):
                    found.append(f"{rel}:{line} ({what})")
    assert not found, f"second literals: {found}"


def test_typed_names_equal_their_registries():
    from xmodality_lite.diffusion import SAMPLERS
    from xmodality_lite.features import EXTRACTORS

    assert typing.get_args(SamplerName) == tuple(SAMPLERS)
    assert get_profile().sample.sampler in SAMPLERS
    assert "auto" in EXTRACTORS and set(EXTRACTORS) == {"auto", "vit", "standin"}


def test_per_model_tables_cover_the_registry():
    """Tables keyed by model (training steps, display names) name exactly the registered models."""
    from xmodality_lite.checkpoint import SHIPPED_STEPS
    from xmodality_lite.findings import NAMES
    from xmodality_lite.models import MODELS

    assert set(SHIPPED_STEPS) == set(MODELS) == set(NAMES)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_window_is_the_one_hu_window(name):
    assert get_profile(name).data.hu_window is HU_WINDOW
    assert HU_WINDOW == (-50.0, 350.0)  # paper §3.1
    assert HU_WINDOW_TEXT == "[−50, 350] HU"


class _Model:
    def __init__(self, kind):
        self.kind = kind


def test_model_kind_is_the_one_check():
    assert [model_kind(_Model(k)) for k in MODEL_KINDS] == ["diffusion", "regression"]
    with pytest.raises(ValueError, match=r"_Model has kind 'gan'; expected one of"):
        model_kind(_Model("gan"))
    with pytest.raises(ValueError, match="has kind None"):
        model_kind(object())
