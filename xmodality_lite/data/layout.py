"""Write phantom patients in the TopCoW file layout (the 2023 and 2024 releases' folder and file
names), so the real loader runs on them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from xmodality_lite.data.phantom import make_pair
from xmodality_lite.io import save_nifti

# edition: (image name, multi-class label folder, binary label folder or None); NNN = case id
LAYOUTS = {
    "2023": ("topcow_{mod}_whole_{id}", "mul_labelsTr", "bin_labelsTr"),
    "2024": ("topcow_{mod}_{id}", "cow_seg_labelsTr", None),
}


def write_topcow_layout(out_dir: str | os.PathLike, n: int, seed: int, *, edition: str = "2023",
                        profile=None, progress: bool = True) -> list[Path]:
    """Write ``n`` phantom pairs (case ids 001…, phantom seed ``seed + i``) under ``out_dir``.

    Images go to ``imagesTr/<name>_0000.nii.gz`` (CTA int16 HU, TOF uint16), multi-class labels
    (uint8, TopCoW ids) to the edition's label folder without the ``_0000`` suffix, and for 2023
    binary masks to ``bin_labelsTr/``. Every file is written atomically. Returns the paths.
    A progress bar shows from three patients on, unless ``progress`` is False.
    """
    if edition not in LAYOUTS:
        raise ValueError(f"unknown TopCoW edition {edition!r}; choose one of {sorted(LAYOUTS)}")
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= 999:
        raise ValueError(f"n must be an integer in 1…999 (three-digit case ids), got {n!r}")
    stem, mul_dir, bin_dir = LAYOUTS[edition]
    root = Path(out_dir)
    for folder in ("imagesTr", mul_dir, bin_dir):
        if folder is not None:
            (root / folder).mkdir(parents=True, exist_ok=True)
    written = []
    for i in tqdm(range(n), desc=f"phantom TopCoW {edition}", disable=not progress or n < 3):
        pair = make_pair(seed + i, profile)
        for mod, image, labels in (("ct", pair.cta, pair.labels), ("mr", pair.tof, pair.tof_labels)):
            name = stem.format(mod=mod, id=f"{i + 1:03d}")
            lab = np.asarray(labels.dataobj)
            outputs = [(root / "imagesTr" / f"{name}_0000.nii.gz", np.asarray(image.dataobj), image),
                       (root / mul_dir / f"{name}.nii.gz", lab, labels)]
            if bin_dir is not None:
                outputs.append((root / bin_dir / f"{name}.nii.gz", (lab > 0).astype(np.uint8), labels))
            for path, data, like in outputs:
                save_nifti(data, path, like=like, dtype=data.dtype)
                written.append(path)
    return written
