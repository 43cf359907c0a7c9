"""The book's slice panels: the grey scale is the stated window, the unit and window are on the
colourbar, orientation and mm extent follow the voxel grid, and nothing opens a figure."""

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import xmodality_lite as xl  # noqa: E402
from xmodality_lite.data.slices import HU_WINDOW, window_hu  # noqa: E402
from xmodality_lite.plotting import show_cta, show_model_slice, show_slice, window_label  # noqa: E402


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
    shown = show_slice(ax, image[None, ..., None], spacing_mm=(0.5, 2.0))  # [1, X, Y, 1] squeezed
    np.testing.assert_array_equal(shown.get_array(), image.T)  # rows = second axis
    assert shown.get_extent() == [0.0, 1.5, 0.0, 8.0]  # 3 × 0.5 mm wide, 4 × 2 mm high
    assert shown.origin == "lower" and ax.get_xlabel().endswith("(mm)")


def test_radiological_view_puts_the_patients_right_on_the_left(ax):
    image = np.arange(12.0).reshape(3, 4)
    shown = show_slice(ax, image, spacing_mm=(1.0, 1.0), radiological=True)
    np.testing.assert_array_equal(shown.get_array(), image[::-1].T)
    assert shown.get_extent() == [3.0, 0.0, 0.0, 4.0]  # mm axis still in voxel coordinates
    assert "R" in ax.get_xlabel() and "L" in ax.get_xlabel()


def test_a_masked_overlay_keeps_its_mask_and_labels_can_be_named(ax):
    image = np.ma.masked_where(np.eye(3, dtype=bool), np.ones((3, 3)))
    shown = show_slice(ax, image, spacing_mm=(1, 1), labels=("R ← → L (mm)", "P → A (mm)"))
    assert np.ma.is_masked(shown.get_array()) and shown.get_array().mask.sum() == 3
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("R ← → L (mm)", "P → A (mm)")


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


def test_model_slices_are_drawn_by_what_they_stand_for(ax):
    y = np.zeros((2, 2))  # mid-range: 150 HU as a CTA, 0 a.u. as a TOF or z_t
    assert show_model_slice(ax, y, kind="cta").get_clim() == HU_WINDOW
    np.testing.assert_allclose(show_model_slice(ax, y, kind="cta").get_array(), 150.0)
    for kind in ("tof", "z"):
        shown = show_model_slice(ax, y, kind=kind)
        assert shown.get_clim() == (-1.0, 1.0)
        np.testing.assert_allclose(shown.get_array(), 0.0)
    with pytest.raises(ValueError, match="unknown kind 'mri'"):
        show_model_slice(ax, y, kind="mri")


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


def test_no_front_end_under_nbclient_or_plain_python(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not xl.plotting.interactive_frontend()
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/09_volume_reconstruction.ipynb")
    assert xl.plotting.interactive_frontend()


def test_niivue_viewers_load_each_volume_in_the_hu_window(tmp_path):
    # ipyniivue is a dev dependency (pyproject), so this runs wherever the tests do
    paths = {}
    for name in ("CTA", "synthetic"):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), paths[name])
    viewers = xl.plotting.niivue_viewers(paths, height=200)
    assert len(viewers) == 2
    for viewer in viewers:
        (volume,) = viewer.volumes
        assert (volume.cal_min, volume.cal_max) == HU_WINDOW and volume.colormap == "gray"
    with pytest.raises(FileNotFoundError, match="missing"):
        xl.plotting.niivue_viewers({"missing": tmp_path / "none.nii.gz"})


def test_niivue_viewers_without_ipyniivue_print_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipyniivue", None)  # import fails
    assert xl.plotting.niivue_viewers({}) is None
    assert "pip install" in capsys.readouterr().out
