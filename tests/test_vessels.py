"""Vessel masks, Dice and clDice on synthetic tubes whose answers are counted by hand."""

import numpy as np
import pytest
from skimage.morphology import skeletonize

from xmodality_lite import registration
from xmodality_lite.vessels import cldice, dice, vessel_mask

LENGTH = 22  # tube voxels along its axis


def _tube(ndim, shift=0, along=0, size=40):
    """A 3-voxel-wide straight tube along the last axis, from index 3 + along, ``LENGTH`` long,
    centred on index 8 + shift of each other axis. In 2-D its four end corners are cut off
    (rounded ends), so its skeleton is the centre row without the two end pixels, as in 3-D."""
    mask = np.zeros((16,) * (ndim - 1) + (size,), bool)
    body = tuple(slice(7 + shift, 10 + shift) for _ in range(ndim - 1))
    mask[body + (slice(3 + along, 3 + along + LENGTH),)] = True
    if ndim == 2:
        for row in (7 + shift, 9 + shift):
            mask[row, 3 + along] = mask[row, 2 + along + LENGTH] = False
    return mask


def _centreline(ndim, shift=0, along=0, size=40):
    line = np.zeros((16,) * (ndim - 1) + (size,), bool)
    line[(8 + shift,) * (ndim - 1) + (slice(4 + along, 2 + along + LENGTH),)] = True
    return line


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_tube_skeleton_is_its_centreline(ndim):
    # the premise of the hand counts below: S(tube) = centre line minus one voxel at each end
    assert np.array_equal(skeletonize(_tube(ndim)), _centreline(ndim))


@pytest.mark.parametrize("ndim", [2, 3])
def test_cldice_hand_values(ndim):
    tube = _tube(ndim)
    assert cldice(tube, tube) == 1.0 and dice(tube, tube) == 1.0
    # shifted 1 voxel across (diagonally in 3-D): each centreline still lies inside the other
    # tube → clDice 1, while plain Dice counts the lost rim. 2-D: |T| = 3·22 − 4 = 62, the two
    # overlapping rows hold 20 + 20 voxels → Dice 80/124; 3-D: 2×2 of the 3×3 section → 4/9.
    one = _tube(ndim, shift=1)
    assert cldice(one, tube) == 1.0
    assert dice(one, tube) == pytest.approx(80 / 124 if ndim == 2 else 4 / 9)
    # shifted 2 voxels: the centrelines fall outside the other tube → clDice 0
    assert cldice(_tube(ndim, shift=2), tube) == 0.0
    # shifted 6 voxels along the axis: 15 of the 20 centreline voxels stay inside the other
    # tube, both ways → Tprec = Tsens = 3/4 → clDice 3/4
    assert cldice(_tube(ndim, along=6), tube) == pytest.approx(0.75)


@pytest.mark.parametrize("ndim", [2, 3])
def test_cldice_spurious_vessel_halves_topology_precision(ndim):
    # prediction = the true tube + an equal tube elsewhere: |S(P)| = 2|S(L)| by translation, so
    # Tprec = 1/2, Tsens = 1 → clDice = 2·½·1 / (½ + 1) = 2/3, whatever the skeleton's length
    true = _tube(ndim)
    pred = true | _tube(ndim, shift=5)
    assert cldice(pred, true) == pytest.approx(2 / 3)
    assert cldice(true, pred) == pytest.approx(2 / 3)  # symmetric in its two roles


def test_cldice_disjoint_empty_and_shape():
    a, b = _tube(3), _tube(3, shift=5)
    assert cldice(a, b) == 0.0 and dice(a, b) == 0.0
    empty = np.zeros_like(a)
    assert cldice(empty, empty) == 1.0 and dice(empty, empty) == 1.0  # nothing to find
    assert cldice(a, empty) == 0.0 and cldice(empty, a) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        cldice(a, a[..., :-1])


def test_dice_has_one_home():
    assert registration.dice is dice
    a, b = np.zeros(10, bool), np.zeros(10, bool)
    a[:4], b[2:8] = True, True
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 6))


def test_vessel_mask_threshold_and_region():
    hu = np.array([[40.0, 149.9, 150.0], [420.0, 1600.0, -1000.0]])
    np.testing.assert_array_equal(vessel_mask(hu), [[0, 0, 1], [1, 1, 0]])
    brain = np.array([[1, 1, 1], [1, 0, 1]], bool)  # bone (1600 HU) excluded by the region
    np.testing.assert_array_equal(vessel_mask(hu, within=brain), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="differ"):
        vessel_mask(hu, within=brain[:, :2])
