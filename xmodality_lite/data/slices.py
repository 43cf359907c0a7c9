"""Slice-level preprocessing: HU window, per-slice min-max, axial slicing, overlap filter, crops.

Paper §3.1: CTA windowed to [−50, 350] HU, both modalities min-max scaled to [−1, 1], slices with
low TOF/CTA overlap or fewer than 200 foreground pixels dropped, random square training crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from xmodality_lite.config import HU_WINDOW
from xmodality_lite.vessels import dice


def window_hu(hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Clip HU to ``window`` and map it linearly onto [−1, 1] (paper §3.1)."""
    lo, hi = _check_window(window)
    return (2.0 * (np.clip(hu, lo, hi) - lo) / (hi - lo) - 1.0).astype(np.float32)


def unwindow_hu(y: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Inverse of :func:`window_hu` inside the window: (y + 1)·200 − 50 HU for the default."""
    lo, hi = _check_window(window)
    return ((np.asarray(y, np.float32) + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)


def _check_window(window) -> tuple[float, float]:
    lo, hi = map(float, window)
    if not hi > lo:
        raise ValueError(f"window: expected (low, high) with high > low, got {window}")
    return lo, hi


def minmax_scale(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Min-max scale to [−1, 1] over ``axis`` (``(-2, -1)`` = per 2-D slice); constant → 0.

    The TOF normalisation the reference effectively uses is per-slice min-max: its per-volume
    z-score is a positive affine map, which the per-slice min-max cancels (the reference's
    ``prepare.py`` z-scores each volume and its ``SliceDS`` min-maxes each slice).
    """
    x = np.asarray(x, np.float32)
    lo, hi = x.min(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)
    span = hi - lo
    return np.where(span > 0, 2.0 * (x - lo) / np.where(span > 0, span, 1.0) - 1.0, 0.0).astype(np.float32)


def slice_volume(vol: np.ndarray, axis: int = 2) -> np.ndarray:
    """Stack of 2-D slices [K, H, W] along ``axis`` (the last array axis, axial, as the reference)."""
    vol = np.asarray(vol)
    if vol.ndim != 3:
        raise ValueError(f"vol: expected a 3-D volume, got shape {vol.shape}")
    return np.moveaxis(vol, axis, 0)


@dataclass(frozen=True)
class SliceDecision:
    """Why a slice is kept or dropped: foreground pixel counts and their Dice overlap."""

    keep: bool
    reason: str  # "kept" | "tof foreground < N px" | "cta foreground < N px" | "dice < d"
    tof_px: int
    cta_px: int
    dice: float


def slice_filter(tof_slice: np.ndarray, cta_slice: np.ndarray, *, tof_threshold: float = 0.0,
                 min_pixels: int = 200, min_dice: float = 0.3) -> SliceDecision:
    """Keep a slice pair only if both foregrounds have ≥ ``min_pixels`` and Dice ≥ ``min_dice``.

    Foregrounds as in the reference's ``prepare.py``: TOF > ``tof_threshold`` — the reference
    z-scores the volume and uses ``> 0``, i.e. above the *volume* mean, so pass that mean here
    for a raw TOF — and CTA > 0 HU. The reference's "empty slice" check is implied by the
    pixel minimum.
    """
    tof_slice, cta_slice = np.asarray(tof_slice), np.asarray(cta_slice)
    if tof_slice.shape != cta_slice.shape or tof_slice.ndim != 2:
        raise ValueError(f"tof_slice, cta_slice: expected two 2-D slices of one shape, "
                         f"got {tof_slice.shape} and {cta_slice.shape}")
    src, tgt = tof_slice > tof_threshold, cta_slice > 0
    n_src, n_tgt = int(src.sum()), int(tgt.sum())
    # Dice of the two foregrounds; two empty ones overlap nowhere here (0, not vessels.dice's 1):
    # an empty pair is never a training slice, even with min_pixels=0
    overlap = dice(src, tgt) if n_src + n_tgt else 0.0
    if n_src < min_pixels:
        reason = f"tof foreground < {min_pixels} px"
    elif n_tgt < min_pixels:
        reason = f"cta foreground < {min_pixels} px"
    elif overlap < min_dice:
        reason = f"dice < {min_dice}"
    else:
        reason = "kept"
    return SliceDecision(reason == "kept", reason, n_src, n_tgt, float(overlap))


def random_crop(rng: np.random.Generator, tof: np.ndarray, cta: np.ndarray, size: int,
                *, pad_value: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """The same random ``size``² crop of two [H, W] slices; pads bottom/right first if smaller.

    ``pad_value`` −1 is the reference's zero padding of [0, 1] images, mapped to [−1, 1]. The
    offset is uniform over all valid positions (the reference's exclusive upper bound never
    draws the last one).
    """
    tof, cta = np.asarray(tof), np.asarray(cta)
    if tof.shape != cta.shape or tof.ndim != 2:
        raise ValueError(f"tof, cta: expected two 2-D slices of one shape, got {tof.shape} and {cta.shape}")
    if size < 1:
        raise ValueError(f"size: expected a positive crop size, got {size}")
    h, w = tof.shape
    pad = ((0, max(size - h, 0)), (0, max(size - w, 0)))
    tof, cta = (np.pad(x, pad, constant_values=pad_value) for x in (tof, cta))
    i = rng.integers(0, tof.shape[0] - size + 1)
    j = rng.integers(0, tof.shape[1] - size + 1)
    return tof[i:i + size, j:j + size], cta[i:i + size, j:j + size]


def resample_slices(slices: np.ndarray, shape: tuple[int, int], *, progress: bool = False,
                    desc: str = "resample") -> np.ndarray:
    """Each [H, W] slice of ``slices`` [N, H, W] to ``shape`` by prefiltered cubic spline
    interpolation (``scipy.ndimage.zoom``, order 3, as paper §3.6); the output shape is exact."""
    n, h, w = slices.shape
    if (h, w) == tuple(shape):
        return slices.astype(np.float32, copy=True)
    factors = (shape[0] / h, shape[1] / w)
    out = np.empty((n, *shape), np.float32)
    for i in tqdm(range(n), desc=desc, disable=not progress or n < 16):
        out[i] = ndimage.zoom(slices[i], factors, order=3, prefilter=True, mode="nearest")
    return out
