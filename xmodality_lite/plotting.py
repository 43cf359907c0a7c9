"""Slice panels for the book's figures, drawn the same way in every lesson.

One image convention throughout: a 2-D slice is indexed ``[first axis, second axis]`` (voxel or
RAS order, e.g. ``hu[:, :, k]``) and is drawn with the second axis vertical (``origin="lower"``),
in millimetres when the pixel spacing is given. ``radiological=True`` puts the patient's right on
the viewer's left (the first axis reversed, as in :mod:`xmodality_lite.data.views`). CTA is shown
in HU with a window and a grey colormap (STYLE.md, "Figures"); the window and the unit go on the
colourbar, so a figure never leaves the reader guessing what grey means.

Nothing here creates or shows a figure: the helpers draw into the ``Axes`` they are given, so a
lesson keeps control of its layout, and no figure is left open behind its back.

:func:`niivue_viewers` is the live 3-D view for Colab and JupyterLab: ipyniivue (the optional
``viewer`` extra) ships NiiVue's JavaScript in its wheel, so it needs no CDN. It only makes
sense with a live kernel behind the page, so it stays off when a notebook is executed without a
front end (the book build, nbconvert), where the static book uses its offline slice scroller.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.image import AxesImage

from xmodality_lite.data.slices import HU_WINDOW, unwindow_hu

__all__ = ["HU_WINDOW", "MODEL_RANGE", "VIEWER_INSTALL", "interactive_frontend", "niivue_viewers", "show_cta",
           "show_model_slice", "show_slice", "window_label"]

MODEL_RANGE = (-1.0, 1.0)  # what the networks see: min-max TOF, windowed CTA and z_t (a.u.)
VIEWER_INSTALL = 'pip install "ipyniivue>=2.4" (or the extra: pip install "xmodality-lite[viewer]")'


def window_label(window: Sequence[float], unit: str = "HU") -> str:
    """``"window [−50, 350] HU"``: the text a figure uses to state its display window."""
    lo, hi = (float(w) for w in window)
    return f"window [{lo:g}, {hi:g}] {unit}".rstrip()


def show_slice(
    ax: Axes,
    image: np.ndarray,  # [X, Y]; size-1 batch/channel axes are dropped: [1, X, Y, 1] works too
    title: str = "",
    *,
    window: Sequence[float] | None = None,
    unit: str = "",
    spacing_mm: Sequence[float] | None = None,
    radiological: bool = False,
    labels: tuple[str, str] | None = None,
    ticks: bool = True,
    colorbar: bool = False,
    cmap: str = "gray",
    fontsize: float | None = None,
    **imshow_kwargs,
) -> AxesImage:
    """Draw one slice into ``ax`` and return the ``AxesImage``.

    ``window=(lo, hi)`` fixes the grey scale (``vmin``/``vmax``); without it matplotlib scales to
    the data. With ``spacing_mm`` the axes are in mm and labelled (``labels=(x, y)`` names them,
    e.g. ``("R ← → L (mm)", "P → A (mm)")`` for an axial slice); ``ticks=False`` removes ticks
    and axis labels (thumbnail grids). Masked arrays keep their mask (overlays). ``colorbar=True`` adds a colourbar labelled with ``unit``
    and the window. Extra keywords go to ``imshow`` (``alpha``, ``interpolation``, ...).
    """
    plane = np.asanyarray(image)  # a masked array stays masked: its mask is drawn transparent
    while plane.ndim > 2 and 1 in (plane.shape[0], plane.shape[-1]):  # [1, X, Y, 1] → [X, Y]
        plane = plane[..., 0] if plane.shape[-1] == 1 else plane[0]
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
    elif spacing_mm is not None or labels is not None:
        default = ("R ← → L (mm)" if radiological else "first axis (mm)", "second axis (mm)")
        xlabel, ylabel = default if labels is None else labels
        ax.set(xlabel=xlabel, ylabel=ylabel)
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


def show_model_slice(
    ax: Axes,
    image: np.ndarray,  # [X, Y] in the models' [−1, 1]
    title: str = "",
    kind: Literal["cta", "tof", "z"] = "cta",
    **kwargs,
) -> AxesImage:
    """What a model reads or writes, drawn by what it stands for.

    ``"cta"`` (a target, a synthetic CTA, an estimate x̂): in HU with the paper's window;
    ``"tof"`` (min-max TOF) and ``"z"`` (a noised z_t): on [−1, 1] in arbitrary units.
    """
    if kind == "cta":
        return show_cta(ax, image, title, **kwargs)
    if kind in ("tof", "z"):
        kwargs.setdefault("unit", "a.u.")
        return show_slice(ax, image, title, window=MODEL_RANGE, **kwargs)
    raise ValueError(f"unknown kind {kind!r}; choose one of ['cta', 'tof', 'z']")


def _colorbar(ax: Axes, shown: AxesImage, unit: str, window: Sequence[float] | None) -> Colorbar:
    label = window_label(window, unit) if window is not None else unit
    return ax.figure.colorbar(shown, ax=ax, fraction=0.046, label=label)


def interactive_frontend() -> bool:
    """Whether a notebook front end with a live kernel shows this session's widgets.

    True in Colab (``google.colab`` imported) and in kernels started by a Jupyter server
    (JupyterLab, Notebook 7: it sets ``JPY_SESSION_NAME``); False under nbclient/nbconvert (the
    book build) and in plain Python, where a widget would only leave dead state in the page.
    """
    return "google.colab" in sys.modules or bool(os.environ.get("JPY_SESSION_NAME"))


def niivue_viewers(
    volumes: dict[str, str | os.PathLike],  # title -> NIfTI file (HU)
    *,
    window: Sequence[float] = HU_WINDOW,
    height: int = 360,
) -> list[Any] | None:
    """One live ipyniivue ``NiiVue`` 3-D viewer per NIfTI file, grey in ``window`` (HU).

    Returns None, after printing how to install it, when ipyniivue is not importable; the
    caller displays them one below the other (inside an ``ipywidgets.HBox`` a NiiVue canvas
    gets zero width and stays blank: seen in JupyterLab 4). The files' bytes go to
    the browser through the kernel: nothing is fetched from the network.
    """
    try:
        from ipyniivue import NiiVue
    except ImportError:
        print(f"ipyniivue is not installed; for a live 3-D view: {VIEWER_INSTALL}")
        return None
    lo, hi = (float(w) for w in window)
    viewers = []
    for title, path in volumes.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{title}: no NIfTI file at {path}")
        viewer = NiiVue(height=height)
        viewer.load_volumes([{"path": str(path), "colormap": "gray", "cal_min": lo, "cal_max": hi}])
        viewers.append(viewer)
    return viewers
