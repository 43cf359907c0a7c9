"""Image-similarity metrics and the Fréchet distance of paper §3.4 (Tables 1 and 3).

Slice metrics (Table 1) are computed on images mapped to [0, 1]; volume metrics (Tables 3, 4)
in Hounsfield units clipped to the CTA window [-50, 350] HU, so their data range is 400.
SSIM everywhere uses an 11-tap Gaussian window (σ = 1.5), k1 = 0.01, k2 = 0.03 and "valid"
filtering (the map is not padded at the borders), as dm-pix and the authors' 3D code do.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from xmodality_lite.config import HU_WINDOW  # the CTA window (paper §3.1); Table 3 clips to it
from xmodality_lite.features import FDFeatures, fd_features

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# --------------------------------------------------------------------------- slices, [0, 1]
def to_unit_range(y: jax.Array) -> jax.Array:
    """Map model outputs from [-1, 1] to [0, 1], clipping what falls outside."""
    return jnp.clip((jnp.asarray(y) + 1.0) / 2.0, 0.0, 1.0)


def _check_pair(a, b, rank: int, name: str) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"{name}: prediction {a.shape} and target {b.shape} differ in shape")
    if a.ndim != rank:
        raise ValueError(f"{name}: expected rank-{rank} arrays, got shape {a.shape}")
    return a, b


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-image mean squared error of NHWC images in [0, 1]. [B, H, W, C] → [B]."""
    pred, target = _check_pair(pred, target, 4, "mse")
    return dm_pix.mse(pred, target)


def mae(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-image mean absolute error of NHWC images in [0, 1]. [B, H, W, C] → [B]."""
    pred, target = _check_pair(pred, target, 4, "mae")
    return jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))


def psnr(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-image PSNR in dB, data range 1: −10 log10 MSE. [B, H, W, C] → [B]."""
    pred, target = _check_pair(pred, target, 4, "psnr")
    return dm_pix.psnr(pred, target)


def ssim(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-image SSIM (Wang et al. 2004) of NHWC images in [0, 1], dm-pix defaults. → [B]."""
    pred, target = _check_pair(pred, target, 4, "ssim")
    if min(pred.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW} px wide, got {pred.shape}")
    return _dm_pix_ssim(pred, target)


_dm_pix_ssim = jax.jit(functools.partial(dm_pix.ssim, max_val=1.0, filter_size=SSIM_WINDOW,
                                         filter_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2))


# --------------------------------------------------------------------------- volumes, HU
def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1D Gaussian SSIM window (centred; same taps as dm-pix and skimage)."""
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable 'valid' filtering of ``x`` along every axis with the 1D ``window``."""
    k = len(window)
    for axis in range(x.ndim):
        n = x.shape[axis] - k + 1
        x = sum(float(w) * jax.lax.slice_in_dim(x, i, i + n, axis=axis) for i, w in enumerate(window))
    return x


def _ssim_map(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
    """SSIM map of two same-shape arrays (any rank), separable Gaussian, valid borders.

    Variances are clamped at ε² and the covariance to ±σ_a σ_b, as the reference code does.
    """
    f = lambda z: _filter_valid(z, gaussian_window())  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    eps = jnp.finfo(jnp.float32).eps ** 2
    var_a = jnp.maximum(f(a * a) - mu_a**2, eps)
    var_b = jnp.maximum(f(b * b) - mu_b**2, eps)
    cov = f(a * b) - mu_a * mu_b
    cov = jnp.sign(cov) * jnp.minimum(jnp.sqrt(var_a * var_b), jnp.abs(cov))
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
            / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))


@jax.jit
def _ssim_nd(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
    """Mean SSIM map of two same-shape arrays (any rank), separable Gaussian, valid borders."""
    return jnp.mean(_ssim_map(a, b, data_range))


def ssim_map(pred: jax.Array, target: jax.Array, *, data_range: float) -> jax.Array:
    """The local SSIM map behind :func:`ssim_3d` / :func:`ssim`, for 2-D or 3-D arrays.

    "Valid" borders: the map is smaller by ``SSIM_WINDOW − 1`` along each axis, and its element
    ``i`` is the window centred on voxel ``i + SSIM_WINDOW // 2`` of the inputs.
    """
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    if pred.shape != target.shape or pred.ndim not in (2, 3):
        raise ValueError(f"ssim_map: expected two same-shape 2-D or 3-D arrays, got "
                         f"{pred.shape} and {target.shape}")
    if min(pred.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim_map: every axis needs ≥ {SSIM_WINDOW} voxels, got {pred.shape}")
    return _ssim_map_jit(pred, target, data_range)


_ssim_map_jit = jax.jit(_ssim_map)


def ssim_3d(pred_hu: jax.Array, target_hu: jax.Array, *, data_range: float = 400.0) -> jax.Array:
    """3D SSIM of two volumes (Table 3): 11-tap Gaussian (σ 1.5) along all three axes, valid."""
    pred_hu, target_hu = _check_pair(pred_hu, target_hu, 3, "ssim_3d")
    if min(pred_hu.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim_3d: every axis needs ≥ {SSIM_WINDOW} voxels, got {pred_hu.shape}")
    return _ssim_nd(pred_hu, target_hu, data_range)


def volume_metrics(pred_hu: jax.Array, target_hu: jax.Array, *,
                   hu_window: tuple[float, float] = HU_WINDOW) -> dict[str, float]:
    """MSE, MAE (HU²/HU), PSNR (dB, data range = window width) and 3D SSIM of one volume (Table 3).

    Both volumes are clipped to ``hu_window`` first; the whole volume counts (no mask).
    """
    lo, hi = hu_window
    if not hi > lo:
        raise ValueError(f"hu_window must be (low, high) with high > low, got {hu_window}")
    pred_hu, target_hu = _check_pair(pred_hu, target_hu, 3, "volume_metrics")
    pred_hu, target_hu = jnp.clip(pred_hu, lo, hi), jnp.clip(target_hu, lo, hi)
    err = pred_hu - target_hu
    mse_hu = float(jnp.mean(err**2))
    data_range = hi - lo
    return {
        "mse": mse_hu,
        "mae": float(jnp.mean(jnp.abs(err))),
        "psnr": 10.0 * math.log10(data_range**2 / mse_hu) if mse_hu > 0 else math.inf,
        "ssim": float(ssim_3d(pred_hu, target_hu, data_range=data_range)),
    }


def masked_metrics(pred_hu: np.ndarray, target_hu: np.ndarray, mask: np.ndarray, *,
                   hu_window: tuple[float, float] = HU_WINDOW) -> dict[str, float]:
    """MSE, MAE, PSNR and SSIM of a 2-D or 3-D image restricted to a boolean ``mask``.

    As :func:`volume_metrics` (both clipped to ``hu_window``, PSNR with the window width as
    data range), but MSE/MAE/PSNR use the voxels in the mask only, and SSIM is the mean of the
    SSIM map over the mask (the windows still see the voxels around it, as SynthRAD's masked
    SSIM does). The map has valid borders, so mask voxels within ``SSIM_WINDOW // 2`` of the
    edge do not count towards SSIM. An empty mask gives NaN for every metric.
    """
    lo, hi = hu_window
    if not hi > lo:
        raise ValueError(f"hu_window must be (low, high) with high > low, got {hu_window}")
    pred = np.clip(np.asarray(pred_hu, np.float32), lo, hi)
    target = np.clip(np.asarray(target_hu, np.float32), lo, hi)
    mask = np.asarray(mask, bool)
    if not pred.shape == target.shape == mask.shape:
        raise ValueError(f"masked_metrics: prediction {pred.shape}, target {target.shape} and "
                         f"mask {mask.shape} must have one shape")
    nan = float("nan")
    if not mask.any():
        return {"mse": nan, "mae": nan, "psnr": nan, "ssim": nan}
    err = (pred[mask] - target[mask]).astype(np.float64)
    mse_hu = float(np.mean(err**2))
    r = SSIM_WINDOW // 2
    inner = mask[tuple(slice(r, n - r) for n in mask.shape)]
    smap = np.asarray(ssim_map(pred, target, data_range=hi - lo))
    return {
        "mse": mse_hu,
        "mae": float(np.mean(np.abs(err))),
        "psnr": 10.0 * math.log10((hi - lo) ** 2 / mse_hu) if mse_hu > 0 else math.inf,
        "ssim": float(smap[inner].mean()) if inner.any() else nan,
    }


def transverse_slices_for_fd(volume_hu: np.ndarray, *,
                             hu_window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """A CTA volume [X, Y, Z] in HU → its transverse slices [Z, X, Y, 1] in [0, 1] for the FD.

    HU are clipped to ``hu_window`` and scaled to [0, 1] as the authors' volume FD does; the
    ViT extractor then resizes each slice to 256² (as the reference's
    ``external_validation.py`` zooms each slice, cubic spline). Note the paper's text says FDs are
    averaged per patient, whereas the authors' code pools the slices of all subjects.
    """
    lo, hi = hu_window
    volume_hu = np.asarray(volume_hu, np.float32)
    if volume_hu.ndim != 3:
        raise ValueError(f"volume_hu must be [X, Y, Z], got shape {volume_hu.shape}")
    unit = (np.clip(volume_hu, lo, hi) - lo) / (hi - lo)
    return np.moveaxis(unit, -1, 0)[..., None]


# --------------------------------------------------------------------------- Fréchet distance
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ddof=1) covariance of features [N, D] → ([D], [D, D]), float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N ≥ 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians: ‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½ (§3.4).

    If the matrix square root is not finite, 1e-6 is added to both diagonals and it is
    retried; the real part of the trace is used (numerical imaginary parts are dropped).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: expected means ({d},) and covariances ({d}, {d}); got "
                         f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = 1e-6 * np.eye(d)
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


class _RunningMoments:
    """Count, mean and scatter matrix merged batch by batch (Chan et al. 1979), float64."""

    def __init__(self) -> None:
        self.n, self.mean, self.scatter = 0, None, None

    def update(self, x: np.ndarray) -> None:  # [N, D] float64, checked by the caller
        if x.shape[0] == 0:
            return
        m, centred = x.mean(axis=0), x - x.mean(axis=0)
        if self.mean is None:
            self.n, self.mean, self.scatter = x.shape[0], m, centred.T @ centred
            return
        n = self.n + x.shape[0]
        delta = m - self.mean
        self.scatter = (self.scatter + centred.T @ centred
                        + np.outer(delta, delta) * self.n * x.shape[0] / n)
        self.mean = self.mean + delta * x.shape[0] / n
        self.n = n

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors per set for FD, have {self.n}")
        return self.mean, self.scatter / (self.n - 1)


class FDAccumulator:
    """Fréchet distance between real and synthetic features gathered over many batches.

    Unlike the reference evaluator, whose statistics live on the class and so leak from one
    step count of a sweep into the next (``utils.Evaluator.stats`` is a class-level list that
    ``compute_fd.py`` never resets), each instance starts empty and
    ``reset()`` really empties it. The extractor name is recorded so that a stand-in FD is
    never mistaken for the paper's ViT-B/16 FD.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all features seen so far."""
        self._real, self._fake, self.extractor = _RunningMoments(), _RunningMoments(), None

    @property
    def count(self) -> int:
        """Number of synthetic feature vectors seen since the last reset."""
        return self._fake.n

    def update(self, real: FDFeatures | np.ndarray, fake: FDFeatures | np.ndarray) -> None:
        """Add a batch of real and synthetic features ([N, D] arrays or ``FDFeatures``)."""
        names = {f.extractor for f in (real, fake) if isinstance(f, FDFeatures)}
        if self.extractor is not None:
            names.add(self.extractor)
        if len(names) > 1:
            raise ValueError(f"cannot mix feature extractors in one FD: {sorted(names)}")
        real = np.asarray(getattr(real, "features", real), np.float64)
        fake = np.asarray(getattr(fake, "features", fake), np.float64)
        first = real.shape[-1] if real.ndim == 2 else "D"
        dim = self._real.mean.shape[0] if self._real.mean is not None else first
        for name, x in (("real", real), ("fake", fake)):
            if x.ndim != 2 or x.shape[1] != dim:
                raise ValueError(f"{name} features must be [N, {dim}], got shape {x.shape}")
        self.extractor = names.pop() if names else self.extractor
        self._real.update(real)
        self._fake.update(fake)

    def compute(self) -> float:
        """FD of everything seen since the last reset."""
        _warn_if_standin(self.extractor)
        return frechet_distance(*self._real.statistics(), *self._fake.statistics())


class StandinFDWarning(UserWarning):
    """An FD was computed with the stand-in extractor: not comparable with the paper."""


def _warn_if_standin(extractor: str | None) -> None:
    if extractor is not None and extractor != "vit":
        warnings.warn(f"FD computed with the {extractor!r} feature extractor: NOT comparable with "
                      "the paper's ViT-B/16 FD (Tables 1, 3, 4)", StandinFDWarning, stacklevel=3)


# --------------------------------------------------------------------------- Table 1
def evaluate_slices(pred: jax.Array, target: jax.Array, *,
                    extractor: str | None = "auto") -> dict[str, Any]:
    """Table-1 metrics of one batch of NHWC slices in [-1, 1] (batch means; §3.4).

    Both are mapped to [0, 1] with :func:`to_unit_range`. With ``extractor`` set ("vit",
    "standin" or "auto": ViT if its weights are present) the batch FD is added together with
    the extractor's name; ``None`` skips FD. Pooled FD over a test set: use ``FDAccumulator``.
    """
    pred, target = _check_pair(pred, target, 4, "evaluate_slices")
    pred, target = to_unit_range(pred), to_unit_range(target)
    out: dict[str, Any] = {
        "mse": float(jnp.mean(mse(pred, target))),
        "mae": float(jnp.mean(mae(pred, target))),
        "psnr": float(jnp.mean(psnr(pred, target))),
        "ssim": float(jnp.mean(ssim(pred, target))),
    }
    if extractor is not None:
        acc = FDAccumulator()
        acc.update(fd_features(target, extractor=extractor), fd_features(pred, extractor=extractor))
        out["fd"], out["fd_extractor"] = acc.compute(), acc.extractor
    return out


TABLE_COLUMNS = ("Model", "Sampler", "Steps", "MSE", "MAE", "PSNR", "SSIM", "FD", "FD extractor")


def format_table(rows: Sequence[Mapping[str, Any]], *, digits: int = 3) -> tuple[str, str]:
    """A Table-1-style table as (CSV text, Markdown text).

    Each row maps the lower-case column names (``model, sampler, steps, mse, mae, psnr, ssim,
    fd, fd_extractor``) to values; ``steps``, ``fd`` and ``fd_extractor`` may be missing or
    None (the U-Net has no sampler steps). CSV keeps full precision, Markdown ``digits``.
    """
    keys = [c.lower().replace(" ", "_") for c in TABLE_COLUMNS]
    required = {"model", "sampler", "mse", "mae", "psnr", "ssim"}
    body_csv, body_md = [], []
    for i, row in enumerate(rows):
        missing = required - set(row)
        if missing:
            raise ValueError(f"format_table: row {i} lacks {sorted(missing)}; columns are {keys}")
        unknown = set(row) - set(keys)
        if unknown:
            raise ValueError(f"format_table: row {i} has unknown columns {sorted(unknown)}")
        values = [row.get(k) for k in keys]
        body_csv.append(["" if v is None else v for v in values])
        body_md.append(["–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)
                        for v in values])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    writer.writerows(body_csv)
    md = ["| " + " | ".join(TABLE_COLUMNS) + " |",
          "|" + "|".join(":---" if c in ("Model", "Sampler", "FD extractor") else "---:"
                         for c in TABLE_COLUMNS) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in body_md]
    return buf.getvalue(), "\n".join(md) + "\n"
