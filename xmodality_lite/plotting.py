"""Slice panels for the book's figures, drawn the same way in every lesson.

One image convention throughout: a 2-D slice is indexed ``[first axis, second axis]`` (voxel or
RAS order, e.g. ``hu[:, :, k]``) and is drawn with the second axis vertical (``origin="lower"``),
in millimetres when the pixel spacing is given. ``radiological=True`` puts the patient's right on
the viewer's left (the first axis reversed, as in :mod:`xmodality_lite.data.views`). CTA is shown
in HU with a window and a grey colormap (STYLE.md, "Figures"); the window and the unit go on the
colourbar, so a figure never leaves the reader guessing what grey means.

Nothing here creates or shows a figure: the helpers draw into the ``Axes`` they are given, so a
lesson keeps control of its layout, and no figure is left open behind its back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.image import AxesImage

from xmodality_lite.data.slices import HU_WINDOW, unwindow_hu

__all__ = ["HU_WINDOW", "MODEL_RANGE", "show_cta", "show_slice", "window_label"]

MODEL_RANGE = (-1.0, 1.0)  # what the networks see: min-max TOF, windowed CTA and z_t (a.u.)


def window_label(window: Sequence[float], unit: str = "HU") -> str:
    """``"window [−50, 350] HU"``: the text a figure uses to state its display window."""
    lo, hi = (float(w) for w in window)
    return f"window [{lo:g}, {hi:g}] {unit}".rstrip()


def show_slice(
    ax: Axes,
    image: np.ndarray,  # [X, Y] (trailing size-1 axes are squeezed: [X, Y, 1] works too)
    title: str = "",
    *,
    window: Sequence[float] | None = None,
    unit: str = "",
    spacing_mm: Sequence[float] | None = None,
    radiological: bool = False,
    ticks: bool = True,
    colorbar: bool = False,
    cmap: str = "gray",
    fontsize: float | None = None,
    **imshow_kwargs,
) -> AxesImage:
    """Draw one slice into ``ax`` and return the ``AxesImage``.

    ``window=(lo, hi)`` fixes the grey scale (``vmin``/``vmax``); without it matplotlib scales to
    the data. With ``spacing_mm`` the axes are in mm and labelled; ``ticks=False`` removes ticks
    and axis labels (thumbnail grids). ``colorbar=True`` adds a colourbar labelled with ``unit``
    and the window. Extra keywords go to ``imshow`` (``alpha``, ``interpolation``, ...).
    """
    plane = np.asarray(image)
    while plane.ndim > 2 and plane.shape[-1] == 1:
        plane = plane[..., 0]
    if plane.ndim != 2:
        raise ValueError(f"show_slice needs a 2-D slice, got shape {np.shape(image)}")
    sx, sy = (1.0, 1.0) if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
    width, height = plane.shape[0] * sx, plane.shape[1] * sy
    if radiological:  # patient right on the viewer's left; the mm axis keeps voxel coordinates
        plane, extent = plane[::-1], (width, 0.0, 0.0, height)
    else:
        extent = (0.0, width, 0.0, height)
    if window is not None:
        lo, hi = (float(w) for w in window)
        if not hi > lo:
            raise ValueError(f"window must be (low, high) with high > low, got {tuple(window)}")
        imshow_kwargs.setdefault("vmin", lo)
        imshow_kwargs.setdefault("vmax", hi)
    imshow_kwargs.setdefault("interpolation", "nearest")
    shown = ax.imshow(plane.T, cmap=cmap, origin="lower", extent=extent, **imshow_kwargs)
    ax.set_title(title, fontsize=fontsize)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    elif spacing_mm is not None:
        ax.set_xlabel("R ← → L (mm)" if radiological else "first axis (mm)")
        ax.set_ylabel("second axis (mm)")
    if colorbar:
        _colorbar(ax, shown, unit, window)
    return shown


def show_cta(
    ax: Axes,
    image: np.ndarray,  # [X, Y] windowed CTA in [−1, 1], or HU with windowed=False
    title: str = "",
    *,
    window: Sequence[float] = HU_WINDOW,
    windowed: bool = True,
    **kwargs,
) -> AxesImage:
    """A CTA (real or synthetic) in HU with the paper's window [−50, 350] HU (§3.1).

    ``windowed=True`` (the default) means ``image`` is what the models see, ``window_hu``'s
    [−1, 1]; it is mapped back to HU with the same window before it is drawn.
    """
    hu = unwindow_hu(image, tuple(window)) if windowed else np.asarray(image, np.float32)
    kwargs.setdefault("unit", "HU")
    return show_slice(ax, hu, title, window=window, **kwargs)


def _colorbar(ax: Axes, shown: AxesImage, unit: str, window: Sequence[float] | None) -> Colorbar:
    label = window_label(window, unit) if window is not None else unit
    return ax.figure.colorbar(shown, ax=ax, fraction=0.046, label=label)
