"""Preprocessing of paired TOF-MRA / CTA volumes into training slices (paper §3.1).

Why a module of re-exports: the paper's step is called "preprocessing", and a reader who knows
the paper looks for ``xl.preprocessing`` (the lessons, the CLI's ``preprocess`` command and
:mod:`xmodality_lite.evaluation` import from here). The code lives where each part belongs, once:
the HU window in :mod:`xmodality_lite.config`, per-slice operations (window, min-max, filter,
crop) in :mod:`xmodality_lite.data.slices`, and the patient split, cache and batches in
:mod:`xmodality_lite.data.dataset`. Every name here is that module's object, not a copy.
"""

from xmodality_lite.config import HU_WINDOW
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
