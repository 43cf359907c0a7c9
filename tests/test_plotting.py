"""The book's slice panels: the grey scale is the stated window, the unit and window are on the
colourbar, orientation and mm extent follow the voxel grid, and nothing opens a figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import xmodality_lite as xl  # noqa: E402
from xmodality_lite.data.slices import HU_WINDOW, window_hu  # noqa: E402
from xmodality_lite.plotting import show_cta, show_slice, window_label  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_window_sets_the_grey_scale_and_title(ax):
    image = np.arange(12.0).reshape(3, 4)
    shown = show_slice(ax, image, "TOF-MRA", window=(-1.0, 1.0), fontsize=8)
    assert shown.get_clim() == (-1.0, 1.0)
    assert shown.get_cmap().name == "gray"
    assert ax.get_title() == "TOF-MRA" and ax.title.get_fontsize() == 8


def test_image_is_drawn_with_the_second_axis_vertical_in_mm(ax):
    image = np.arange(12.0).reshape(3, 4)  # [X=3, Y=4]
    shown = show_slice(ax, image[..., None], spacing_mm=(0.5, 2.0))  # [X, Y, 1] is squeezed
    np.testing.assert_array_equal(shown.get_array(), image.T)  # rows = second axis
    assert shown.get_extent() == [0.0, 1.5, 0.0, 8.0]  # 3 × 0.5 mm wide, 4 × 2 mm high
    assert shown.origin == "lower" and ax.get_xlabel().endswith("(mm)")


def test_radiological_view_puts_the_patients_right_on_the_left(ax):
    image = np.arange(12.0).reshape(3, 4)
    shown = show_slice(ax, image, spacing_mm=(1.0, 1.0), radiological=True)
    np.testing.assert_array_equal(shown.get_array(), image[::-1].T)
    assert shown.get_extent() == [3.0, 0.0, 0.0, 4.0]  # mm axis still in voxel coordinates
    assert "R" in ax.get_xlabel() and "L" in ax.get_xlabel()


def test_ticks_off_leaves_a_bare_thumbnail(ax):
    show_slice(ax, np.zeros((4, 4)), "z_t", window=(-1, 1), spacing_mm=(1, 1), ticks=False)
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == [] and ax.get_xlabel() == ""


def test_cta_is_shown_in_hu_with_the_papers_window_on_the_colourbar(ax):
    hu = np.array([[-1000.0, -50.0], [150.0, 350.0]])
    shown = show_cta(ax, window_hu(hu), "CTA (target)", colorbar=True)
    assert shown.get_clim() == HU_WINDOW == (-50.0, 350.0)
    np.testing.assert_allclose(shown.get_array(), np.clip(hu, *HU_WINDOW).T, atol=1e-3)
    colourbar = ax.figure.axes[-1]
    assert colourbar is not ax and colourbar.get_ylabel() == "window [-50, 350] HU"
    assert window_label((-50, 350)) == "window [-50, 350] HU"


def test_cta_already_in_hu_is_not_converted_twice(ax):
    hu = np.full((2, 2), 100.0)
    shown = show_cta(ax, hu, windowed=False)
    np.testing.assert_allclose(shown.get_array(), hu)


def test_helpers_open_no_figure():
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    show_slice(ax, np.zeros((4, 4)), window=(0, 1), colorbar=True, unit="a.u.")
    show_cta(ax, np.zeros((4, 4)))
    assert plt.get_fignums() == before
    plt.close(fig)
    assert plt.get_fignums() == [n for n in before if n != fig.number]


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 2, 2))])
def test_a_non_slice_is_refused(ax, bad):
    with pytest.raises(ValueError, match="2-D slice"):
        show_slice(ax, bad)


def test_an_empty_window_is_refused(ax):
    with pytest.raises(ValueError, match="high > low"):
        show_slice(ax, np.zeros((2, 2)), window=(1, 1))


def test_reachable_from_the_package():
    assert xl.plotting.show_cta is show_cta
