"""Preprocessing (paper §3.1): HU window, min-max, slice filter, split, crops, cache, batches."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from xmodality_lite.config import get_profile
from xmodality_lite.data import dataset
from xmodality_lite.preprocessing import (
    BatchIterator,
    VolumePair,
    build_slice_dataset,
    minmax_scale,
    random_crop,
    slice_filter,
    slice_volume,
    split_patients,
    unwindow_hu,
    window_hu,
)


def test_window_unwindow_round_trip_and_closed_form():
    hu = np.array([-1000.0, -50.0, 0.0, 150.0, 350.0, 2000.0])
    y = window_hu(hu)
    np.testing.assert_allclose(y, [-1, -1, -0.75, 0.0, 1, 1])
    np.testing.assert_allclose(unwindow_hu(y), np.clip(hu, -50, 350), atol=1e-4)
    np.testing.assert_allclose(unwindow_hu(y), (y + 1) * 200 - 50, atol=1e-4)
    with pytest.raises(ValueError, match="window"):
        window_hu(hu, (350, -50))


def test_minmax_per_slice_and_constant_slice():
    x = np.stack([np.arange(12.0).reshape(3, 4), np.full((3, 4), 7.0)])
    y = minmax_scale(x, axis=(-2, -1))
    np.testing.assert_allclose(y[0], 2 * np.arange(12.0).reshape(3, 4) / 11 - 1, rtol=1e-6)
    np.testing.assert_array_equal(y[1], 0.0)  # constant → zeros, not NaN
    assert slice_volume(np.zeros((5, 6, 7))).shape == (7, 5, 6)


def _square(n_px, offset=0, size=40):
    m = np.zeros((size, size), bool)
    m.flat[offset:offset + n_px] = True
    return m


def test_slice_filter_counts_on_constructed_case():
    tof_ok, cta_ok = _square(400), _square(400, 100)  # overlap 300 → Dice 0.75
    small = _square(150)
    far = _square(400, 1000)  # overlap 0 with tof_ok
    to_hu = lambda m: np.where(m, 200.0, -30.0)  # noqa: E731  (CTA mask is HU > 0)
    cases = [(small.astype(float), to_hu(small)), (tof_ok.astype(float), to_hu(far)),
             (tof_ok.astype(float), to_hu(cta_ok))]
    decisions = [slice_filter(t, c, tof_threshold=0.5) for t, c in cases]
    assert [d.keep for d in decisions] == [False, False, True]
    assert decisions[0].reason == "tof foreground < 200 px" and decisions[0].tof_px == 150
    assert decisions[1].reason == "dice < 0.3" and decisions[1].dice == 0.0
    assert decisions[2].dice == pytest.approx(2 * 300 / 800)


def test_split_is_patient_level_seed_stable_and_matches_paper():
    ids = [f"{i:03d}" for i in range(89)]
    split = split_patients(ids, (0.7, 0.15, 0.15), seed=42)
    assert [len(split[s]) for s in ("train", "val", "test")] == [62, 13, 14]  # paper §3.1
    assert sorted(sum(split.values(), [])) == ids  # every patient once, no overlap
    assert split == split_patients(list(reversed(ids)), seed=42)
    assert split != split_patients(ids, seed=43)
    assert [len(v) for v in split_patients(["a", "b", "c"]).values()] == [1, 1, 1]
    with pytest.raises(ValueError, match="fractions"):
        split_patients(ids, (0.5, 0.5, 0.5))


def test_crop_is_identical_for_tof_and_cta_and_pads():
    rng = np.random.default_rng(0)
    a = np.arange(30 * 20, dtype=np.float32).reshape(30, 20)
    t, c = random_crop(rng, a, a + 1000, 24)
    inside = t >= 0
    np.testing.assert_array_equal(c[inside], t[inside] + 1000)  # the same window in both
    np.testing.assert_array_equal(c[~inside], -1.0)
    assert t.shape == (24, 24) and np.all(t[:, 20:] == -1)  # padded right with −1
    with pytest.raises(ValueError, match="tof, cta"):
        random_crop(rng, a, a[:5], 8)


def _pairs(n=5, shape=(24, 20, 6), seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        vessels = np.zeros(shape, bool)
        vessels[4:18, 3:17, 1:5] = True  # slices 0 and 5 are empty → dropped
        tof = np.where(vessels, 500.0, 100.0) + rng.normal(0, 5, shape)
        cta = np.where(vessels, 300.0, -20.0) + rng.normal(0, 5, shape)
        pairs.append(VolumePair(f"p{i}", tof, cta))
    return pairs


def test_dataset_slices_cache_and_rebuild(tmp_path):
    profile = get_profile("smoke")
    ds = build_slice_dataset(_pairs(), profile, cache_dir=tmp_path, progress=False)
    assert sum(len(s) for s in ds.values()) == 5 * 4
    assert all(set(np.unique(ds[s].index)) == {1, 2, 3, 4} for s in ds if len(ds[s]))
    assert ds["train"].tof.min() >= -1 and ds["train"].cta.max() <= 1
    manifest = json.loads((tmp_path / "smoke" / "manifest.json").read_text())
    assert manifest["slices"] == {s: len(ds[s]) for s in ds}
    assert manifest["dropped"]["p0"] == {"tof foreground < 20 px": 2}
    again = build_slice_dataset(_pairs(), profile, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again["train"].tof, ds["train"].tof)
    changed = build_slice_dataset(_pairs(seed=1), profile, cache_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "smoke" / "manifest.json").read_text())["sources"] != manifest["sources"]
    assert not np.array_equal(changed["train"].tof, ds["train"].tof)


def _no_slicing(pair, d):
    raise AssertionError(f"{pair.id} was sliced again instead of read from the cache")


def test_one_split_alone_equals_that_split_of_the_whole(tmp_path, monkeypatch):
    """splits=("test",): only the test patients are read and sliced, the result equals the whole
    dataset's test split, a part never passes for the whole, and the whole serves any part."""
    profile = get_profile("smoke")
    whole = [dataclasses.replace(p, source=f"{p.id} recipe") for p in _pairs()]
    test_ids = split_patients([p.id for p in whole], profile.data.split, profile.data.seed)["test"]
    alone = [p if p.id in test_ids else dataclasses.replace(p, tof=None, cta=None) for p in whole]
    part = build_slice_dataset(alone, profile, cache_dir=tmp_path, progress=False, splits=("test",))
    assert list(part) == ["test"] and set(part["test"].subject) == set(test_ids)
    assert json.loads((tmp_path / "smoke-test" / "manifest.json").read_text())["built"] == ["test"]
    assert sorted(f.name for f in (tmp_path / "smoke-test").iterdir()) == ["manifest.json", "test.npz"]
    with monkeypatch.context() as m:  # the part's own cache serves it again
        m.setattr(dataset, "_slices_of", _no_slicing)
        np.testing.assert_array_equal(build_slice_dataset(
            alone, profile, cache_dir=tmp_path, progress=False, splits="test")["test"].cta, part["test"].cta)

    full = build_slice_dataset(whole, profile, cache_dir=tmp_path, progress=False)  # built, not the part
    assert list(full) == ["train", "val", "test"]
    for field in dataclasses.fields(full["test"]):
        np.testing.assert_array_equal(getattr(part["test"], field.name), getattr(full["test"], field.name))

    shutil.rmtree(tmp_path / "smoke-test")  # from now on the whole dataset's cache serves the part
    monkeypatch.setattr(dataset, "_slices_of", _no_slicing)
    again = build_slice_dataset(alone, profile, cache_dir=tmp_path, progress=False, splits=["val", "test"])
    assert list(again) == ["val", "test"] and not (tmp_path / "smoke-val+test").exists()
    np.testing.assert_array_equal(again["val"].tof, full["val"].tof)
    with pytest.raises(ValueError, match=r"splits: expected a non-empty subset of \('train', 'val', 'test'\)"):
        build_slice_dataset(whole, profile, cache_dir=tmp_path, progress=False, splits=("tests",))
    with pytest.raises(ValueError, match="splits"):
        build_slice_dataset(whole, profile, cache_dir=tmp_path, progress=False, splits=())


def test_phantom_test_split_alone_makes_only_the_test_patients(tmp_path, monkeypatch):
    from xmodality_lite.data import phantom

    made, real = [], phantom.make_pair
    monkeypatch.setattr(phantom, "make_pair", lambda seed, *a, **k: made.append(seed) or real(seed, *a, **k))
    test = dataset.phantom_dataset("smoke", cache_dir=tmp_path, progress=False, splits=("test",))["test"]
    assert made == [int(s.removeprefix("phantom")) for s in sorted(set(test.subject))]  # 1 of 3
    full = dataset.phantom_dataset("smoke", cache_dir=tmp_path, progress=False)
    assert len(made) == 1 + get_profile("smoke").data.n_subjects
    np.testing.assert_array_equal(full["test"].tof, test.tof)
    np.testing.assert_array_equal(full["test"].hw, test.hw)


def test_failure_mid_write_leaves_no_valid_cache(tmp_path, monkeypatch):
    profile = get_profile("smoke")
    build_slice_dataset(_pairs(), profile, cache_dir=tmp_path, progress=False)
    calls, real = [], np.savez

    def crash(path, **arrays):  # the second split's write fails half-way
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, **arrays)

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        build_slice_dataset(_pairs(seed=1), profile, cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    folder = tmp_path / "smoke"
    assert not (folder / "manifest.json").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    # the next call rebuilds from scratch and agrees with a fresh build
    rebuilt = build_slice_dataset(_pairs(seed=1), profile, cache_dir=tmp_path, progress=False)
    fresh = build_slice_dataset(_pairs(seed=1), profile, cache_dir=tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(rebuilt["val"].cta, fresh["val"].cta)


def test_batch_iterator_resumes_at_step_k(tmp_path):
    ds = build_slice_dataset(_pairs(), get_profile("smoke"), cache_dir=tmp_path, progress=False)["train"]
    it = BatchIterator(ds, batch_size=5, seed=3, image_size=16)
    run = [b for _, b in zip(range(6), it.iterate(), strict=False)]
    resumed = [b for _, b in zip(range(3), BatchIterator(ds, 5, 3, 16).iterate(start_step=3), strict=False)]
    for (t1, c1), (t2, c2) in zip(run[3:], resumed, strict=True):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(c1, c2)
    assert run[0][0].shape == (5, 16, 16, 1)
    assert not np.array_equal(run[0][0], BatchIterator(ds, 5, 4, 16).batch_at(0)[0])
    with pytest.raises(ValueError, match="step"):
        it.batch_at(-1)


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {}, "{home}/.cache/xmodality_lite"),
    ("linux", {"XDG_CACHE_HOME": "{home}/xdg"}, "{home}/xdg/xmodality_lite"),
    ("linux", {"XDG_CACHE_HOME": "relative"}, "{home}/.cache/xmodality_lite"),  # XDG: ignored
    ("darwin", {}, "{home}/Library/Caches/xmodality_lite"),
    ("win32", {"LOCALAPPDATA": "{home}/AppData/Local"}, "{home}/AppData/Local/xmodality_lite/Cache"),
    ("linux", {"XMODALITY_CACHE": "{home}/mine", "XDG_CACHE_HOME": "{home}/xdg"}, "{home}/mine"),
])
def test_default_cache_dir_is_per_user_never_in_the_package(monkeypatch, tmp_path, platform, env,
                                                            expected):
    """$XMODALITY_CACHE, else the platform's user cache folder (the XDG base directory
    specification on Linux, Apple's and Microsoft's per-user cache folders)."""
    import sys
    from pathlib import Path

    import xmodality_lite
    from xmodality_lite.preprocessing import default_cache_dir

    for name in ("XMODALITY_CACHE", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(home=tmp_path))
    monkeypatch.setattr(sys, "platform", platform)
    got = default_cache_dir()
    monkeypatch.undo()
    assert got == Path(expected.format(home=tmp_path))
    assert not got.is_relative_to(Path(xmodality_lite.__file__).parent)


def test_slice_size_resamples_as_the_volume_pipeline(tmp_path):
    """With ``slice_size`` each kept slice is what translate_volume feeds a model: the raw TOF
    slice resampled by scipy's cubic zoom, then min-maxed; the CTA windowed, resampled, clipped."""
    import dataclasses

    from scipy import ndimage

    from xmodality_lite.data.slices import minmax_scale, window_hu

    smoke = get_profile("smoke")
    profile = smoke.replace(data=dataclasses.replace(smoke.data, slice_size=16))
    pairs = _pairs()
    ds = build_slice_dataset(pairs, profile, cache_dir=tmp_path, progress=False)
    assert ds["train"].tof.shape[1:] == (16, 16) and np.all(ds["train"].hw == 16)
    by_id = {p.id: p for p in pairs}
    for i in range(len(ds["train"])):
        pair, k = by_id[str(ds["train"].subject[i])], int(ds["train"].index[i])
        zoom = (16 / 24, 16 / 20)
        tof = ndimage.zoom(pair.tof[..., k].astype(np.float32), zoom, order=3, mode="nearest")
        cta = ndimage.zoom(window_hu(pair.cta[..., k]), zoom, order=3, mode="nearest")
        np.testing.assert_allclose(ds["train"].tof[i], minmax_scale(tof), atol=1e-5)
        np.testing.assert_allclose(ds["train"].cta[i], np.clip(cta, -1, 1), atol=1e-5)
    native = build_slice_dataset(pairs, smoke, cache_dir=tmp_path, progress=False)
    assert native["train"].tof.shape[1:] == (24, 20)  # None keeps the native grid (the paper)


def test_preprocessing_only_gathers_names_from_their_homes():
    """xl.preprocessing is the paper's word for the step; it holds no code of its own, only the
    objects of config, data.slices and data.dataset (so nothing here can drift from them)."""
    from xmodality_lite import config, preprocessing
    from xmodality_lite.data import dataset, slices

    homes = (config, slices, dataset)
    for name in preprocessing.__all__:
        owners = [m for m in homes if getattr(m, name, None) is getattr(preprocessing, name)]
        assert owners, f"preprocessing.{name} is not an object of config/data.slices/data.dataset"
    assert preprocessing.HU_WINDOW is config.HU_WINDOW
