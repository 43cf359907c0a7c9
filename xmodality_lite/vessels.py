"""Vessel agreement of a synthetic and a real CTA: thresholded arteries, Dice and clDice.

The point of a CTA is its contrast-filled vessels, which fill a tiny share of the voxels and so
barely move whole-volume metrics. Here both CTAs are thresholded the same way and their vessel
masks compared by overlap (Dice) and by centreline overlap (clDice, Shit et al. 2021), which
counts a vessel as found when its centreline is covered, however thick it is drawn.
"""

from __future__ import annotations

import numpy as np

VESSEL_HU = 150.0  # ≥ 150 HU is "good opacification" in CTA (Kim et al., AJNR 2010;31:91-99)
# Brain is ≤ 45 HU with ≈ 15 HU noise (7 SD below), iodinated arteries ≈ 400–460 HU, and the
# threshold stays below the top of the [−50, 350] HU window, where synthetic CTAs saturate.


def vessel_mask(cta_hu: np.ndarray, *, threshold_hu: float = VESSEL_HU,
                within: np.ndarray | None = None) -> np.ndarray:
    """Contrast-filled vessels of a CTA in HU (2-D or 3-D): HU ≥ ``threshold_hu`` in ``within``.

    Bone is as bright, so pass ``within`` (e.g. :func:`xmodality_lite.regions.intracranial_mask`
    of the *real* CTA) to leave it out; the dural sinuses are contrast-filled and count as
    vessels, as on any thresholded CTA.
    """
    mask = np.asarray(cta_hu) >= threshold_hu
    if within is not None:
        within = np.asarray(within, bool)
        if within.shape != mask.shape:
            raise ValueError(f"vessel_mask: within {within.shape} and CTA {mask.shape} differ")
        mask &= within
    return mask


def _pair(a, b, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"{name}: masks {a.shape} and {b.shape} differ in shape")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice overlap 2|A∩B| / (|A| + |B|) of two boolean masks (1.0 if both empty)."""
    a, b = _pair(a, b, "dice")
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The 1-voxel-wide centreline of a 2-D or 3-D mask (``skimage.morphology.skeletonize``)."""
    from skimage.morphology import skeletonize  # imported lazily: only clDice needs it

    return skeletonize(np.asarray(mask, bool))


def cldice(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Centreline Dice (Shit et al. 2021, eq. 1–3) of two 2-D or 3-D masks.

    Tprec = |S(P) ∩ L| / |S(P)|, Tsens = |S(L) ∩ P| / |S(L)|, clDice = 2 Tprec Tsens /
    (Tprec + Tsens), with S the skeleton. Both masks empty: 1.0 (nothing to find, nothing
    found); only one empty: 0.0.
    """
    pred, true = _pair(pred_mask, true_mask, "cldice")
    if not pred.any() and not true.any():
        return 1.0
    if not pred.any() or not true.any():
        return 0.0
    s_pred, s_true = skeleton(pred), skeleton(true)
    s_pred, s_true = (s if s.any() else m for s, m in ((s_pred, pred), (s_true, true)))
    t_prec = np.logical_and(s_pred, true).sum() / s_pred.sum()
    t_sens = np.logical_and(s_true, pred).sum() / s_true.sum()
    return 0.0 if t_prec + t_sens == 0 else float(2 * t_prec * t_sens / (t_prec + t_sens))
