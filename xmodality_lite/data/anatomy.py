"""Head anatomy for the phantom: an MNI152 brain in a layered skull, and a Circle of Willis.

Everything lives in *anatomy space* (RAS mm, MNI-like: origin near the anterior commissure),
which is also the CTA world space of the phantom. The brain comes from nilearn's bundled
MNI152 2009 templates (shipped in the wheel, read offline); skull and scalp are shells at a
fixed distance from a smoothed brain surface; the arteries are tubes along splines through
control points placed from published Circle-of-Willis diameters and positions measured on
TopCoW labels (the comment above the control points), with seeded variants and jitter.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

# TopCoW multi-class label ids (the challenge's evaluation constants); 0 = drawn but unlabelled
# (veins, distal branches)
LABELS = {"BA": 1, "R-PCA": 2, "L-PCA": 3, "R-ICA": 4, "R-MCA": 5, "L-ICA": 6, "L-MCA": 7,
          "R-Pcom": 8, "L-Pcom": 9, "Acom": 10, "R-ACA": 11, "L-ACA": 12, "3rd-A2": 15}


@dataclass(frozen=True)
class Templates:
    """MNI152 fields on the 1 mm template grid (float32) and its voxel → mm affine."""

    gm: np.ndarray  # grey-matter probability
    wm: np.ndarray  # white-matter probability
    skull_distance: np.ndarray  # mm from the inner skull surface, > 0 outside (smoothed brain + 2 mm)
    affine: np.ndarray  # 4×4 voxel → mm of gm and wm (1 mm)
    skull_affine: np.ndarray  # 4×4 of skull_distance (2 mm: the inner table is smooth)


_MNI152_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                 "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                 "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def _mni152(kind: str) -> nib.Nifti1Image:
    """nilearn's bundled 1 mm MNI152 2009 template ``kind``, scaled to a maximum of 1 (float32),
    as ``nilearn.datasets.load_mni152_{template,gm_template,wm_template}(resolution=1)`` give it.

    Read from nilearn's package data with nibabel, without importing nilearn: its import (scikit-
    learn, pandas) costs ~1 s, more than reading the three templates, in every process that
    makes a phantom."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nilearn is not installed: the phantom's brain comes from its "
                                  "bundled MNI152 templates (pip install nilearn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / _MNI152_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nilearn's MNI152 template is missing (reinstall nilearn)")
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data /= data.max()
    return nib.Nifti1Image(data, img.affine)


@functools.lru_cache(maxsize=1)
def mni_templates() -> Templates:
    """Load the bundled MNI152 2009 templates once per process (no network)."""
    gm = _mni152("gm")
    wm = _mni152("wm").get_fdata(dtype=np.float32)
    mask = (_mni152("t1").get_fdata(dtype=np.float32) > 0.2).astype(np.float32)  # nilearn's brain mask
    # The inner table does not follow the gyri: smooth the brain mask (σ 4 mm) before the EDT,
    # on a 2 mm grid (voxel centres at 0.5 of the 1 mm grid's 2×2×2 blocks).
    nx, ny, nz = (np.asarray(mask.shape) // 2) * 2
    coarse = mask[:nx, :ny, :nz].reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
    head = ndimage.gaussian_filter(coarse, 2.0) > 0.3
    signed = ndimage.distance_transform_edt(~head) - ndimage.distance_transform_edt(head)
    skull_distance = (2.0 * signed + 1.0 - 2.0).astype(np.float32)  # CSF rim of 2 mm
    skull_affine = gm.affine @ np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1.0]])
    return Templates(gm.get_fdata(dtype=np.float32), wm, skull_distance, gm.affine.copy(), skull_affine)


# --- Circle of Willis -------------------------------------------------------------------------
# Control points (RAS mm, right side; the left side mirrors x) and radii (mm). Diameters (mm)
# follow the literature (JNIS summaries; a 513-adult TOF study for A1/Acom; a 100-case CTA
# study for P1) and TopCoW labels (Pcom): cavernous ICA 5.0, ICA terminus 3.6, M1 3.1, A1 2.05,
# Acom 1.16, BA 3.6→3.1, vertebral 3.9→2.8, P1 2.1–3, Pcom 1.7–3.0. Positions, measured on
# TopCoW labels: ICA termini ≈ 24 mm apart, BA ≈ 17 mm behind them, M1 lateral-superior, Acom
# anterior-superior; the CoW fits ≈ 45×35×22 mm.
_ICA_TERMINUS = (12.0, 2.0, -17.0)
_PCOM_P1_JUNCTION = (9.0, -16.0, -18.0)
_BASILAR_TIP = (0.0, -14.0, -19.0)
_ACOM_END = (1.5, 15.0, -11.0)
_M1_END = (36.0, 5.0, -9.0)

# name: (label or None, control points, radii, TOF inflow factor, CTA HU factor)
_RIGHT_VESSELS = {
    "ICA-cervical": (None, [(24, -10, -110), (22, -8, -80), (21, -12, -60), (18, -6, -47),
                            (16, -1, -42)], [2.7, 2.7, 2.6, 2.6, 2.5], 1.0, 1.05),
    "ICA": ("R-ICA", [(16, -1, -42), (15, 7, -35), (14, 12, -27), (13, 7, -21), _ICA_TERMINUS],
            [2.5, 2.4, 2.1, 1.9, 1.8], 1.0, 1.05),
    "MCA": ("R-MCA", [_ICA_TERMINUS, (22, 4, -16), (30, 5, -12), _M1_END],
            [1.55, 1.55, 1.5, 1.4], 0.92, 0.95),
    "M2-sup": (None, [_M1_END, (39, 0, 2), (44, -10, 16), (50, -22, 30), (52, -35, 44)],
               [1.2, 1.1, 1.0, 0.9, 0.75], 0.85, 0.9),
    "M2-inf": (None, [_M1_END, (42, -4, -6), (48, -20, -3), (54, -36, 2), (56, -52, 8)],
               [1.2, 1.1, 1.0, 0.9, 0.75], 0.85, 0.9),
    "M3-ant": (None, [(39, 0, 2), (44, 14, 8), (50, 26, 20)], [0.9, 0.8, 0.7], 0.8, 0.85),
    "ACA": ("R-ACA", [_ICA_TERMINUS, (7, 9, -14), _ACOM_END, (2.0, 22, -3), (2.0, 31, 6),
                      (2.0, 36, 16)], [1.03, 1.03, 1.0, 1.0, 0.95, 0.9], 0.88, 0.95),
    "pericallosal": (None, [(2.0, 36, 16), (2.0, 30, 29), (2.0, 12, 37), (2.0, -12, 40),
                            (2.0, -35, 38)], [0.9, 0.85, 0.8, 0.75, 0.7], 0.8, 0.85),
    "Pcom": ("R-Pcom", [(12.5, 0, -17.5), (11, -8, -19), _PCOM_P1_JUNCTION],
             [0.8, 0.8, 0.8], 0.85, 0.95),
    "P1": ("R-PCA", [_BASILAR_TIP, (5, -15, -19.5), _PCOM_P1_JUNCTION], [1.2, 1.2, 1.2], 0.9, 0.95),
    "P2": ("R-PCA", [_PCOM_P1_JUNCTION, (16, -25, -15), (22, -37, -10), (24, -50, -4)],
           [1.15, 1.1, 1.05, 1.0], 0.85, 0.95),
    "PCA-distal": (None, [(24, -50, -4), (22, -65, 2), (15, -82, 6), (8, -92, 8)],
                   [1.0, 0.9, 0.8, 0.7], 0.8, 0.85),
    "SCA": (None, [(0, -15, -22), (8, -18, -23.5), (17, -30, -21), (20, -46, -17)],
            [0.65, 0.6, 0.6, 0.55], 0.75, 0.85),
    "vertebral": (None, [(10, -35, -110), (11, -36, -80), (6, -30, -62), (0.5, -21, -52)],
                  [1.9, 1.8, 1.6, 1.5], 1.0, 1.0),
}
_MIDLINE_VESSELS = {
    "BA": ("BA", [(0, -21, -52), (0, -18, -40), (0, -16, -28), _BASILAR_TIP],
           [1.8, 1.7, 1.6, 1.55], 0.95, 1.0),
    "Acom": ("Acom", [(-1.5, 15, -11), (0, 15.5, -11), (1.5, 15, -11)], [0.58, 0.58, 0.58], 0.88, 0.95),
    "3rd-A2": ("3rd-A2", [(0, 15.5, -11), (0, 23, -3), (0, 32, 7), (0, 36, 15)],
               [0.85, 0.85, 0.8, 0.8], 0.85, 0.95),
}
# Dural venous sinuses: contrast-filled on CTA, suppressed on TOF by the venous saturation band
# (TOF-MRA places a presaturation band above the slab). Control points are pushed onto the inner table by `_snap_to_inner_table`.
_SINUSES = {
    "SSS": ([(0, 66, 12), (0, 52, 52), (0, 20, 74), (0, -20, 78), (0, -60, 66), (0, -88, 40),
             (0, -100, 8)], [1.6, 2.0, 2.4, 2.8, 3.0, 3.2, 3.4]),
    "R-transverse": ([(0, -100, 8), (28, -98, 4), (50, -80, -6), (56, -58, -18), (48, -42, -36)],
                     [3.2, 3.0, 2.8, 2.6, 2.5]),
    "straight": ([(0, -48, 8), (0, -66, 12), (0, -84, 12), (0, -98, 9)], [2.0, 2.2, 2.4, 2.6]),
}


@dataclass(frozen=True)
class Vessel:
    """A tube: centreline samples (mm), radius, TopCoW label, and per-sample contrast factors."""

    name: str
    label: int  # TopCoW id, 0 = unlabelled
    points: np.ndarray  # [K, 3] anatomy mm, spaced ≤ 0.25 mm
    radius: np.ndarray  # [K] mm
    tof_signal: np.ndarray  # [K] inflow signal relative to the ICA (decays distally)
    ct_factor: float  # enhancement relative to the subject's arterial HU
    artery: bool


def _mirror(points):
    return [(-x, y, z) for x, y, z in points]


def _centreline(points: np.ndarray, radii: np.ndarray, step: float = 0.25):
    """Resample a smooth cubic spline through the control points at ~``step`` mm."""
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    spline = CubicSpline(chord, points, bc_type="natural") if len(points) > 2 else None
    t = np.linspace(0.0, chord[-1], max(2, int(np.ceil(chord[-1] / step)) + 1))
    xyz = spline(t) if spline is not None else np.stack([np.interp(t, chord, points[:, i]) for i in range(3)], 1)
    return xyz, np.interp(t, chord, radii), t


def _snap_to_inner_table(points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Move each point along the ray from the head centre until its tube touches the inner table."""
    tpl = mni_templates()
    centre = np.array([0.0, -18.0, 10.0])
    rays = points - centre
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    t = np.arange(0.0, 130.0, 0.5)
    probe = centre + rays[:, None, :] * t[None, :, None]  # [P, T, 3]
    ijk = np.linalg.solve(tpl.skull_affine, np.c_[probe.reshape(-1, 3), np.ones(probe.size // 3)].T)[:3]
    d = ndimage.map_coordinates(tpl.skull_distance, ijk, order=1, cval=50.0).reshape(probe.shape[:2])
    first = np.argmax(d > -(radii[:, None] + 0.3), axis=1)
    return centre + rays * t[first][:, None]


def sample_variant(rng: np.random.Generator) -> dict[str, dict[str, int]]:
    """Seeded CoW variant in TopCoW Task-3 form: 1 = segment present and ≥ 1 mm (the usual
    "hypoplastic" cut-off, e.g. the Tromsø study, Hindenes et al. 2020).

    Prevalences: both Pcoms missing 28 % and one missing 25 % (Tromsø), A1 missing/hypoplastic
    6 %, Acom missing 10 %, third A2 5 %, fetal PCA (P1 hypoplastic, large Pcom) 17 % per side.
    """
    pcoms = rng.choice(4, p=[0.28, 0.125, 0.125, 0.47])  # none, R only, L only, both
    r_pcom, l_pcom = int(pcoms in (1, 3)), int(pcoms in (2, 3))
    r_p1 = int(not (r_pcom and rng.random() < 0.17))
    l_p1 = int(not (l_pcom and rng.random() < 0.17))
    a1_missing = rng.random() < 0.06
    side = rng.integers(2)
    acom = int(a1_missing or rng.random() >= 0.10)  # a missing A1 needs its Acom
    return {"anterior": {"L-A1": int(not (a1_missing and side == 0)), "Acom": acom,
                         "3rd-A2": int(rng.random() < 0.05), "R-A1": int(not (a1_missing and side == 1))},
            "posterior": {"L-Pcom": l_pcom, "L-P1": l_p1, "R-P1": r_p1, "R-Pcom": r_pcom}}


def circle_of_willis(rng: np.random.Generator, variant: dict, scale: np.ndarray,
                     jitter_mm: float = 1.5) -> tuple[list[Vessel], dict[str, np.ndarray]]:
    """Arteries and sinuses of one subject, in anatomy mm, plus named bifurcation landmarks.

    ``scale`` [3] stretches the template geometry (the same stretch as the brain); every control
    point moves by a smooth seeded jitter of about ``jitter_mm``. Absent segments (variant 0)
    are drawn hypoplastic (Ø 0.8 mm, below the 1 mm cut-off) or, for the Acom, not at all.
    """
    ant, post = variant["anterior"], variant["posterior"]
    specs = []
    for side, sign in (("R", 1.0), ("L", -1.0)):
        for name, (label, pts, radii, tof, hu) in _RIGHT_VESSELS.items():
            radii = np.asarray(radii, float)
            if name == "ACA" and not ant[f"{side}-A1"]:
                radii = np.r_[0.4, 0.4, radii[2:]]  # hypoplastic A1, normal A2
            if name == "Pcom":
                if not post[f"{side}-Pcom"]:
                    continue
                if not post[f"{side}-P1"]:
                    radii = radii * 1.5  # fetal PCA: the Pcom carries the PCA flow
            if name == "P1" and not post[f"{side}-P1"]:
                radii = radii * 0.35
            if label is not None:
                label = label.replace("R-", f"{side}-")
            pts = pts if sign > 0 else _mirror(pts)
            specs.append((f"{side}-{name}", label, pts, radii, tof, hu))
    for name, (label, pts, radii, tof, hu) in _MIDLINE_VESSELS.items():
        if (name == "Acom" and not ant["Acom"]) or (name == "3rd-A2" and not ant["3rd-A2"]):
            continue
        specs.append((name, label, pts, np.asarray(radii, float), tof, hu))

    # Jitter is a smooth function of position (a linear field plus three 40 mm sine waves), so
    # control points shared by two vessels (junctions) move together and the tree stays joined.
    jitter_a = rng.normal(0.0, jitter_mm / 40.0, (3, 3))
    waves_k = rng.normal(0.0, 2 * np.pi / 40.0, (3, 3))
    waves_b = rng.normal(0.0, jitter_mm / 2, (3, 3))
    waves_phi = rng.uniform(0.0, 2 * np.pi, 3)

    def jitter(p):
        return p @ jitter_a.T + np.sin(p @ waves_k.T + waves_phi) @ waves_b

    vessels = []
    for name, label, pts, radii, tof, hu in specs:
        pts = np.asarray(pts, float)
        pts = (pts + jitter(pts)) * scale
        xyz, r, s = _centreline(pts, radii * rng.uniform(0.92, 1.08))
        signal = tof * np.exp(-s / 150.0)  # slow distal flow saturates in the TOF slab
        vessels.append(Vessel(name, LABELS.get(label, 0), xyz.astype(np.float32), r.astype(np.float32),
                              signal.astype(np.float32), hu, True))
    for side, sign in (("R", 1.0), ("L", -1.0)):
        for name, (pts, radii) in _SINUSES.items():
            if name != "R-transverse" and side == "L":
                continue
            pts = np.asarray(pts if sign > 0 else _mirror(pts), float) * scale
            radii = np.asarray(radii)
            if name != "straight":
                pts = _snap_to_inner_table(pts / scale, radii) * scale
            xyz, r, _ = _centreline(pts, radii)
            vessels.append(Vessel(name.replace("R-", f"{side}-"), 0, xyz.astype(np.float32),
                                  r.astype(np.float32), np.full(len(r), 0.12, np.float32), 0.6, False))

    by_name = {v.name: v for v in vessels}
    landmarks = {"BA-tip": by_name["BA"].points[-1], "vertebrobasilar": by_name["BA"].points[0]}
    for side in "RL":
        landmarks[f"{side}-ICA-terminus"] = by_name[f"{side}-ICA"].points[-1]
        landmarks[f"{side}-MCA-bifurcation"] = by_name[f"{side}-MCA"].points[-1]
        landmarks[f"{side}-P1-P2"] = by_name[f"{side}-P2"].points[0]
    if "Acom" in by_name:
        acom = by_name["Acom"].points
        landmarks["Acom-mid"] = acom[len(acom) // 2]
    return vessels, {k: np.asarray(v, np.float64) for k, v in landmarks.items()}
