"""TopCoW pairing: both editions' names (data-facts §1.2), _Warped TOFs, and clear errors."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from xmodality_lite.data.topcow import TopCowLayoutError, data_root, find_pairs, validate_pair


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
    assert "id 012: missing partner TOF-MRA" in text
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
