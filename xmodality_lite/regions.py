"""Where a metric is measured: the head, the intracranial space, the Circle-of-Willis region.

Whole-volume metrics (paper Table 3) are dominated by air and bone. SynthRAD reports its metrics
inside a (dilated) body mask instead, and the arteries a CTA is taken for sit in a box of about
45 × 35 × 22 mm around the Circle of Willis (the size of TopCoW's ROI crops, 39–50 × 33–37 ×
19–26 mm, and of the CoW labels' extent measured on TopCoW files). All masks are
computed from the *real* CTA in HU (not from a synthetic one, which is clipped to [−50, 350] HU)
and then applied to both images, so two models are always scored on the same voxels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

HEAD_HU = -300.0  # between air (−1000 HU) and fat (−50 to −100 HU), textbook CT values
BONE_HU = 700.0  # bone spans 700–3000 HU (textbook CT values); iodinated arteries stay below ~500
COW_BOX_MM = (45.0, 35.0, 22.0)  # R–L, A–P, I–S extent of the CoW labels in TopCoW volumes
COW_LANDMARKS = ("R-ICA-terminus", "L-ICA-terminus", "R-P1-P2", "L-P1-P2", "BA-tip", "Acom-mid")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return labels > 0
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def head_mask(cta_hu: np.ndarray, *, threshold_hu: float = HEAD_HU) -> np.ndarray:
    """The head of a CTA [X, Y, Z] (or one slice [X, Y]): HU > threshold, largest component,
    holes filled per axial slice (the sinuses and the mouth are inside the head).

    Filling per slice keeps working where the head leaves the field of view at the top or the
    neck, where a 3-D fill would see the inside as connected to the outside.
    """
    cta_hu = np.asarray(cta_hu)
    if cta_hu.ndim not in (2, 3):
        raise ValueError(f"head_mask: expected [X, Y] or [X, Y, Z], got shape {cta_hu.shape}")
    mask = _largest_component(cta_hu > threshold_hu)
    if mask.ndim == 2:
        return ndimage.binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return mask


def intracranial_mask(cta_hu: np.ndarray, spacing: Sequence[float], *, bone_hu: float = BONE_HU,
                      bone_margin_mm: float = 3.0, scalp_mm: float = 8.0) -> np.ndarray:
    """Voxels of a CTA [X, Y, Z] that are inside the head and away from bone: where vessels are
    sought.

    Kept: deeper than ``scalp_mm`` below the head's surface (skin, fat and muscle are ≈ 6.5 mm)
    and farther than ``bone_margin_mm`` plus one voxel (the partial-volume ramp) from bone
    (HU ≥ ``bone_hu``). The margin also removes diploe and cancellous bone (≈ 300–550 HU,
    as bright as contrast) that lies between the cortical tables, and partial-volume rims.
    """
    cta_hu = np.asarray(cta_hu)
    spacing = np.asarray(spacing, np.float64)
    if cta_hu.ndim != 3 or spacing.shape != (3,):
        raise ValueError(f"intracranial_mask: expected [X, Y, Z] and 3 spacings, got shape "
                         f"{cta_hu.shape} and spacing {tuple(spacing)}")
    head = np.pad(head_mask(cta_hu), 1)  # padded: the edge of the field of view is outside
    depth = ndimage.distance_transform_edt(head, sampling=spacing)[1:-1, 1:-1, 1:-1]
    bone = cta_hu >= bone_hu
    if not bone.any():
        return depth > scalp_mm
    to_bone = ndimage.distance_transform_edt(~bone, sampling=spacing)
    return (depth > scalp_mm) & (to_bone > bone_margin_mm + spacing.max())


def box_mask(shape: Sequence[int], affine: np.ndarray, low_mm: Sequence[float],
             high_mm: Sequence[float]) -> np.ndarray:
    """Voxels of a grid (``shape``, ``affine`` to world mm) whose centres lie in a world box."""
    ijk = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    low, high = np.asarray(low_mm, np.float64)[:, None], np.asarray(high_mm, np.float64)[:, None]
    return np.all((xyz >= low) & (xyz <= high), axis=0).reshape(tuple(shape))


def cow_region(shape: Sequence[int], affine: np.ndarray, landmarks: Mapping[str, np.ndarray], *,
               size_mm: Sequence[float] = COW_BOX_MM, margin_mm: float = 2.0) -> np.ndarray:
    """The Circle-of-Willis box on a grid: ``size_mm`` (TopCoW's ROI size) centred on the CoW
    landmarks (ICA termini, P1–P2 junctions, basilar tip, Acom), grown where the landmarks
    need more room (each kept ``margin_mm`` inside). Landmarks are world mm, e.g. a phantom's.
    """
    points = np.array([landmarks[k] for k in COW_LANDMARKS if k in landmarks], np.float64)
    if points.size == 0:
        raise ValueError(f"cow_region: none of the landmarks {list(COW_LANDMARKS)} were given; "
                         f"got {sorted(landmarks)}")
    low, high = points.min(axis=0), points.max(axis=0)
    centre = (low + high) / 2
    half = np.maximum(np.asarray(size_mm, np.float64) / 2, (high - low) / 2 + margin_mm)
    return box_mask(shape, affine, centre - half, centre + half)
