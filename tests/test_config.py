"""Profiles: one switch for the whole project."""

import dataclasses

import pytest

from xmodality_lite.config import PROFILES, get_profile


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
