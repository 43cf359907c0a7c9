"""TopCoW pairing: both editions' names (data-facts §1.2), _Warped TOFs, and clear errors."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from xmodality_lite.config import get_profile
from xmodality_lite.data.layout import write_topcow_layout
from xmodality_lite.data.topcow import (
    TopCowLayoutError,
    data_root,
    find_pairs,
    load_registration,
    register_pairs,
    validate_pair,
)


def _nifti(path: Path, shape=(4, 5, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def _layout_2023(root: Path, ids=("001", "012")) -> None:
    for case in ids:
        for mod in ("ct", "mr"):
            _nifti(root / "imagesTr" / f"topcow_{mod}_whole_{case}_0000.nii.gz")
            _nifti(root / "imagesTr" / f"topcow_{mod}_roi_{case}_0000.nii.gz")
            _nifti(root / "mul_labelsTr" / f"topcow_{mod}_whole_{case}.nii.gz")


def test_2023_whole_pairs_with_labels(tmp_path):
    _layout_2023(tmp_path)
    pairs = find_pairs(tmp_path)
    assert [p.id for p in pairs] == ["001", "012"]
    pair = pairs[1]
    assert pair.edition == "2023" and not pair.registered
    assert pair.tof.name == "topcow_mr_whole_012_0000.nii.gz"
    assert pair.cta.name == "topcow_ct_whole_012_0000.nii.gz"
    assert pair.cta_label == tmp_path / "mul_labelsTr" / "topcow_ct_whole_012.nii.gz"
    validate_pair(pair)
    assert find_pairs(tmp_path, region="roi")[0].tof.name == "topcow_mr_roi_001_0000.nii.gz"


def test_2024_layout_one_level_down_and_warped_tof_preferred(tmp_path):
    release = tmp_path / "TopCoW2024_Data_Release"
    for mod in ("ct", "mr"):
        _nifti(release / "imagesTr" / f"topcow_{mod}_007_0000.nii.gz")
        _nifti(release / "cow_seg_labelsTr" / f"topcow_{mod}_007.nii.gz")
    _nifti(release / "imagesTr" / "topcow_mr_007_0000_Warped.nii.gz")
    (pair,) = find_pairs(tmp_path)
    assert pair.edition == "2024" and pair.registered
    assert pair.tof.name == "topcow_mr_007_0000_Warped.nii.gz"
    assert pair.tof_label.name == "topcow_mr_007.nii.gz"


def test_every_problem_is_listed(tmp_path):
    _layout_2023(tmp_path, ids=("001",))
    _nifti(tmp_path / "imagesTr" / "topcow_ct_whole_012_0000.nii.gz")  # no TOF partner
    (tmp_path / "imagesTr" / "topcow_ct_whole_013_0000.mha").write_bytes(b"x")
    _nifti(tmp_path / "imagesTr" / "patient_5.nii.gz")
    with pytest.raises(TopCowLayoutError) as err:
        find_pairs(tmp_path)
    text = str(err.value)
    assert "1 patient incomplete: topcow_ct_whole_012 (no TOF file)" in text
    assert "topcow_ct_whole_013_0000.mha: not a NIfTI file" in text
    assert "patient_5.nii.gz: unknown layout" in text
    assert "zenodo.15692630" in text


def test_empty_folder_and_unset_root(tmp_path, monkeypatch):
    with pytest.raises(TopCowLayoutError, match="no TopCoW images"):
        find_pairs(tmp_path)
    monkeypatch.delenv("XMODALITY_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="topcow23.grand-challenge.org.*never redistribute"):
        data_root()
    monkeypatch.setenv("XMODALITY_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        data_root()
    monkeypatch.setenv("XMODALITY_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_validate_pair_rejects_4d_and_corrupt_files(tmp_path):
    _layout_2023(tmp_path, ids=("003",))
    _nifti(tmp_path / "imagesTr" / "topcow_mr_whole_003_0000.nii.gz", shape=(4, 5, 3, 2))
    (tmp_path / "imagesTr" / "topcow_ct_whole_003_0000.nii.gz").write_bytes(b"not gzip")
    (pair,) = find_pairs(tmp_path)
    with pytest.raises(TopCowLayoutError) as err:
        validate_pair(pair)
    assert "expected a 3D image, got shape (4, 5, 3, 2)" in str(err.value)
    assert "not a readable NIfTI" in str(err.value)


# ---- real-data pipeline on phantom patients written in the TopCoW layout -------------------------
def cli(*args, cwd, env=None):
    """The CLI as a user runs it, with its own cache and $XMODALITY_DATA only if given."""
    base = {k: v for k, v in os.environ.items() if k != "XMODALITY_DATA"}
    env = {**base, "XMODALITY_PROFILE": "smoke", "JAX_PLATFORMS": "cpu",
           "XMODALITY_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "xmodality_lite", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def test_incomplete_and_unreadable_patients_fail_together_before_any_work(tmp_path):
    write_topcow_layout(tmp_path / "topcow", 3, 0, edition="2024", profile="smoke")
    images = tmp_path / "topcow" / "imagesTr"
    (images / "topcow_mr_002_0000.nii.gz").unlink()
    (images / "topcow_ct_003_0000.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(TopCowLayoutError) as err:
        find_pairs(tmp_path / "topcow", check_files=True)
    text = str(err.value)
    assert "2 patients incomplete: topcow_ct_002 (no TOF file), topcow_ct_003 (CTA unreadable:" in text
    assert "topcow_mr_001" not in text and "zenodo" not in text  # the folder itself is fine
    run = cli("preprocess", "--data", "topcow", cwd=tmp_path)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "2 patients incomplete: topcow_ct_002 (no TOF file)" in lines[0]
    assert not (tmp_path / "cache" / "topcow-registered").exists()  # nothing registered


def test_evaluating_registers_only_the_test_patients(tmp_path, monkeypatch):
    """topcow_dataset(splits=("test",)), what evaluation asks for, registers the test patients
    alone; the whole dataset registers the rest and gives the same test split."""
    from xmodality_lite.data import topcow
    from xmodality_lite.evaluation import fixed_test_crops

    write_topcow_layout(tmp_path / "topcow", 3, 0, edition="2024", profile="smoke")
    asked = []

    def register(pairs, **options):  # stands in for ANTs: each CTA as its own "registered" TOF
        asked.append(sorted(p.id for p in pairs))
        return {p.id: p.cta for p in pairs}

    monkeypatch.setattr(topcow, "register_pairs", register)
    cache = tmp_path / "cache"
    test = topcow.topcow_dataset(tmp_path / "topcow", "smoke", cache_dir=cache, progress=False,
                                 splits=("test",))["test"]
    assert asked == [sorted(set(test.subject))] and len(asked[0]) == 1  # 1 of 3 (smoke: 1/1/1)
    full = topcow.topcow_dataset(tmp_path / "topcow", "smoke", cache_dir=cache, progress=False)
    assert asked[1] == ["001", "002", "003"]
    np.testing.assert_array_equal(full["test"].cta, test.cta)
    monkeypatch.setenv("XMODALITY_CACHE", str(cache))  # evaluation's default: the cached whole
    tof, _ = fixed_test_crops("smoke", n=2, data_dir=tmp_path / "topcow")
    size = get_profile("smoke").image_size
    assert tof.shape == (2, size, size, 1) and len(asked) == 2  # nothing registered again


@pytest.mark.slow
def test_registration_error_against_the_known_misalignment(tmp_path):
    """Every unregistered pair is registered with ANTs (paper §3.1) and the stored transforms
    bring the phantom's CoW landmarks closer and its vessels into overlap. The grid is half the
    cpu profile's: at smoke's 4 mm voxels the CoW spans a few voxels (lesson 2)."""
    from xmodality_lite.data.phantom import make_pair
    from xmodality_lite.registration import registration_error

    smoke = get_profile("smoke")
    grids = dict(ct_shape=(64, 64, 48), ct_spacing=(3.2, 3.2, 3.6), mr_shape=(60, 76, 32),
                 mr_spacing=(2.4, 2.4, 3.2))
    profile = smoke.replace(data=dataclasses.replace(smoke.data, **grids))
    write_topcow_layout(tmp_path, 2, 0, edition="2023", profile=profile)
    pairs = find_pairs(tmp_path, check_files=True)
    warped = register_pairs(pairs, cache_dir=tmp_path / "cache", progress=False)
    for seed, pair in enumerate(pairs):
        truth = make_pair(seed, profile)
        names = sorted(truth.landmarks)
        reg = load_registration(pair, cache_dir=tmp_path / "cache")
        assert nib.load(warped[pair.id]).shape == nib.load(pair.cta).shape
        err = registration_error(reg, cta_landmarks=np.array([truth.landmarks[n] for n in names]),
                                 tof_landmarks=np.array([truth.tof_landmarks[n] for n in names]),
                                 cta_labels=nib.load(pair.cta_label),
                                 tof_labels=nib.load(pair.tof_label))
        assert err.landmark_mm_before > 5.0  # the phantom's misalignment (≤ 6°, ≤ 8 mm)
        assert err.landmark_mm_after < 0.5 * err.landmark_mm_before, (pair.id, err)
        assert err.dice_after > err.dice_before, (pair.id, err)


@pytest.mark.slow
def test_topcow_folder_preprocess_train_translate_evaluate(tmp_path):
    """``--data DIR`` (or $XMODALITY_DATA) runs the whole pipeline on a TopCoW-layout folder."""
    write_topcow_layout(tmp_path / "topcow", 3, 0, edition="2024", profile="smoke")
    run = cli("preprocess", "--data", "topcow", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "registering TOF → CTA" in run.stderr and "slicing" in run.stderr  # progress bars
    split = {line.split(":")[0]: line for line in run.stdout.splitlines()}
    assert sorted(split) == ["test", "train", "val"]
    named = [p for line in split.values() for p in line.split("(")[1].rstrip(")").split(", ")]
    assert sorted(named) == ["001", "002", "003"]  # each patient in exactly one split
    cache = tmp_path / "cache"
    records = sorted((cache / "topcow-registered").glob("*/registration.json"))
    assert len(records) == 3 and all("fwd" in json.loads(r.read_text()) for r in records)
    (dataset,) = cache.glob("topcow-*-whole-smoke")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert sorted(manifest["sources"]) == ["001", "002", "003"]

    again = cli("preprocess", "--data", "topcow", cwd=tmp_path)  # cached: nothing registered
    assert again.returncode == 0 and "registering" not in again.stderr and again.stdout == run.stdout
    # DataConfig.slice_size resamples the kept slices of real data too (registrations reused)
    from xmodality_lite.data.topcow import topcow_dataset

    smoke = get_profile("smoke")
    resized = smoke.replace(data=dataclasses.replace(smoke.data, slice_size=40))
    splits = topcow_dataset(tmp_path / "topcow", resized, cache_dir=cache, progress=False)
    assert all(s.tof.shape[1:] == (40, 40) and s.cta.shape[1:] == (40, 40) for s in splits.values())
    assert len(records) == len(list((cache / "topcow-registered").glob("*/registration.json")))

    run = cli("train", "unet", "--data", "topcow", "--steps", "2", "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    ckpt = tmp_path / "run/checkpoints/step_0000002.safetensors"
    assert ckpt.is_file()
    assert not list(cache.glob("phantom-*")), "trained on the phantom instead of the TopCoW cache"

    tof = tmp_path / "topcow/imagesTr/topcow_mr_001_0000.nii.gz"
    run = cli("translate", tof, "cta.nii.gz", "--checkpoint", ckpt, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert nib.load(tmp_path / "cta.nii.gz").shape == nib.load(tof).shape

    env = {"XMODALITY_DATA": str(tmp_path / "topcow")}  # the variable instead of --data
    run = cli("evaluate", ckpt, "--out", "eval", "--n-slices", "4", "--extractor", "standin",
              cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "eval/results.csv").read_text().splitlines()[1].startswith("unet,N/A")
    assert not (tmp_path / "eval/volumes.csv").exists()  # volume tables need phantom labels
    assert not list(cache.glob("phantom-*"))


def test_register_pairs_runs_workers_at_once_and_stops_at_a_failure(tmp_path, monkeypatch):
    """Deterministic registrations are single-threaded processes: ``workers`` of them run at
    once (two stand-ins meet at a barrier, which one at a time would never pass), each patient
    gets its own record, and a failure is raised with the finished patients kept for a resume."""
    import threading
    from types import SimpleNamespace

    from xmodality_lite import registration
    from xmodality_lite.data.topcow import RECORD, registration_folder

    write_topcow_layout(tmp_path / "topcow", 3, 0, edition="2024", profile="smoke")
    pairs = find_pairs(tmp_path / "topcow")
    meet, fail = threading.Barrier(2, timeout=30), {"003"}

    patient = {str(p.cta): p.id for p in pairs}

    def stand_in(tof, cta, *, type_of_transform, seed, out_dir):
        pid = patient[cta.get_filename()]
        if pid in ("001", "002"):
            meet.wait()  # the first two patients are registered side by side
        if pid in fail:
            raise RuntimeError("ANTs registration failed: stand-in")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(warped=cta, fwd_transforms=[Path(out_dir) / "fwd.mat"],
                               inv_transforms=[Path(out_dir) / "inv.mat"], seconds=0.0)

    monkeypatch.setattr(registration, "register_tof_to_cta", stand_in)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="stand-in"):
        register_pairs(pairs, cache_dir=cache, progress=False, workers=2)
    recorded = {p.id for p in pairs if (registration_folder(p, cache_dir=cache) / RECORD).is_file()}
    assert recorded == {"001", "002"}
    fail.clear()
    warped = register_pairs(pairs, cache_dir=cache, progress=False, workers=2)  # resumes: 003
    assert sorted(warped) == ["001", "002", "003"] and all(p.is_file() for p in warped.values())
    with pytest.raises(ValueError, match="workers: expected a positive number"):
        register_pairs(pairs, cache_dir=cache, workers=0)
