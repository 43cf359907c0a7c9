"""Phantom pair: determinism, tissue HU (data-facts §2.1), TOF contrast (§2.2), the known
misalignment, grids, and the TopCoW layout writer (§1.2)."""

import hashlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from xmodality_lite.config import get_profile
from xmodality_lite.data.anatomy import LABELS
from xmodality_lite.data.layout import write_topcow_layout
from xmodality_lite.data.phantom import make_pair
from xmodality_lite.io import load_nifti


def voxels(img):
    return np.asarray(img.dataobj)


@pytest.fixture(scope="module")
def smoke():
    return make_pair(3, "smoke")


@pytest.fixture(scope="module")
def cpu():
    return make_pair(5, "cpu")


def test_same_seed_same_bytes_different_seed_differs(smoke):
    again, other = make_pair(3, "smoke"), make_pair(4, "smoke")
    for name in ("cta", "tof", "labels", "tof_labels"):
        a, b = getattr(smoke, name), getattr(again, name)
        np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
        assert a.header.binaryblock == b.header.binaryblock
    np.testing.assert_array_equal(smoke.transform.rigid, again.transform.rigid)
    assert not np.array_equal(voxels(smoke.cta), voxels(other.cta))
    assert not np.array_equal(smoke.transform.rigid, other.transform.rigid)


def test_dtypes_grids_and_affines_as_configured(smoke):
    data = get_profile("smoke").data
    for img, labels, shape, spacing, dtype in ((smoke.cta, smoke.labels, data.ct_shape, data.ct_spacing, np.int16),
                                               (smoke.tof, smoke.tof_labels, data.mr_shape, data.mr_spacing, np.uint16)):
        assert img.shape == shape and voxels(img).dtype == dtype and voxels(labels).dtype == np.uint8
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), spacing)  # column norms
        np.testing.assert_array_equal(img.affine, labels.affine)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")  # TopCoW storage (data-facts §1.4)
        assert int(img.header["sform_code"]) == 1
    rot = smoke.tof.affine[:3, :3] / np.asarray(data.mr_spacing)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)  # oblique but orthonormal
    assert not np.allclose(smoke.tof.affine, smoke.cta.affine)  # different FOVs and spacings


def test_labels_use_topcow_ids(smoke):
    for labels in (smoke.labels, smoke.tof_labels):
        ids = set(np.unique(voxels(labels))) - {0}
        assert ids and ids <= set(LABELS.values()) and not ids & {13, 14}
        assert {1, 4, 6} <= ids  # BA and both ICAs are always there


def test_cta_hounsfield_units_per_tissue(smoke):
    hu, labels = voxels(smoke.cta).astype(float), voxels(smoke.labels)
    assert np.median(hu[labels > 0]) > 250  # contrast-filled arteries, ICA ≈ 460 HU
    inv = np.linalg.inv(smoke.cta.affine)
    brain_centre = np.rint(inv @ [0, -20, 25, 1])[:3].astype(int)  # centrum semiovale, MNI mm
    block = hu[tuple(slice(c - 2, c + 3) for c in brain_centre)]
    assert 20 < np.median(block) < 50
    assert np.median(hu[:4, :4, :4]) < -900  # air in the FOV corner
    vertical = hu[brain_centre[0], brain_centre[1], brain_centre[2]:]  # up through the vault
    assert vertical.max() > 1000 and np.sum(vertical > 700) >= 1


def test_cta_noise_is_12_to_20_hu_and_correlated(smoke):
    clean = voxels(make_pair(3, "smoke", ct_noise_hu=0.0).cta).astype(float)
    noise = voxels(smoke.cta).astype(float) - clean
    head = clean > -500  # inside the head nothing is clipped, so noisy − clean is the noise
    assert 12 <= noise[head].std() <= 20
    lag1 = np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]
    assert 0.2 < lag1 < 0.9  # white noise smoothed by a small Gaussian


def test_vessels_bright_in_both_modalities(smoke):
    tof, tof_labels = voxels(smoke.tof).astype(float), voxels(smoke.tof_labels)
    parenchyma = np.median(tof[(tof_labels == 0) & (tof > 60) & (tof < 140)])
    assert np.median(tof[tof_labels > 0]) > 3 * parenchyma  # real TOF: 5–8× (data-facts §1.4)
    assert 80 < parenchyma < 140
    assert tof.min() >= 0


def test_transform_round_trip_and_landmarks_on_tof_vessels(cpu):
    names = sorted(cpu.landmarks)
    cta_mm = np.array([cpu.landmarks[k] for k in names])
    tof_mm = cpu.transform.map_points(cta_mm)
    np.testing.assert_allclose(tof_mm, [cpu.tof_landmarks[k] for k in names])
    np.testing.assert_allclose(cpu.transform.inverse_map_points(tof_mm), cta_mm, atol=1e-6)
    tof = voxels(cpu.tof).astype(float)
    parenchyma = np.median(tof[(tof > 60) & (tof < 140)])

    def value_at(world):
        ijk = (np.c_[world, np.ones(len(world))] @ np.linalg.inv(cpu.tof.affine).T)[:, :3]
        return ndimage.map_coordinates(tof, ijk.T, order=1)

    ijk = (np.c_[tof_mm, np.ones(len(names))] @ np.linalg.inv(cpu.tof.affine).T)[:, :3]
    in_fov = np.all((ijk >= 0) & (ijk <= np.asarray(tof.shape) - 1), axis=1)  # the slab misses the VB junction
    assert in_fov.sum() >= 7
    assert np.all(value_at(tof_mm[in_fov]) > 2.5 * parenchyma)
    assert np.mean(value_at(cta_mm[in_fov]) > 2.5 * parenchyma) < 0.5  # without the transform: mostly missed
    ct_ijk = np.rint((np.c_[cta_mm, np.ones(len(names))] @ np.linalg.inv(cpu.cta.affine).T)[:, :3]).astype(int)
    near_label = ndimage.maximum_filter(voxels(cpu.labels), size=3) > 0  # junctions: ±1 voxel
    assert np.all(near_label[tuple(ct_ijk.T)])


def test_unknown_override_and_edition_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown override"):
        make_pair(0, "smoke", nosie=3)
    with pytest.raises(ValueError, match="edition"):
        write_topcow_layout(tmp_path, 1, 0, edition="2025", profile="smoke")


@pytest.mark.parametrize("edition, expected", [
    ("2023", ["bin_labelsTr/topcow_ct_whole_001.nii.gz", "bin_labelsTr/topcow_ct_whole_002.nii.gz",
              "bin_labelsTr/topcow_mr_whole_001.nii.gz", "bin_labelsTr/topcow_mr_whole_002.nii.gz",
              "imagesTr/topcow_ct_whole_001_0000.nii.gz", "imagesTr/topcow_ct_whole_002_0000.nii.gz",
              "imagesTr/topcow_mr_whole_001_0000.nii.gz", "imagesTr/topcow_mr_whole_002_0000.nii.gz",
              "mul_labelsTr/topcow_ct_whole_001.nii.gz", "mul_labelsTr/topcow_ct_whole_002.nii.gz",
              "mul_labelsTr/topcow_mr_whole_001.nii.gz", "mul_labelsTr/topcow_mr_whole_002.nii.gz"]),
    ("2024", ["cow_seg_labelsTr/topcow_ct_001.nii.gz", "cow_seg_labelsTr/topcow_ct_002.nii.gz",
              "cow_seg_labelsTr/topcow_mr_001.nii.gz", "cow_seg_labelsTr/topcow_mr_002.nii.gz",
              "imagesTr/topcow_ct_001_0000.nii.gz", "imagesTr/topcow_ct_002_0000.nii.gz",
              "imagesTr/topcow_mr_001_0000.nii.gz", "imagesTr/topcow_mr_002_0000.nii.gz"]),
])
def test_topcow_layout_names_contents_and_sha256(tmp_path, edition, expected, smoke):
    paths = write_topcow_layout(tmp_path / "a", 2, 3, edition=edition, profile="smoke")
    found = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert found == expected and sorted(str(p.relative_to(tmp_path / "a")) for p in paths) == expected
    ct = load_nifti(tmp_path / "a" / "imagesTr" / expected[4].split("/")[1])  # case 001 = seed 3
    np.testing.assert_array_equal(voxels(ct), voxels(smoke.cta))
    for path in paths:
        img = load_nifti(path)
        image_name = path.name.replace(".nii.gz", "").removesuffix("_0000")
        partner = path.parent.parent / "imagesTr" / f"{image_name}_0000.nii.gz"
        np.testing.assert_array_equal(img.affine, load_nifti(partner).affine)  # labels on their image grid
    again = write_topcow_layout(tmp_path / "b", 2, 3, edition=edition, profile="smoke")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert [digest(p) for p in paths] == [digest(p) for p in again]


def test_mni_templates_are_nilearns_loaders_without_importing_nilearn():
    """The phantom's brain: nilearn's bundled 1 mm MNI152 templates read with nibabel equal its
    own loaders bit for bit (grey and white matter, the 0.2-thresholded brain mask), and a fresh
    process that builds them has not imported nilearn."""
    import subprocess
    import sys

    from nilearn import datasets

    from xmodality_lite.data.anatomy import _mni152

    for kind, load in (("gm", datasets.load_mni152_gm_template),
                       ("wm", datasets.load_mni152_wm_template),
                       ("t1", datasets.load_mni152_template)):
        ours, theirs = _mni152(kind), load(resolution=1)
        np.testing.assert_array_equal(ours.get_fdata(dtype=np.float32),
                                      theirs.get_fdata(dtype=np.float32))
        np.testing.assert_array_equal(ours.affine, theirs.affine)
    mask = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal((_mni152("t1").get_fdata(dtype=np.float32) > 0.2), mask == 1)
    code = ("import sys; from xmodality_lite.data.anatomy import mni_templates; t = mni_templates(); "
            "print(t.gm.shape, 'nilearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(197,", "233,", "189)", "False"], out.stdout
