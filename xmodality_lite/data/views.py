"""Orthogonal views and maximum-intensity projections of NIfTI volumes, for the book's figures.

Volumes are first turned to the closest RAS orientation (``nib.as_closest_canonical``), so every
figure shows radiological anatomy the same way whatever the file's axis codes (TopCoW stores
L,P,S): axial and coronal views are drawn in radiological convention (patient's right on the
left of the image), superior up.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from xmodality_lite.config import HU_WINDOW

CTA_WINDOW = HU_WINDOW  # Koch et al.'s training window, HU (paper §3.1): the lessons' name for it
BONE_WINDOW = (-450.0, 1550.0)  # level 550, width 2000 HU


def canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in RAS+ axis order (x → R, y → A, z → S) and their voxel sizes (mm)."""
    img = nib.as_closest_canonical(img)
    return np.asarray(img.dataobj), np.asarray(img.header.get_zooms()[:3], float)


def _show(ax, plane, spacing, window, title, xlabel, ylabel, cmap="gray"):
    """``plane`` is [first axis, second axis] with the second one vertical (superior/anterior up)."""
    extent = (0, plane.shape[0] * spacing[0], 0, plane.shape[1] * spacing[1])
    ax.imshow(plane[::-1].T, cmap=cmap, vmin=window[0], vmax=window[1], origin="lower",
              extent=(extent[1], extent[0], extent[2], extent[3]), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)


def orthogonal_views(axes, img: nib.Nifti1Image, *, window, centre_mm=None, name="", cmap="gray"):
    """Axial, coronal and sagittal slices through ``centre_mm`` (world RAS, default the FOV centre)."""
    data, zooms = canonical(img)
    can = nib.as_closest_canonical(img)
    if centre_mm is None:
        ijk = (np.asarray(data.shape) - 1) // 2
    else:
        ijk = np.rint(np.linalg.solve(can.affine, np.r_[centre_mm, 1.0])[:3]).astype(int)
        ijk = np.clip(ijk, 0, np.asarray(data.shape) - 1)
    i, j, k = ijk
    unit = f"[{window[0]:g}, {window[1]:g}]"
    _show(axes[0], data[:, :, k], zooms[[0, 1]], window, f"{name} axial {unit}", "R ← → L (mm)", "P → A (mm)",
          cmap)
    _show(axes[1], data[:, j, :], zooms[[0, 2]], window, f"{name} coronal", "R ← → L (mm)", "I → S (mm)", cmap)
    sag = data[i, :, :]  # _show flips the first axis: anterior on the left, as usually read
    _show(axes[2], sag, zooms[[1, 2]], window, f"{name} sagittal", "A ← → P (mm)", "I → S (mm)", cmap)


def axial_mip(ax, img: nib.Nifti1Image, *, window, name="", z_range_mm=None):
    """Axial maximum-intensity projection (over z, optionally a slab ``z_range_mm`` in RAS mm)."""
    data, zooms = canonical(img)
    if z_range_mm is not None:
        z = nib.as_closest_canonical(img).affine
        zs = z[2, 3] + z[2, 2] * np.arange(data.shape[2])
        data = data[:, :, (zs >= z_range_mm[0]) & (zs <= z_range_mm[1])]
    _show(ax, data.max(axis=2), zooms[[0, 1]], window, f"{name} axial MIP", "R ← → L (mm)", "P → A (mm)")


# (axis projected away, axes kept, plane, x label, y label), as in orthogonal_views
_PLANES = ((2, [0, 1], "axial", "R ← → L (mm)", "P → A (mm)"),
           (1, [0, 2], "coronal", "R ← → L (mm)", "I → S (mm)"),
           (0, [1, 2], "sagittal", "A ← → P (mm)", "I → S (mm)"))


def three_plane_mips(axes, img: nib.Nifti1Image, *, window, name=""):
    """Axial, coronal and sagittal maximum-intensity projections of the whole volume."""
    data, zooms = canonical(img)
    for ax, (axis, kept, plane, xlabel, ylabel) in zip(axes, _PLANES, strict=True):
        _show(ax, data.max(axis=axis), zooms[kept], window, f"{name} {plane} MIP", xlabel, ylabel)


MASK_COLOURS = ("black", "tab:green", "magenta", "white")  # neither, first only, second only, both


def mask_overlay_mips(axes, first: nib.Nifti1Image, second: nib.Nifti1Image, *, name=""):
    """Projections of two masks on one grid in three planes, coloured by ``MASK_COLOURS``:
    green where only the first projects (e.g. real vessels), magenta only the second
    (synthetic), white both."""
    from matplotlib.colors import ListedColormap

    a, zooms = canonical(first)
    b, _ = canonical(second)
    for ax, (axis, kept, plane, xlabel, ylabel) in zip(axes, _PLANES, strict=True):
        code = (a > 0).any(axis=axis) + 2 * (b > 0).any(axis=axis)
        _show(ax, code, zooms[kept], (0, 3), f"{name} {plane}", xlabel, ylabel,
              ListedColormap(MASK_COLOURS))


def plot_pair(pair, *, path=None, tof_window=None):
    """TOF and CTA (soft-tissue and bone windows) side by side, plus axial MIPs of the CoW slab.

    Returns the matplotlib figure; saves it to ``path`` if given.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tof = np.asarray(pair.tof.dataobj)
    if tof_window is None:
        tof_window = (0.0, float(np.percentile(tof, 99.9)))
    cow = np.mean(list(pair.landmarks.values()), axis=0)
    fig, axes = plt.subplots(4, 3, figsize=(10, 13), constrained_layout=True)
    orthogonal_views(axes[0], pair.tof, window=tof_window, centre_mm=pair.transform.map_points(cow),
                     name="TOF")
    orthogonal_views(axes[1], pair.cta, window=CTA_WINDOW, centre_mm=cow, name="CTA")
    orthogonal_views(axes[2], pair.cta, window=BONE_WINDOW, centre_mm=cow + [0, 0, 25], name="CTA bone")
    mip_window = (0.0, float(np.percentile(tof.max(axis=2), 99.5)))
    axial_mip(axes[3, 0], pair.tof, window=mip_window, name="TOF")
    axial_mip(axes[3, 1], pair.cta, window=(-50, 600), name="CTA", z_range_mm=(cow[2] - 6, cow[2] + 14))
    labels = nib.as_closest_canonical(pair.labels)
    _show(axes[3, 2], np.asarray(labels.dataobj).max(axis=2), labels.header.get_zooms()[:2], (0, 15),
          "labels (TopCoW ids) MIP", "R ← → L (mm)", "P → A (mm)")
    axes[3, 2].images[0].set_cmap("tab20")
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
