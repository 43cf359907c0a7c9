"""Slice translation and volume reconstruction (paper §3.6) with tiny stand-in models."""

import nibabel as nib
import numpy as np
import pytest
from _tiny import TinyModel
from flax import nnx
from scipy import ndimage

from xmodality_lite.reconstruction import (
    nonconstant_span,
    resample_slices,
    translate_file,
    translate_volume,
)
from xmodality_lite.translation import translate_slices


class Identity(nnx.Module):
    """A 'regression model' returning its input: the pipeline's own arithmetic in isolation."""

    kind = "regression"

    def __call__(self, tof):
        return tof


def tof_volume(shape=(20, 18, 9), seed=0):
    """uint16 TOF with two constant slices at the start and one at the end of the last axis."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 900, size=shape).astype(np.uint16)
    vol[..., :2], vol[..., -1] = 0, 7
    affine = np.diag([0.5, 0.6, 0.8, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    img = nib.Nifti1Image(vol, affine)
    img.set_data_dtype(np.uint16)
    return img


def test_nonconstant_span():
    vol = np.ones((4, 4, 6))
    vol[1, 2, 2], vol[0, 0, 4] = 3, -1
    assert nonconstant_span(vol) == slice(2, 5)
    assert nonconstant_span(np.zeros((2, 2, 3))) == slice(0, 0)


@pytest.mark.parametrize(("src", "dst"), [(37, 32), (32, 37), (18, 18)])
def test_resample_hits_the_exact_shape(src, dst):
    img = np.random.default_rng(0).normal(size=(2, src, src + 3)).astype(np.float32)
    out = resample_slices(img, (dst, dst + 1))
    assert out.shape == (2, dst, dst + 1)
    expect = ndimage.zoom(img[1], (dst / src, (dst + 1) / (src + 3)), order=3, mode="nearest")
    np.testing.assert_allclose(out[1], expect, atol=1e-6)


def test_translate_slices_is_independent_of_batch_size():
    model = TinyModel(rngs=nnx.Rngs(0))
    x = np.tanh(np.random.default_rng(0).normal(size=(5, 8, 8, 1))).astype(np.float32)
    a = translate_slices(model, x, sampler="ddpm", steps=2, batch_size=2, seed=1, progress=False)
    b = translate_slices(model, x, sampler="ddpm", steps=2, batch_size=5, seed=1, progress=False)
    c = translate_slices(model, x, sampler="ddpm", steps=2, batch_size=5, seed=2, progress=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and np.abs(a).max() <= 1 and not np.array_equal(a, c)


def test_regression_is_one_forward_pass():
    model = TinyModel("regression", rngs=nnx.Rngs(0))
    x = np.tanh(np.random.default_rng(1).normal(size=(3, 8, 8, 1))).astype(np.float32)
    got = translate_slices(model, x, batch_size=2, progress=False)
    np.testing.assert_allclose(got, np.clip(model(x), -1, 1), atol=1e-6)


def test_translate_volume_keeps_grid_and_hu_window(tmp_path):
    tof = tof_volume()
    out = translate_volume(TinyModel(rngs=nnx.Rngs(0)), tof, sampler="ddim", steps=2,
                           batch_size=4, image_size=16, progress=False, profile="smoke")
    data = out.get_fdata()
    assert out.shape == tof.shape and np.array_equal(out.affine, tof.affine)
    assert out.get_data_dtype() == np.float32  # not the TOF's uint16 (facts §10)
    assert data.min() >= -50 and data.max() <= 350
    np.testing.assert_array_equal(data[..., [0, 1, -1]], -50.0)  # stripped, not hallucinated
    assert data[..., 2:-1].std() > 0
    saved = translate_file(TinyModel(rngs=nnx.Rngs(0)), _save(tof, tmp_path), tmp_path / "o.nii.gz",
                           sampler="ddim", steps=2, batch_size=4, image_size=16, progress=False,
                           profile="smoke")
    back = nib.load(tmp_path / "o.nii.gz")
    np.testing.assert_array_equal(back.get_fdata(), saved.get_fdata())
    np.testing.assert_allclose(back.affine, tof.affine, atol=1e-6)  # NIfTI stores float32


def _save(img, folder):
    nib.save(img, folder / "tof.nii.gz")
    return folder / "tof.nii.gz"


def test_identity_model_gives_windowed_minmax():
    """Without resampling, HU = (minmax(slice) + 1)·200 − 50 exactly (paper §3.1, §3.6)."""
    tof = tof_volume(shape=(16, 16, 9))
    out = translate_volume(Identity(), tof, image_size=16, batch_size=3, progress=False,
                           profile="smoke").get_fdata()
    vol = tof.get_fdata()[..., 2:-1]
    lo, hi = vol.min(axis=(0, 1)), vol.max(axis=(0, 1))
    np.testing.assert_allclose(out[..., 2:-1], (2 * (vol - lo) / (hi - lo)) * 200 - 50, atol=1e-3)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        translate_volume(Identity(), tmp_path / "missing.nii.gz", progress=False)
    with pytest.raises(ValueError, match="tof_slices must be"):
        translate_slices(Identity(), np.zeros((2, 8, 8)), progress=False)
    with pytest.raises(ValueError, match="unknown sampler"):
        translate_slices(TinyModel(rngs=nnx.Rngs(0)), np.zeros((1, 8, 8, 1)), sampler="dpm",
                         progress=False)
