"""Head, intracranial and Circle-of-Willis masks on hand-built heads and on the phantom."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from xmodality_lite.regions import (
    COW_BOX_MM,
    box_mask,
    cow_region,
    head_mask,
    intracranial_mask,
)


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True)) \
        <= radius**2


def _shell_head(shape=(48, 48, 40), spacing=(2.0, 2.0, 2.0)):
    """Air, a 6 mm scalp (40 HU), a 6 mm skull (1500 HU), brain (35 HU) with an air pocket."""
    c = [n / 2 for n in shape]
    hu = np.full(shape, -1000.0)
    hu[_ball(shape, c, 40, spacing)] = 40.0
    hu[_ball(shape, c, 34, spacing)] = 1500.0
    hu[_ball(shape, c, 28, spacing)] = 35.0
    hu[_ball(shape, [c[0] + 5, c[1], c[2]], 4, spacing)] = -1000.0  # a sinus: inside the head
    return hu, c


def test_head_mask_is_the_filled_head():
    hu, c = _shell_head()
    mask = head_mask(hu)
    np.testing.assert_array_equal(mask, _ball(hu.shape, c, 40, (2.0, 2.0, 2.0)))
    hu[0, 0, :3] = 40.0  # a speck of table or noise outside the head is not the head
    assert not head_mask(hu)[0, 0, 0]
    np.testing.assert_array_equal(head_mask(hu[:, :, 20]), mask[:, :, 20])  # one slice
    with pytest.raises(ValueError, match="expected"):
        head_mask(np.zeros(5))


def test_intracranial_mask_leaves_out_scalp_and_bone():
    spacing = (2.0, 2.0, 2.0)
    hu, c = _shell_head(spacing=spacing)
    mask = intracranial_mask(hu, spacing)
    # independent reference: nearest-neighbour distances (k-d tree) to bone voxels and to
    # voxels outside the head (the field of view's rim counts as outside)
    pts = np.argwhere(np.ones(hu.shape, bool)) * spacing
    outside = np.argwhere(np.pad(~head_mask(hu), 1, constant_values=True)) - 1
    depth = cKDTree(outside * spacing).query(pts)[0].reshape(hu.shape)
    to_bone = cKDTree(np.argwhere(hu >= 700) * spacing).query(pts)[0].reshape(hu.shape)
    np.testing.assert_array_equal(mask, (depth > 8.0) & (to_bone > 3.0 + 2.0))
    # so: no scalp (40 HU) or skull, and most of the brain (the air pocket in it is inside)
    assert not (mask & ((hu == 40.0) | (hu >= 700))).any()
    assert mask.sum() > 0.5 * (hu == 35.0).sum()


def test_box_mask_in_world_mm_with_an_flipped_axis():
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [20.0, -10.0, 0.0]  # x = 20 − 2i, y = −10 + 2j, z = 3k
    mask = box_mask((21, 11, 5), affine, (0.0, -10.0, 3.0), (10.0, 0.0, 9.0))
    i, j, k = np.nonzero(mask)
    assert (i.min(), i.max(), j.min(), j.max(), k.min(), k.max()) == (5, 10, 0, 5, 1, 3)
    assert mask.sum() == 6 * 6 * 3


def test_cow_region_is_the_topcow_box_around_the_phantom_cow():
    from xmodality_lite.data.phantom import make_pair

    pair = make_pair(1000, "smoke")
    mask = cow_region(pair.cta.shape, pair.cta.affine, pair.landmarks)
    spacing = np.abs(np.diag(pair.cta.affine)[:3])
    extent = (np.ptp(np.nonzero(mask), axis=1) + 1) * spacing
    # whole voxels inside a 45 × 35 × 22 mm box: within one voxel of its size
    assert np.all(np.abs(extent - COW_BOX_MM) <= spacing)
    labels = np.asarray(pair.labels.dataobj)
    basilar_tip_to_icas = np.isin(labels, [1, 4, 6])  # BA, ICAs: TopCoW ids (data-facts §1.3)
    assert (mask & basilar_tip_to_icas).any()
    with pytest.raises(ValueError, match="none of the landmarks"):
        cow_region(pair.cta.shape, pair.cta.affine, {"nose": np.zeros(3)})
