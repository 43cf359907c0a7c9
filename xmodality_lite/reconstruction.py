"""Volume reconstruction (paper §3.6): a TOF-MRA volume → a synthetic CTA volume in HU.

The models are 2-D, so the volume is translated axial slice by axial slice:

1. strip constant axial slices at both ends (nothing to translate; restored as −50 HU),
2. resample each slice in-plane to the model's image size with a prefiltered cubic spline,
3. min-max each slice to [−1, 1] (after resampling, so the model sees exactly [−1, 1] as in
   training),
4. translate in batches (:func:`~xmodality_lite.translation.translate_slices`),
5. resample back to the exact original in-plane shape (cubic spline), clip to [−1, 1],
6. HU = (y + 1)·200 − 50, i.e. the window [−50, 350] (paper §3.1),
7. write float32 on the TOF's grid and affine; the on-disk dtype is set explicitly, not
   inherited from the TOF header (the reference's ``inference.py`` inherits it: a uint16 TOF
   gives a uint16 CTA).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from flax import nnx

from xmodality_lite.config import HU_WINDOW, get_profile
from xmodality_lite.data.slices import minmax_scale, resample_slices, unwindow_hu
from xmodality_lite.io import check_output_path, load_nifti, save_nifti
from xmodality_lite.translation import translate_slices

BACKGROUND_HU = HU_WINDOW[0]  # the bottom of the HU window: what stripped slices are filled with


def nonconstant_span(volume: np.ndarray) -> slice:
    """The axial range (last axis) left after stripping constant slices from both ends.

    A slice is constant when every voxel is close to its minimum (as the reference's strip).
    All-constant volumes give an empty slice.
    """
    flat = volume.reshape(-1, volume.shape[-1])
    constant = np.all(np.isclose(flat, flat.min(axis=0)), axis=0)
    keep = np.flatnonzero(~constant)
    return slice(0, 0) if keep.size == 0 else slice(int(keep[0]), int(keep[-1]) + 1)


def translate_volume(model: nnx.Module, tof: nib.Nifti1Image | str | os.PathLike, *,
                     sampler: str | None = None, steps: int | None = None,
                     batch_size: int | None = None, image_size: int | None = None,
                     seed: int | None = None, progress: bool = True,
                     profile=None) -> nib.Nifti1Image:
    """Synthetic CTA (float32 HU in [−50, 350]) on the grid and affine of the TOF volume.

    ``image_size`` is the side the slices are resampled to (default: the profile's training
    crop size, the model's native scale). Sampling settings default to ``profile.sample``.
    """
    img = load_nifti(tof) if isinstance(tof, (str, os.PathLike)) else tof
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image) or img.ndim != 3:
        raise ValueError(f"tof must be a 3-D NIfTI image; got {type(img).__name__} "
                         f"of shape {getattr(img, 'shape', None)}")
    if 0 in img.shape:
        raise ValueError(f"tof has an empty axis: shape {img.shape}; expected a 3-D volume")
    if img.get_data_dtype().kind not in "iuf":
        raise ValueError(f"tof voxels must be real numbers; got dtype {img.get_data_dtype()}")
    prof = get_profile(profile)
    size = prof.image_size if image_size is None else image_size
    if size < 1:
        raise ValueError(f"image_size must be >= 1; got {size}")
    volume = np.asarray(img.get_fdata(dtype=np.float32))
    if not np.isfinite(volume).all():
        raise ValueError("tof: volume has non-finite voxels")
    h, w, _ = volume.shape
    out = np.full(volume.shape, BACKGROUND_HU, np.float32)
    span = nonconstant_span(volume)
    if span.stop > span.start:
        slices = np.moveaxis(volume[..., span], -1, 0)  # [N, H, W]
        small = minmax_scale(resample_slices(slices, (size, size), progress=progress), (-2, -1))
        y = translate_slices(model, small[..., None], sampler=sampler, steps=steps,
                             batch_size=batch_size, seed=seed, progress=progress, profile=prof)
        y = np.clip(resample_slices(y[..., 0], (h, w), progress=progress), -1.0, 1.0)
        out[..., span] = np.moveaxis(unwindow_hu(y, prof.data.hu_window), 0, -1)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    result = type(img)(out, img.affine, header=header)  # NIfTI-1 or NIfTI-2, as the input
    result.header.set_slope_inter(1.0, 0.0)
    return result


def translate_file(model: nnx.Module, tof_path: str | os.PathLike, out_path: str | os.PathLike,
                   *, overwrite: bool = True, **kwargs) -> nib.Nifti1Image:
    """:func:`translate_volume` from a NIfTI file to a NIfTI file (written atomically).

    The output path is checked before the translation starts (a NIfTI name in a writable
    folder; not an existing file unless ``overwrite``), so a bad path fails in a second, not
    after minutes of sampling.
    """
    check_output_path(out_path, overwrite=overwrite, nifti=True)
    result = translate_volume(model, load_nifti(tof_path), **kwargs)
    save_nifti(result.get_fdata(dtype=np.float32), out_path, like=result, dtype=np.float32,
               overwrite=overwrite)
    return result
