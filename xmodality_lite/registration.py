"""Non-linear registration of the TOF-MRA (moving) onto the CTA grid (fixed) with ANTs (paper §3.1).

Koch et al. co-register TOF to CTA with ANTs and B-spline interpolation; the ``_Warped`` file
names of their pairs (the repository's ``docs/Training.md``) are the output names of
``antsRegistrationSyN.sh`` for the moving image resampled into the fixed one. We run antspyx's
``SyN`` preset (centre-of-mass → affine → SyN, Mattes MI, 32 bins) and resample the TOF once,
with B-spline, through the composed transform.

Coordinates: nibabel affines map voxels to RAS+ millimetres; ITK/ANTs stores origin and direction
in LPS+. :func:`to_ants` / :func:`from_ants` flip the first two world axes and nothing else, so
the array index order (i, j, k) is the same on both sides.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from xmodality_lite.vessels import dice  # one home for Dice; re-exported for old imports

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def _ants():
    import ants  # imported lazily: 1.5–2 s, and only registration needs it

    return ants


# --- nibabel <-> ANTs ----------------------------------------------------------------------------

def to_ants(img: nib.Nifti1Image):
    """A float32 ``ants.ANTsImage`` with the same voxels and the same voxel→world map.

    Raises ``ValueError`` for a sheared affine (ITK images need an orthonormal direction).
    """
    affine = np.asarray(img.affine, dtype=np.float64)
    linear = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing == 0):
        raise ValueError(f"img: affine has a zero-length voxel axis, spacing {spacing}")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise ValueError("img: affine has shear; ANTs needs orthogonal voxel axes")
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"img: expected a 3-D image, got shape {data.shape}")
    return _ants().from_numpy(np.ascontiguousarray(data), origin=list(_RAS_TO_LPS @ affine[:3, 3]),
                              spacing=list(spacing), direction=direction)


def ants_affine(ants_img) -> np.ndarray:
    """The RAS+ voxel→world affine of an ANTs image (inverse of the map in :func:`to_ants`)."""
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ np.asarray(ants_img.direction) @ np.diag(ants_img.spacing)
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(ants_img.origin)
    return affine


def from_ants(ants_img, *, like: nib.Nifti1Image | None = None) -> nib.Nifti1Image:
    """A float32 NIfTI image; with ``like``, its affine and header are kept exactly.

    ANTs stores geometry in single/double precision and may round the affine by ~1e-7 mm;
    ``like`` (the fixed image) restores the exact original, after checking the grids agree.
    """
    data = ants_img.numpy().astype(np.float32)
    affine = ants_affine(ants_img)
    if like is None:
        return nib.Nifti1Image(data, affine)
    if data.shape != like.shape or not np.allclose(affine, like.affine, atol=1e-4):
        raise ValueError(f"like: grid {like.shape} does not match the ANTs image grid {data.shape}")
    out = nib.Nifti1Image(data, like.affine, header=like.header.copy())
    out.set_data_dtype(np.float32)
    out.header.set_slope_inter(1.0, 0.0)
    return out


# --- determinism ---------------------------------------------------------------------------------
# antspyx 0.6.3's ``ants.config.set_ants_deterministic(True, seed)`` sets
# ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 and an ANTs random seed (bit-identical and ~2x slower
# when measured in a fresh process). But ITK reads that variable once, at its first filter in the process, so after
# any earlier ANTs call (even ``to_ants``) the setting is silently ignored — measured here:
# voxel differences of ~600 between two "deterministic" runs. Deterministic registrations
# therefore run in a fresh single-threaded Python process (~2 s extra for importing ants).

def _worker() -> None:
    """Subprocess entry point: ``argv = [fixed, moving, outprefix, json options]``."""
    import json
    import sys

    fixed_path, moving_path, outprefix, options = sys.argv[1:5]
    options = json.loads(options)
    ants = _ants()
    ants.config._random_seed = options.pop("seed")
    cta = nib.load(fixed_path)
    fwd, inv, warped = _register_ants(to_ants(cta), to_ants(nib.load(moving_path)), outprefix, **options)
    nib.save(from_ants(warped, like=cta), outprefix + "Warped.nii.gz")
    print(json.dumps({"fwd": fwd, "inv": inv}))


def _register_ants(fixed, moving, outprefix: str, *, type_of_transform: str, interpolation: str,
                   **ants_kwargs):
    ants = _ants()
    reg = ants.registration(fixed, moving, type_of_transform=type_of_transform, outprefix=outprefix,
                            **ants_kwargs)
    warped = ants.apply_transforms(fixed, moving, transformlist=reg["fwdtransforms"],
                                   interpolator=interpolation)
    return list(reg["fwdtransforms"]), list(reg["invtransforms"]), warped


def _register_subprocess(cta, tof, outprefix: str, *, seed: int, **options):
    import json
    import subprocess
    import sys

    workdir = Path(outprefix).parent
    nib.save(nib.Nifti1Image(np.asarray(cta.dataobj, np.float32), cta.affine), str(workdir / "fixed.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(tof.dataobj, np.float32), tof.affine), str(workdir / "moving.nii.gz"))
    env = {**os.environ, _THREADS_ENV: "1"}
    code = "from xmodality_lite.registration import _worker; _worker()"
    proc = subprocess.run([sys.executable, "-c", code, str(workdir / "fixed.nii.gz"),
                           str(workdir / "moving.nii.gz"), outprefix, json.dumps({"seed": seed, **options})],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ANTs registration failed:\n{proc.stderr[-2000:]}")
    paths = json.loads(proc.stdout.strip().splitlines()[-1])
    warped = np.asarray(nib.load(outprefix + "Warped.nii.gz").dataobj, np.float32)
    return paths["fwd"], paths["inv"], warped


# --- registration --------------------------------------------------------------------------------

_LEVELS = ((8, 4.0), (4, 2.0), (2, 1.0), (1, 0.0))  # (shrink factor, smoothing sigma in voxels)


def pyramid_for(shape: tuple[int, ...], *, min_voxels: int = 10) -> dict:
    """Multi-resolution settings whose coarsest level still has ``min_voxels`` along every axis.

    ANTs' presets shrink by 8 (SyN: 6/4/2/1 for the affine stage), which collapses a small
    volume to a few voxels and makes the metric meaningless (the ``smoke`` phantom registered
    *worse* than not at all). Keep only the levels the image can afford.
    """
    levels = [(f, s) for f, s in _LEVELS if min(shape) // f >= min_voxels] or [(1, 0.0)]
    factors, sigmas = zip(*levels, strict=True)
    n = len(levels)
    # SyN: like ANTs' default (40, 20, 0), no deformable iterations at full resolution
    # unless the image is so small that full resolution is the only affordable level.
    syn = (40, 20, 0) if n >= 3 else (40, 20)[:n]
    return dict(aff_shrink_factors=factors, aff_smoothing_sigmas=sigmas,
                aff_iterations=(200, 100, 50, 25)[:n], reg_iterations=syn)


@dataclass
class RegistrationResult:
    """The TOF on the CTA grid plus the transforms that put it there.

    ``fwd_transforms`` pull moving (TOF) intensities onto the fixed (CTA) grid, and equally map
    fixed-space *points* into moving space; ``inv_transforms`` go the other way. The files live
    in ``workdir``; a temporary ``workdir`` is deleted with this object (or by :meth:`cleanup`).
    """

    warped: nib.Nifti1Image  # TOF resampled onto the CTA grid, CTA affine
    fixed: nib.Nifti1Image
    fwd_transforms: list[Path]
    inv_transforms: list[Path]
    seconds: float
    workdir: Path
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def warp(self, moving: nib.Nifti1Image, *, interpolation: str = "bSpline") -> nib.Nifti1Image:
        """Resample another TOF-grid image onto the CTA grid (``genericLabel`` for label maps)."""
        ants = _ants()
        out = ants.apply_transforms(to_ants(self.fixed), to_ants(moving),
                                    transformlist=[str(p) for p in self.fwd_transforms],
                                    interpolator=interpolation)
        return from_ants(out, like=self.fixed)

    def fixed_to_moving_points(self, points_ras: np.ndarray) -> np.ndarray:
        """Map CTA-space points [N, 3] (RAS mm) to TOF space with the estimated transform."""
        return _transform_points(points_ras, self.fwd_transforms)

    def moving_to_fixed_points(self, points_ras: np.ndarray) -> np.ndarray:
        """Map TOF-space points [N, 3] (RAS mm) to CTA space (inverse transform)."""
        return _transform_points(points_ras, self.inv_transforms, invert_affine=True)


def _transform_points(points_ras: np.ndarray, transforms: list[Path], *, invert_affine: bool = False):
    import pandas as pd

    points = np.asarray(points_ras, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points_ras: expected shape [N, 3], got {points.shape}")
    lps = points @ _RAS_TO_LPS
    which = [invert_affine and str(p).endswith(".mat") for p in transforms]
    out = _ants().apply_transforms_to_points(
        3, pd.DataFrame(lps, columns=["x", "y", "z"]), [str(p) for p in transforms],
        whichtoinvert=which)
    return out[["x", "y", "z"]].to_numpy() @ _RAS_TO_LPS


def register_tof_to_cta(
    tof: nib.Nifti1Image,
    cta: nib.Nifti1Image,
    *,
    type_of_transform: str = "SyN",
    interpolation: str = "bSpline",
    deterministic: bool = True,
    seed: int | None = 42,
    out_dir: str | os.PathLike | None = None,
    **ants_kwargs,
) -> RegistrationResult:
    """Register the TOF (moving) to the CTA (fixed); resample it onto the CTA grid (paper §3.1).

    ``type_of_transform`` is any antspyx preset: ``"SyN"`` (affine then SyN, MI), ``"SyNRA"``
    (rigid + affine + SyN), ``"Affine"``, ``"Rigid"``. ``deterministic`` gives bit-identical
    output for a fixed ``seed`` (one ITK thread in a fresh subprocess, see above: ~2× slower,
    plus ~2 s start-up). The multi-resolution pyramid adapts to the image size
    (:func:`pyramid_for`); keyword arguments override it. Transforms are copied to ``out_dir`` if given, else kept in a
    temporary folder owned by the result. Extra keyword arguments go to ``ants.registration``
    (e.g. ``reg_iterations``).
    """
    for name, img in (("tof", tof), ("cta", cta)):
        if not isinstance(img, nib.spatialimages.SpatialImage) or img.ndim != 3:
            raise ValueError(f"{name}: expected a 3-D nibabel image, got {type(img).__name__}")
    tmp = tempfile.TemporaryDirectory(prefix="xmodality-reg-")
    workdir = Path(tmp.name)
    outprefix = str(workdir / "tof_to_cta_")
    pyramid = pyramid_for(tuple(min(a, b) for a, b in zip(tof.shape, cta.shape, strict=True)))
    if type_of_transform not in ("SyN", "SyNRA", "Affine", "Rigid", "SyNOnly"):
        pyramid = {}  # other presets keep ANTs' own schedule
    options = dict(type_of_transform=type_of_transform, interpolation=interpolation,
                   **{**pyramid, **ants_kwargs})
    start = time.perf_counter()
    if deterministic:
        fwd, inv, warped = _register_subprocess(cta, tof, outprefix, seed=seed, **options)
    else:
        fwd, inv, warped_ants = _register_ants(to_ants(cta), to_ants(tof), outprefix, **options)
        warped = from_ants(warped_ants, like=cta).get_fdata(dtype=np.float32)
    seconds = time.perf_counter() - start
    warped = nib.Nifti1Image(warped, cta.affine, header=cta.header.copy())
    warped.set_data_dtype(np.float32)
    warped.header.set_slope_inter(1.0, 0.0)
    fwd, inv = [Path(p) for p in fwd], [Path(p) for p in inv]
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fwd, inv = ([Path(shutil.copy2(p, out_dir / p.name)) for p in ps] for ps in (fwd, inv))
        tmp.cleanup()
        tmp, workdir = None, out_dir
    return RegistrationResult(warped=warped, fixed=cta, fwd_transforms=fwd,
                              inv_transforms=inv, seconds=seconds, workdir=workdir, _tmp=tmp)


# --- evaluation against a known misalignment -----------------------------------------------------

@dataclass(frozen=True)
class RegistrationError:
    """Landmark error (mm) and vessel Dice on the CTA grid, before and after registration."""

    landmark_mm_before: float
    landmark_mm_after: float
    dice_before: float
    dice_after: float


def registration_error(
    result: RegistrationResult,
    *,
    cta_landmarks: np.ndarray,
    tof_landmarks: np.ndarray,
    cta_labels: nib.Nifti1Image,
    tof_labels: nib.Nifti1Image,
) -> RegistrationError:
    """Score a registration against the ground truth of a phantom.

    ``cta_landmarks`` [N, 3] and ``tof_landmarks`` [N, 3] are the same anatomical points in
    each scanner's RAS mm. *Before*: the identity map (the scanners' world frames taken as
    aligned); *after*: CTA points mapped through the estimated transform. Dice compares vessel
    masks (label > 0) on the CTA grid; the TOF labels are resampled with nearest neighbour
    (before) or warped with ``genericLabel`` (after).
    """
    from nibabel.processing import resample_from_to

    cta_pts, tof_pts = np.asarray(cta_landmarks, float), np.asarray(tof_landmarks, float)
    if cta_pts.shape != tof_pts.shape or cta_pts.ndim != 2 or cta_pts.shape[1] != 3:
        raise ValueError(f"cta_landmarks, tof_landmarks: expected two [N, 3] arrays, "
                         f"got {cta_pts.shape} and {tof_pts.shape}")
    mapped = result.fixed_to_moving_points(cta_pts)
    target = np.asarray(cta_labels.dataobj) > 0
    before = resample_from_to(tof_labels, cta_labels, order=0).get_fdata() > 0
    after = result.warp(tof_labels, interpolation="genericLabel").get_fdata() > 0
    return RegistrationError(
        landmark_mm_before=float(np.linalg.norm(cta_pts - tof_pts, axis=1).mean()),
        landmark_mm_after=float(np.linalg.norm(mapped - tof_pts, axis=1).mean()),
        dice_before=dice(before, target),
        dice_after=dice(after, target),
    )
