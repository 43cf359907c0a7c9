"""Preprocessing of paired TOF-MRA / CTA volumes into training slices (paper §3.1).

The public face of :mod:`xmodality_lite.data.slices` (per-slice operations) and
:mod:`xmodality_lite.data.dataset` (split, cache, batches).
"""

from xmodality_lite.data.dataset import (
    BatchIterator,
    SliceSet,
    VolumePair,
    build_slice_dataset,
    default_cache_dir,
    default_dataset,
    phantom_dataset,
    resample_with_known_transform,
    split_patients,
)
from xmodality_lite.data.slices import (
    HU_WINDOW,
    SliceDecision,
    minmax_scale,
    random_crop,
    slice_filter,
    slice_volume,
    unwindow_hu,
    window_hu,
)

__all__ = ["HU_WINDOW", "BatchIterator", "SliceDecision", "SliceSet", "VolumePair",
           "build_slice_dataset", "default_cache_dir", "default_dataset", "minmax_scale",
           "phantom_dataset",
           "random_crop", "resample_with_known_transform", "slice_filter", "slice_volume",
           "split_patients", "unwindow_hu", "window_hu"]
