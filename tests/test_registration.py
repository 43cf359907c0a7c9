"""TOF → CTA registration: RAS/LPS converter, determinism, and error against a known transform."""

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from xmodality_lite.registration import (
    ants_affine,
    dice,
    from_ants,
    register_tof_to_cta,
    registration_error,
    to_ants,
)


def _oblique_affine(spacing, angles_deg, origin):
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def test_converter_round_trip_keeps_affine_and_voxels():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 6, 5)).astype(np.float32)
    affine = _oblique_affine((0.3, 0.3, 0.6), (3.0, -2.0, 5.0), (-20.0, 31.0, 7.5))
    affine[:, 0] *= -1  # a left-handed (radiological) grid must survive too
    img = nib.Nifti1Image(data, affine)
    a = to_ants(img)
    # ITK/ANTs keeps geometry in LPS: the first two world axes flip sign
    np.testing.assert_allclose(a.origin, [20.0, -31.0, 7.5])
    np.testing.assert_allclose(a.spacing, [0.3, 0.3, 0.6])
    np.testing.assert_allclose(ants_affine(a), affine, atol=1e-6)
    back = from_ants(a, like=img)
    np.testing.assert_array_equal(back.affine, img.affine)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), data)
    with pytest.raises(ValueError, match="like: grid"):
        from_ants(a, like=nib.Nifti1Image(data, np.eye(4)))


def test_converter_rejects_shear():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(ValueError, match="shear"):
        to_ants(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), affine))


def test_dice_closed_form():
    a = np.zeros(10, bool)
    a[:4] = True
    b = np.zeros(10, bool)
    b[2:8] = True
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 6))


# ---- a small vessel tree with a known rigid misalignment -------------------------------------------
# Tubes are analytic in CTA world mm, so the TOF is sampled on its own grid through the true
# transform (TOF world q = R p + t for CTA world p) without any interpolation error.
_SEGMENTS = np.array([[[-20, -5, -12], [20, 5, 12]], [[0, -22, 0], [3, 22, -4]],
                      [[-18, 14, 8], [15, -12, 6]], [[6, 6, -15], [-8, 2, 15]]], float)


def _tubes(points: np.ndarray, radius: float = 2.6) -> np.ndarray:
    inside = np.zeros(len(points), bool)
    for a, b in _SEGMENTS:
        s = np.clip((points - a) @ (b - a) / np.dot(b - a, b - a), 0.0, 1.0)
        inside |= np.linalg.norm(points - (a + s[:, None] * (b - a)), axis=1) < radius
    return inside


def _world(shape, affine):
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


@pytest.fixture(scope="module")
def tube_pair():
    rot = Rotation.from_euler("xyz", [4.0, -3.0, 6.0], degrees=True).as_matrix()
    shift = np.array([3.5, -2.5, 2.0])
    cta_shape, tof_shape = (36, 36, 24), (40, 40, 22)
    cta_aff = _oblique_affine((1.5, 1.5, 1.8), (0, 0, 0), (-26.0, -26.0, -21.0))
    tof_aff = _oblique_affine((1.3, 1.3, 1.9), (2.0, 0.0, -3.0), (-24.0, -28.0, -18.0))
    rng = np.random.default_rng(1)
    cta_lab = _tubes(_world(cta_shape, cta_aff)).reshape(cta_shape)
    tof_lab = _tubes((_world(tof_shape, tof_aff) - shift) @ rot).reshape(tof_shape)  # p = Rᵀ(q − t)
    cta = np.where(cta_lab, 300.0, 40.0) + rng.normal(0, 8, cta_shape)
    tof = np.where(tof_lab, 600.0, 110.0) + rng.normal(0, 10, tof_shape)
    landmarks = np.array([[0, 0, 0], [10, 2.5, 6], [-10, -2.5, -6], [1.5, 11, -2], [-9, 7, 7]], float)
    return dict(
        tof=nib.Nifti1Image(tof.astype(np.float32), tof_aff),
        cta=nib.Nifti1Image(cta.astype(np.float32), cta_aff),
        tof_labels=nib.Nifti1Image(tof_lab.astype(np.uint8), tof_aff),
        cta_labels=nib.Nifti1Image(cta_lab.astype(np.uint8), cta_aff),
        cta_landmarks=landmarks, tof_landmarks=landmarks @ rot.T + shift,
    )


@pytest.fixture(scope="module")
def registered(tube_pair):
    return register_tof_to_cta(tube_pair["tof"], tube_pair["cta"])


def test_registration_reduces_landmark_error_and_raises_dice(tube_pair, registered):
    err = registration_error(registered, **{k: tube_pair[k] for k in
                                            ("cta_landmarks", "tof_landmarks", "cta_labels", "tof_labels")})
    assert registered.warped.shape == tube_pair["cta"].shape
    np.testing.assert_array_equal(registered.warped.affine, tube_pair["cta"].affine)
    assert err.landmark_mm_before > 4.0
    assert err.landmark_mm_after < 0.35 * err.landmark_mm_before
    assert err.dice_before < 0.5 and err.dice_after > 1.5 * err.dice_before


def test_deterministic_is_bit_identical(tube_pair, registered, tmp_path):
    again = register_tof_to_cta(tube_pair["tof"], tube_pair["cta"], out_dir=tmp_path)
    np.testing.assert_array_equal(again.warped.get_fdata(), registered.warped.get_fdata())
    assert all(p.parent == tmp_path and p.exists() for p in again.fwd_transforms + again.inv_transforms)


def test_temporary_transforms_are_owned_by_the_result(tube_pair):
    result = register_tof_to_cta(tube_pair["tof"], tube_pair["cta"], type_of_transform="Rigid",
                                 deterministic=False)
    assert all(p.exists() for p in result.fwd_transforms)
    result.cleanup()
    assert not result.workdir.exists()


def test_bad_input():
    with pytest.raises(ValueError, match="tof: expected a 3-D nibabel image"):
        register_tof_to_cta(np.zeros((4, 4, 4)), nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)))


def test_pyramid_adapts_to_small_volumes():
    from xmodality_lite.registration import pyramid_for

    # The cpu phantom (TOF slab ∩ CT grid) keeps three levels; a 24-voxel smoke slab keeps only the levels where the
    # coarsest image still has >= 10 voxels per axis (ANTs' default 8x shrink would leave 3).
    big, small = pyramid_for((120, 128, 64)), pyramid_for((44, 48, 24))
    assert big["aff_shrink_factors"] == (4, 2, 1) and big["reg_iterations"][-1] == 0
    assert small["aff_shrink_factors"] == (2, 1)
    for p in (big, small):
        n = len(p["aff_shrink_factors"])
        assert len(p["aff_smoothing_sigmas"]) == len(p["aff_iterations"]) == n
        assert min((120, 128, 64) if p is big else (44, 48, 24)) // p["aff_shrink_factors"][0] >= 10
