"""Find TOF-MRA / CTA pairs in a TopCoW folder (paper §3.1; 2023 and 2024 editions).

TopCoW (Yang et al., arXiv 2312.17670) is not redistributed with this project. Download it
yourself and point ``$XMODALITY_DATA`` at the folder that holds ``imagesTr/``.

File names (nnU-Net style, ``_0000`` = channel suffix; labels drop it):

* 2023: ``imagesTr/topcow_{ct|mr}_{whole|roi}_NNN_0000.nii.gz``, labels in ``mul_labelsTr/``;
* 2024: ``imagesTr/topcow_{ct|mr}_NNN_0000.nii.gz``, labels in ``cow_seg_labelsTr/``;
* a TOF already registered to its CTA, as Koch et al. used it:
  ``topcow_mr_whole_016_0000_Warped.nii.gz`` (the ANTs ``{prefix}Warped`` name). It is
  preferred over the unregistered TOF of the same id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xmodality_lite.io import NIFTI_SUFFIXES, load_nifti

DATA_ENV_VAR = "XMODALITY_DATA"

DOWNLOAD_HELP = (
    "TopCoW is not shipped with xmodality_lite. Download it after registering at "
    "https://topcow23.grand-challenge.org/data/ (2023 edition, used by Koch et al.) or from "
    "Zenodo, doi 10.5281/zenodo.15692630 (2024 release, TopCoW2024_Data_Release.zip), unpack "
    f"it and set ${DATA_ENV_VAR} to the folder that holds imagesTr/. Terms of use: credit the "
    "source (the TopCoW challenge paper, Yang et al., arXiv 2312.17670); commercial use needs "
    "prior permission from the data owner (University Hospital Zurich); never redistribute "
    "the images."
)

Edition = Literal["2023", "2024"]

# one regex per edition; group names are shared so the pairing code is edition-agnostic
_IMAGE_PATTERNS: dict[str, re.Pattern] = {
    "2023": re.compile(r"^topcow_(?P<mod>mr|ct)_(?P<region>whole|roi)_(?P<id>\d{3})_0000"
                       r"(?P<warped>_Warped)?\.nii(\.gz)?$"),
    "2024": re.compile(r"^topcow_(?P<mod>mr|ct)_(?P<id>\d{3})_0000(?P<warped>_Warped)?\.nii(\.gz)?$"),
}
_LABEL_DIRS = {"2023": "mul_labelsTr", "2024": "cow_seg_labelsTr"}


class TopCowLayoutError(ValueError):
    """A TopCoW folder that cannot be paired; the message lists every problem found."""


@dataclass(frozen=True)
class TopCowPair:
    """One patient: TOF-MRA (moving) and CTA (fixed) paths, plus multi-class labels if present."""

    id: str  # three-digit TopCoW case id, e.g. "016"
    tof: Path
    cta: Path
    edition: Edition
    registered: bool  # True when ``tof`` is an ``_Warped`` TOF already on the CTA grid
    tof_label: Path | None = None
    cta_label: Path | None = None


def data_root() -> Path:
    """The TopCoW folder named by ``$XMODALITY_DATA``; a clear error if unset or missing."""
    value = os.environ.get(DATA_ENV_VAR)
    if not value:
        raise FileNotFoundError(f"${DATA_ENV_VAR} is not set. {DOWNLOAD_HELP}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"${DATA_ENV_VAR}={value!r} is not a folder. {DOWNLOAD_HELP}")
    return root


def _images_dir(root: Path) -> Path:
    """``root/imagesTr``, ``root`` itself, or ``root/<release>/imagesTr`` (first that exists)."""
    candidates = [root / "imagesTr", root, *sorted(root.glob("*/imagesTr"))]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("topcow_*")):
            return folder
    return root / "imagesTr"


def _label_path(images: Path, edition: str, mod: str, region: str | None, case: str) -> Path | None:
    stem = f"topcow_{mod}_{region}_{case}" if region else f"topcow_{mod}_{case}"
    for suffix in NIFTI_SUFFIXES:
        path = images.parent / _LABEL_DIRS[edition] / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def find_pairs(root: str | os.PathLike | None = None, *, region: str = "whole") -> list[TopCowPair]:
    """All TOF/CTA pairs under ``root`` (default :func:`data_root`), sorted by id.

    ``region`` picks the 2023 crop (``whole`` as in Koch et al., or ``roi``); 2024 has none.
    Raises :class:`TopCowLayoutError` listing every problem (missing partner, non-NIfTI or
    unrecognised file, empty folder) rather than silently dropping cases.
    """
    root = data_root() if root is None else Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"TopCoW folder {root} does not exist. {DOWNLOAD_HELP}")
    images = _images_dir(root)
    files = sorted(p for p in images.glob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise TopCowLayoutError(f"no TopCoW images under {root} (looked in {images}). {DOWNLOAD_HELP}")

    problems: list[str] = []
    found: dict[tuple[str, str], dict[str, Path]] = {}  # (edition, id) -> {"ct"|"mr"|"mr_warped": path}
    for path in files:
        if not path.name.endswith(NIFTI_SUFFIXES):
            problems.append(f"{path.name}: not a NIfTI file (expected .nii or .nii.gz)")
            continue
        edition, match = next(((ed, m) for ed, pat in _IMAGE_PATTERNS.items()
                               if (m := pat.match(path.name))), (None, None))
        if match is None:
            problems.append(f"{path.name}: unknown layout (expected topcow_{{ct|mr}}[_whole|_roi]_NNN_0000.nii.gz)")
            continue
        if match.groupdict().get("region", region) != region:
            continue
        key = "mr_warped" if (match["mod"] == "mr" and match["warped"]) else match["mod"]
        found.setdefault((edition, match["id"]), {})[key] = path

    if len({edition for edition, _ in found}) > 1:
        problems.append("files of both the 2023 and 2024 editions in one folder; keep one edition")
    pairs = []
    for (edition, case), paths in sorted(found.items(), key=lambda item: item[0][1]):
        tof = paths.get("mr_warped", paths.get("mr"))
        if tof is None or "ct" not in paths:
            missing = "TOF-MRA (topcow_mr_...)" if tof is None else "CTA (topcow_ct_...)"
            problems.append(f"id {case}: missing partner {missing}")
            continue
        reg = region if edition == "2023" else None
        pairs.append(TopCowPair(
            id=case, tof=tof, cta=paths["ct"], edition=edition, registered="mr_warped" in paths,
            tof_label=_label_path(images, edition, "mr", reg, case),
            cta_label=_label_path(images, edition, "ct", reg, case),
        ))
    if problems or not pairs:
        problems = problems or [f"no {region!r} TOF/CTA pair found"]
        raise TopCowLayoutError(f"TopCoW folder {images} has problems:\n  - " + "\n  - ".join(problems)
                                + f"\n{DOWNLOAD_HELP}")
    return pairs


def validate_pair(pair: TopCowPair) -> None:
    """Check both images (and labels) exist, are readable 3-D NIfTI, and carry the same id."""
    problems = []
    for role, path in [("tof", pair.tof), ("cta", pair.cta),
                       ("tof_label", pair.tof_label), ("cta_label", pair.cta_label)]:
        if path is None:
            continue
        if f"_{pair.id}" not in Path(path).name:
            problems.append(f"{role} {path}: file name does not carry id {pair.id}")
        try:
            load_nifti(path, ndim=3)
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"{role}: {err}")
    if problems:
        raise TopCowLayoutError(f"pair {pair.id} is invalid:\n  - " + "\n  - ".join(problems))
