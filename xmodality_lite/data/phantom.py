"""A paired TOF-MRA / CTA head phantom with a known CTA → TOF misalignment (paper §3.1).

One subject's anatomy (``anatomy.py``) lives in CTA world space (RAS mm). Each modality is
rendered on its own grid, as TopCoW's are (measured on TopCoW files: MR finer in-plane and
oblique, CT coarser; both stored with L,P,S axis codes):

* CTA voxel ``v``:  ``x = A_ct v``, value = anatomy(``x``), in HU (int16), plus correlated noise.
* TOF voxel ``v``:  ``y = A_tof v``, value = anatomy(``T⁻¹(y)``), a T1-weighted inflow contrast
  with a multiplicative bias field and Rician noise (uint16).

``T`` (:class:`Misalignment`) maps **CTA world → TOF world**: ``T(x) = R (x + u(x))`` with ``R``
a rigid 4×4 matrix and ``u`` a smooth displacement (mm). So ``TOF = anatomy ∘ T⁻¹`` and a CTA
point ``x`` appears in the TOF at world position ``T(x)``, the direction in which ANTs'
forward transforms of a TOF-moving / CTA-fixed registration map points (the direction of
:mod:`xmodality_lite.registration`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from xmodality_lite.config import get_profile
from xmodality_lite.data.anatomy import Vessel, circle_of_willis, mni_templates, sample_variant

# --- tissue appearance (textbook CT numbers; TOF inflow contrast, TopCoW intensities) ---------
# Layers outward from the inner skull surface: (name, thickness mm, CTA HU, TOF a.u.).
_SHELLS = (("inner table", 1.6, 1600.0, 8.0), ("diploe", 3.0, 550.0, 140.0),
           ("outer table", 1.8, 1700.0, 8.0), ("muscle", 2.0, 45.0, 75.0),
           ("fat", 2.5, -90.0, 180.0), ("skin", 2.0, 50.0, 90.0))
_BRAIN = {"gm": (40.0, 115.0), "wm": (27.0, 100.0), "csf": (10.0, 35.0)}  # (HU, TOF)
_AIR = (-1000.0, 0.0)


@dataclass(frozen=True)
class Misalignment:
    """CTA world → TOF world: ``T(x) = rigid · (x + u(x))``, ``u(x) = Σ_k a_k sin(w_k·x + φ_k)``."""

    rigid: np.ndarray  # [4, 4] proper rotation + translation, mm
    wave_vectors: np.ndarray  # [K, 3] rad/mm
    amplitudes: np.ndarray  # [K, 3] mm
    phases: np.ndarray  # [K]

    def displacement(self, xyz: np.ndarray) -> np.ndarray:
        """The non-linear part ``u(x)`` in mm, at CTA world points ``xyz`` [..., 3]."""
        return np.sin(xyz @ self.wave_vectors.T + self.phases) @ self.amplitudes

    def map_points(self, xyz: np.ndarray) -> np.ndarray:
        """CTA world mm [..., 3] → TOF world mm [..., 3]."""
        xyz = np.asarray(xyz, np.float64)
        return (xyz + self.displacement(xyz)) @ self.rigid[:3, :3].T + self.rigid[:3, 3]

    def inverse_map_points(self, xyz: np.ndarray, iterations: int = 30) -> np.ndarray:
        """TOF world mm → CTA world mm: undo the rigid part, then solve ``x + u(x) = q``.

        The fixed-point iteration ``x ← q − u(x)`` contracts because ``|∇u| < 1``.
        """
        q = (np.asarray(xyz, np.float64) - self.rigid[:3, 3]) @ self.rigid[:3, :3]
        x = q.copy()
        for _ in range(iterations):
            x = q - self.displacement(x)
        return x

    def displacement_field(self, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """``T(x) − x`` (mm) at the voxel centres of a grid, e.g. the CTA's: [X, Y, Z, 3]."""
        xyz = _grid_points(shape, affine, np.s_[:])
        return (self.map_points(xyz) - xyz).reshape(*shape, 3).astype(np.float32)


@dataclass(frozen=True, eq=False)
class PhantomPair:
    """One phantom patient: images, vessel labels, the known misalignment and landmarks."""

    seed: int
    profile: str
    tof: nib.Nifti1Image  # uint16, TOF grid
    cta: nib.Nifti1Image  # int16 HU, CTA grid
    labels: nib.Nifti1Image  # uint8 TopCoW ids (anatomy.LABELS), CTA grid
    tof_labels: nib.Nifti1Image  # uint8, TOF grid
    transform: Misalignment  # CTA world → TOF world
    landmarks: dict[str, np.ndarray]  # CoW bifurcations, CTA world mm [3]
    tof_landmarks: dict[str, np.ndarray]  # the same points in TOF world mm
    variant: dict[str, dict[str, int]]  # TopCoW Task-3 edges, 1 = present
    settings: PhantomSettings = field(repr=False, default=None)


@dataclass(frozen=True)
class PhantomSettings:
    """Grids (from the profile's DataConfig) and appearance knobs of one phantom pair."""

    ct_shape: tuple[int, int, int]
    ct_spacing: tuple[float, float, float]
    mr_shape: tuple[int, int, int]
    mr_spacing: tuple[float, float, float]
    ct_noise_hu: float | None = None  # None: seeded in 13–17 HU (≈ 12 HU on TopCoW CTA)
    tof_noise: float = 12.0  # Rician σ; parenchyma ≈ 108 in real TOF (TopCoW MR 066)
    max_rotation_deg: float = 6.0
    max_translation_mm: float = 8.0
    warp_mm: float = 1.0  # SD of each sine amplitude of u
    variant: dict | None = None  # force a CoW variant (see anatomy.sample_variant)


def _grid_points(shape, affine, sl) -> np.ndarray:
    """World mm of the voxel centres of ``shape``[sl] (a z-slab), as [N, 3] float64."""
    i, j, k = (np.arange(n, dtype=np.float64)[s] for n, s in zip(shape, (np.s_[:], np.s_[:], sl), strict=True))
    a = affine[:3, :3]
    xyz = (affine[:3, 3] + i[:, None, None, None] * a[:, 0] + j[None, :, None, None] * a[:, 1]
           + k[None, None, :, None] * a[:, 2])
    return xyz.reshape(-1, 3)


def _grid_affine(shape, spacing, centre, rotation=np.eye(3)) -> np.ndarray:
    """L,P,S-stored affine (like TopCoW's files) whose centre voxel sits at ``centre``."""
    linear = rotation @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre) - linear @ ((np.asarray(shape) - 1) / 2)
    return affine


def _rotation(angles_rad) -> np.ndarray:
    rx, ry, rz = angles_rad
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def _sample_misalignment(rng, s: PhantomSettings, centre) -> Misalignment:
    rot = _rotation(np.deg2rad(rng.uniform(-s.max_rotation_deg, s.max_rotation_deg, 3)))
    rigid = np.eye(4)
    rigid[:3, :3] = rot
    rigid[:3, 3] = centre - rot @ centre + rng.uniform(-s.max_translation_mm, s.max_translation_mm, 3)
    k = 4  # wavelengths 80–160 mm keep |∇u| ≈ Σ|a||w| well below 1 (invertible)
    directions = rng.normal(size=(k, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = directions * (2 * np.pi / rng.uniform(80.0, 160.0, (k, 1)))
    return Misalignment(rigid, waves, rng.normal(0.0, s.warp_mm, (k, 3)), rng.uniform(0, 2 * np.pi, k))


def _shell_profile(column: int, thickness_scale: float):
    """Knots of a piecewise-linear value(d) outside the inner skull surface (0.4 mm ramps)."""
    knots, values, d = [], [], 0.0
    for shell in _SHELLS:
        knots += [d + 0.2, d + shell[1] * thickness_scale - 0.2]
        values += [shell[column], shell[column]]
        d += shell[1] * thickness_scale
    return np.array(knots + [d + 0.2]), np.array(values + [_AIR[column - 2]])


@functools.lru_cache(maxsize=2)
def _brain_value(column: int) -> np.ndarray:
    """GM/WM/CSF mixture on the 1 mm template grid (column 2: CTA HU, 3: TOF), cached."""
    tpl = mni_templates()
    gm, wm = np.clip(tpl.gm, 0, 1), np.clip(tpl.wm, 0, 1)
    i = column - 2
    csf = np.clip(1.0 - gm - wm, 0, 1)
    return (gm * _BRAIN["gm"][i] + wm * _BRAIN["wm"][i] + csf * _BRAIN["csf"][i]).astype(np.float32)


def _appearance(points: np.ndarray, scale: np.ndarray, column: int, thickness: float) -> np.ndarray:
    """Noise-free tissue value at anatomy points (column 2: CTA HU, 3: TOF) before vessels."""
    tpl = mni_templates()
    q = (points / scale).T

    def sample(volume, affine):  # mode="nearest" continues the brainstem below z = −72 mm
        ijk = (q - affine[:3, 3, None]) / np.diag(affine)[:3, None]
        return ndimage.map_coordinates(volume, ijk, order=1, mode="nearest")

    brain, d = sample(_brain_value(column), tpl.affine), sample(tpl.skull_distance, tpl.skull_affine)
    knots, values = _shell_profile(column, thickness)
    inside = np.clip(0.5 - d / 0.4, 0, 1)
    return inside * brain + (1 - inside) * np.interp(d, knots, values)


def _rasterise_vessels(vessels: list[Vessel], index_of, shape, spacing):
    """Signed distance (mm, < 0 inside) to the nearest tube and the winning centreline sample.

    Every sample stamps the voxels of a small box around it; a voxel keeps the sample with the
    smallest ``|x − c| − r``. Distances use the local grid spacing, exact for rigid grids and
    first-order accurate through the smooth warp (|∇u| ≪ 1).
    """
    spacing = np.asarray(spacing, np.float64)
    stride = max(1, int(0.4 * spacing.min() / 0.25))  # samples every ≤ 0.4 voxel
    pts = np.concatenate([v.points[::stride] for v in vessels]).astype(np.float64)
    rad = np.concatenate([v.radius[::stride] for v in vessels]).astype(np.float64)
    idx = index_of(pts)  # [S, 3] fractional voxel indices
    sdf = np.full(int(np.prod(shape)), np.inf, np.float32)
    winner = np.full(sdf.shape, -1, np.int64)
    reach = spacing.max()  # partial-volume ramp extends one voxel outside the tube
    for lo, hi in ((0.0, 1.0), (1.0, 2.0), (2.0, np.inf)):
        sel = np.flatnonzero((rad >= lo) & (rad < hi))
        if sel.size == 0:
            continue
        half = np.ceil((rad[sel].max() + reach) / spacing).astype(int)
        off = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), -1).reshape(-1, 3)
        off = off[np.linalg.norm(off * spacing, axis=1) < rad[sel].max() + reach + np.linalg.norm(spacing) / 2]
        for chunk in np.array_split(sel, max(1, sel.size * len(off) // 2_000_000)):
            vox = np.rint(idx[chunk])[:, None, :].astype(np.int64) + off[None]  # [C, K, 3]
            dist = np.linalg.norm((vox - idx[chunk][:, None, :]) * spacing, axis=-1) - rad[chunk][:, None]
            ok = (dist < reach) & np.all((vox >= 0) & (vox < np.asarray(shape)), axis=-1)
            flat = np.ravel_multi_index(tuple(vox[ok].T), shape)
            dist, owner = dist[ok], np.broadcast_to(chunk[:, None], ok.shape)[ok]
            order = np.lexsort((dist, flat))
            first = order[np.r_[True, flat[order][1:] != flat[order][:-1]]]
            better = dist[first] < sdf[flat[first]]
            sdf[flat[first][better]] = dist[first][better]
            winner[flat[first][better]] = owner[first][better]
    per_sample = {"label": np.concatenate([np.full(len(v.points[::stride]), v.label, np.uint8) for v in vessels]),
                  "ct": np.concatenate([np.full(len(v.points[::stride]), v.ct_factor) for v in vessels]),
                  "tof": np.concatenate([v.tof_signal[::stride] for v in vessels])}
    return sdf.reshape(shape), winner.reshape(shape), per_sample


def _render(vessels, shape, spacing, affine, to_anatomy, index_of, column, arterial, scale, thickness):
    """Noise-free image (CTA HU or TOF a.u.) and uint8 labels on one grid."""
    image = np.empty(shape, np.float32)
    for z0 in range(0, shape[2], max(1, 2_000_000 // (shape[0] * shape[1]))):
        zs = np.s_[z0:z0 + max(1, 2_000_000 // (shape[0] * shape[1]))]
        pts = to_anatomy(_grid_points(shape, affine, zs))
        image[:, :, zs] = _appearance(pts, scale, column, thickness).reshape(
            shape[0], shape[1], -1)
    sdf, winner, per_sample = _rasterise_vessels(vessels, index_of, shape, spacing)
    hit = winner >= 0
    value = per_sample["ct" if column == 2 else "tof"][winner[hit]] * arterial
    frac = np.clip(0.5 - sdf[hit] / np.cbrt(np.prod(spacing)), 0, 1)  # partial volume
    image[hit] = (1 - frac) * image[hit] + frac * value
    labels = np.zeros(shape, np.uint8)
    inside = hit & (sdf < 0)
    labels[inside] = per_sample["label"][winner[inside]]
    return image, labels


def _nifti(data, affine) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)  # scanner anatomical
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def make_pair(seed: int, profile=None, **overrides) -> PhantomPair:
    """A seeded phantom patient on the profile's grids; same seed → identical bytes.

    ``overrides`` replace fields of :class:`PhantomSettings` (grids, noise, misalignment, variant).
    """
    prof = get_profile(profile)
    known = {f.name for f in dataclasses.fields(PhantomSettings)}
    if unknown := sorted(set(overrides) - known):
        raise ValueError(f"make_pair: unknown override(s) {unknown}; choose from {sorted(known)}")
    d = prof.data
    s = PhantomSettings(ct_shape=d.ct_shape, ct_spacing=d.ct_spacing, mr_shape=d.mr_shape,
                        mr_spacing=d.mr_spacing)
    s = dataclasses.replace(s, **overrides)
    streams = [np.random.default_rng(q) for q in np.random.SeedSequence(seed).spawn(5)]
    anat_rng, move_rng, ct_rng, tof_rng, grid_rng = streams

    # 1. subject: head size, skull thickness, contrast levels, CoW variant and geometry
    scale = anat_rng.uniform(0.94, 1.06, 3)
    thickness = anat_rng.uniform(0.85, 1.2)
    hu_arterial = anat_rng.uniform(380.0, 470.0)  # ICA 462, MCA 406, BA 412 HU (Tomography 2021)
    tof_arterial = anat_rng.uniform(5.5, 7.5) * _BRAIN["gm"][1]  # arteries 5–8× parenchyma
    variant = s.variant or sample_variant(anat_rng)
    vessels, landmarks = circle_of_willis(anat_rng, variant, scale)

    # 2. grids: CTA axis-aligned around the head, TOF an oblique slab around the CoW
    cow = np.array([0.0, -5.0, -15.0]) * scale
    transform = _sample_misalignment(move_rng, s, cow)
    ct_affine = _grid_affine(s.ct_shape, s.ct_spacing, np.array([0.0, -14.0, 14.0]) + grid_rng.uniform(-4, 4, 3))
    oblique = _rotation(np.deg2rad(grid_rng.uniform(-3, 3, 3)))
    tof_centre = transform.map_points(np.array([0.0, -10.0, 5.0]) * scale)
    tof_affine = _grid_affine(s.mr_shape, s.mr_spacing, tof_centre, oblique)

    # 3. CTA: render in HU, add slightly correlated noise (white noise smoothed, rescaled)
    ct_to_index = lambda p: (p - ct_affine[:3, 3]) @ np.linalg.inv(ct_affine[:3, :3]).T  # noqa: E731
    hu, labels = _render(vessels, s.ct_shape, s.ct_spacing, ct_affine, lambda p: p, ct_to_index, 2,
                         hu_arterial, scale, thickness)
    noise_hu = s.ct_noise_hu if s.ct_noise_hu is not None else ct_rng.uniform(13.0, 17.0)
    noise = ndimage.gaussian_filter(ct_rng.standard_normal(s.ct_shape, np.float32), 0.7)
    hu += noise * (noise_hu / noise.std())
    cta = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    # 4. TOF: anatomy ∘ T⁻¹ on the TOF grid (T⁻¹ solved on a coarse grid, then interpolated)
    inv_tof = np.linalg.inv(tof_affine)
    coarse = [np.arange(0, n + 3, 4) for n in s.mr_shape]
    cijk = np.stack(np.meshgrid(*coarse, indexing="ij"), -1).reshape(-1, 3)
    cfield = transform.inverse_map_points(cijk @ tof_affine[:3, :3].T + tof_affine[:3, 3])
    cfield = cfield.reshape(*[len(c) for c in coarse], 3)

    def tof_to_anatomy(world):
        c = ((world - tof_affine[:3, 3]) @ inv_tof[:3, :3].T).T / 4.0
        return np.stack([ndimage.map_coordinates(cfield[..., i], c, order=1, mode="nearest")
                         for i in range(3)], -1)

    tof_to_index = lambda p: (transform.map_points(p) - tof_affine[:3, 3]) @ inv_tof[:3, :3].T  # noqa: E731
    signal, tof_labels = _render(vessels, s.mr_shape, s.mr_spacing, tof_affine, tof_to_anatomy,
                                 tof_to_index, 3, tof_arterial, scale, thickness)
    u = [np.linspace(-1, 1, n) for n in s.mr_shape]
    c = tof_rng.normal(0.0, 0.12, 6)  # smooth multiplicative bias field, as N4 models it
    log_bias = (c[0] * u[0][:, None, None] + c[1] * u[1][None, :, None] + c[2] * u[2][None, None, :]
                + c[3] * u[0][:, None, None] ** 2 + c[4] * u[1][None, :, None] * u[2][None, None, :]
                - 0.15 * u[2][None, None, :] ** 2)
    signal *= np.exp(log_bias).astype(np.float32)
    n1, n2 = (tof_rng.standard_normal(s.mr_shape, np.float32) * s.tof_noise for _ in range(2))
    tof = np.clip(np.rint(np.hypot(signal + n1, n2)), 0, 65535).astype(np.uint16)  # Rician

    return PhantomPair(
        seed=seed, profile=prof.name, tof=_nifti(tof, tof_affine), cta=_nifti(cta, ct_affine),
        labels=_nifti(labels, ct_affine), tof_labels=_nifti(tof_labels, tof_affine),
        transform=transform, landmarks=landmarks,
        tof_landmarks={k: transform.map_points(v) for k, v in landmarks.items()},
        variant=variant, settings=s)
