"""TopCoW on disk (paper §3.1; 2023 and 2024 editions): find and check the TOF-MRA / CTA pairs,
register every TOF onto its CTA, and slice them into the cached dataset (:func:`topcow_dataset`).

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

import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from xmodality_lite.config import Profile, get_profile, user_cache_dir
from xmodality_lite.io import (
    NIFTI_SUFFIXES,
    atomic_write_text,
    load_nifti,
    save_nifti,
    text_sha256,
)

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


def _patient(path: Path) -> str:
    """``topcow_ct_whole_007`` from ``topcow_ct_whole_007_0000.nii.gz``: how a patient is named."""
    return path.name.split("_0000")[0]


def _unreadable(pair: TopCowPair) -> list[str]:
    """Header-level problems of a pair's images (cheap: no voxels are read)."""
    problems, images = [], {}
    for role, path in (("TOF", pair.tof), ("CTA", pair.cta)):
        try:
            images[role] = load_nifti(path, ndim=3, check_finite=False)
        except (OSError, ValueError) as err:
            problems.append(f"{role} unreadable: {str(err).replace(str(path), path.name)}")
    if pair.registered and len(images) == 2:
        tof, cta = images["TOF"], images["CTA"]
        if tof.shape != cta.shape or not np.allclose(tof.affine, cta.affine, atol=1e-3):
            problems.append(f"registered TOF grid {tof.shape} is not the CTA grid {cta.shape}")
    return problems


def find_pairs(root: str | os.PathLike | None = None, *, region: str = "whole",
               check_files: bool = False) -> list[TopCowPair]:
    """All TOF/CTA pairs under ``root`` (default :func:`data_root`), sorted by id.

    ``region`` picks the 2023 crop (``whole`` as in Koch et al., or ``roi``); 2024 has none.
    With ``check_files`` every image's header is read too (a 3-D NIfTI; an ``_Warped`` TOF on
    its CTA's grid). Raises one :class:`TopCowLayoutError` listing every problem (patients
    without a partner or with unreadable files, non-NIfTI or unrecognised files, an empty
    folder) rather than silently dropping cases, so a long run never fails half-way.
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
    pairs, incomplete = [], {}  # incomplete: patient → why
    for (edition, case), paths in sorted(found.items(), key=lambda item: item[0][1]):
        tof = paths.get("mr_warped", paths.get("mr"))
        if tof is None or "ct" not in paths:
            incomplete[_patient(tof or paths["ct"])] = "no TOF file" if tof is None else "no CTA file"
            continue
        reg = region if edition == "2023" else None
        pair = TopCowPair(
            id=case, tof=tof, cta=paths["ct"], edition=edition, registered="mr_warped" in paths,
            tof_label=_label_path(images, edition, "mr", reg, case),
            cta_label=_label_path(images, edition, "ct", reg, case),
        )
        if check_files and (why := _unreadable(pair)):
            incomplete[_patient(pair.cta)] = "; ".join(why)
            continue
        pairs.append(pair)
    if incomplete:
        n = len(incomplete)
        problems.insert(0, f"{n} patient{'s' * (n != 1)} incomplete: "
                        + ", ".join(f"{name} ({why})" for name, why in incomplete.items()))
    if problems or not pairs:
        if len(problems) == 1 and incomplete and pairs:  # the folder is right, some patients not
            raise TopCowLayoutError(f"TopCoW folder {images}: {problems[0]}")
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


# --- the dataset: register every pair, then slice (paper §3.1) -----------------------------------
REGISTERED_DIR = "topcow-registered"  # under the cache: one folder per patient and input version
WARPED = "tof_Warped.nii.gz"  # the TOF on the CTA grid (the ANTs {prefix}Warped name)
RECORD = "registration.json"  # written last: a folder without it is an unfinished registration


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def patient_source(pair: TopCowPair, *, type_of_transform: str = "SyN", seed: int = 42) -> str:
    """What determines a patient's registered TOF and slices: its two files (name, size and
    modification time, as ``make`` decides) and the registration settings."""
    how = "the given _Warped TOF" if pair.registered else f"ANTs {type_of_transform}, seed {seed}, bSpline"
    return (f"TopCoW {pair.edition} {pair.id}: tof {_file_key(pair.tof)}, cta {_file_key(pair.cta)}, "
            f"registered with {how}")


def registration_folder(pair: TopCowPair, *, cache_dir: str | os.PathLike | None = None,
                        type_of_transform: str = "SyN", seed: int = 42) -> Path:
    """``<cache>/topcow-registered/<edition>_<id>-<key>/``: the warped TOF and its transforms."""
    key = text_sha256(patient_source(pair, type_of_transform=type_of_transform, seed=seed))[:12]
    return Path(cache_dir or user_cache_dir()) / REGISTERED_DIR / f"{pair.edition}_{pair.id}-{key}"


def register_pairs(pairs: Sequence[TopCowPair], *, cache_dir: str | os.PathLike | None = None,
                   type_of_transform: str = "SyN", seed: int = 42, progress: bool = True,
                   workers: int | None = None) -> dict[str, Path]:
    """Each pair's TOF on its CTA grid, ``{id: NIfTI path}``, registering those not done yet.

    ANTs (:func:`~xmodality_lite.registration.register_tof_to_cta`, deterministic) writes the
    warped TOF and the transforms to :func:`registration_folder`, the record last, so an
    interrupted run resumes with the patients not recorded yet. An ``_Warped`` TOF is used as it
    is. A deterministic registration runs in a single-threaded process of its own, so
    ``workers`` of them (default: one per CPU core) run at once with the same results as one
    after the other; the first failure stops the rest and is raised.
    """
    from xmodality_lite.registration import register_tof_to_cta

    options = dict(cache_dir=cache_dir, type_of_transform=type_of_transform, seed=seed)
    todo = [p for p in pairs if not p.registered and not (registration_folder(p, **options) / RECORD).is_file()]

    def register(pair: TopCowPair) -> None:
        folder = registration_folder(pair, **options)
        res = register_tof_to_cta(load_nifti(pair.tof), load_nifti(pair.cta),
                                  type_of_transform=type_of_transform, seed=seed, out_dir=folder)
        save_nifti(res.warped.get_fdata(dtype=np.float32), folder / WARPED, like=res.warped)
        record = {"source": patient_source(pair, type_of_transform=type_of_transform, seed=seed),
                  "fwd": [p.name for p in res.fwd_transforms], "seconds": round(res.seconds, 2),
                  "inv": [p.name for p in res.inv_transforms]}
        atomic_write_text(folder / RECORD, json.dumps(record, indent=1))

    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected a positive number of parallel registrations, got {workers}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(len(todo), workers or cores))
    with (tqdm(total=len(todo), desc="registering TOF → CTA", disable=not progress or not todo) as bar,
          ThreadPoolExecutor(workers) as pool):  # each thread waits on one ANTs process
        running = [pool.submit(register, pair) for pair in todo]
        try:
            for done in as_completed(running):
                done.result()
                bar.update()
        finally:
            for future in running:
                future.cancel()  # after a failure: the ones not started yet
    return {p.id: p.tof if p.registered else registration_folder(p, **options) / WARPED for p in pairs}


def load_registration(pair: TopCowPair, **options):
    """The stored :class:`~xmodality_lite.registration.RegistrationResult` of ``pair`` (after
    :func:`register_pairs` with the same ``options``), e.g. for ``registration_error``."""
    from xmodality_lite.registration import RegistrationResult

    folder = registration_folder(pair, **options)
    if not (folder / RECORD).is_file():
        raise FileNotFoundError(f"patient {pair.id} is not registered yet (no {folder / RECORD})")
    record = json.loads((folder / RECORD).read_text())
    return RegistrationResult(warped=load_nifti(folder / WARPED), fixed=load_nifti(pair.cta),
                              fwd_transforms=[folder / n for n in record["fwd"]],
                              inv_transforms=[folder / n for n in record["inv"]],
                              seconds=record["seconds"], workdir=folder)


@dataclass(frozen=True)
class RegisteredVolumes:
    """A :class:`~xmodality_lite.data.dataset.VolumePair` read from disk when the slicer asks,
    so one patient at a time is in memory (a whole TopCoW CTA is ~300 MB as float32)."""

    id: str
    tof_path: Path  # on the CTA grid
    cta_path: Path
    source: str

    @property
    def tof(self) -> np.ndarray:  # [X, Y, Z] TOF on the CTA grid
        return np.asarray(load_nifti(self.tof_path, check_finite=False).dataobj, np.float32)

    @property
    def cta(self) -> np.ndarray:  # [X, Y, Z] HU
        return np.asarray(load_nifti(self.cta_path, check_finite=False).dataobj, np.float32)

    def sha256(self) -> str:
        return text_sha256(self.source)


def topcow_dataset(root: str | os.PathLike | None = None, profile: Profile | str | None = None, *,
                   region: str = "whole", cache_dir: str | os.PathLike | None = None,
                   type_of_transform: str = "SyN", seed: int = 42, progress: bool = True,
                   splits: Sequence[str] = ("train", "val", "test")):
    """TopCoW under ``root`` (default ``$XMODALITY_DATA``) as the sliced dataset, split by patient
    and cached, as :func:`~xmodality_lite.data.dataset.phantom_dataset` does for the phantom.

    1. find and check every pair: one error naming each incomplete or unreadable patient,
       before any work starts;
    2. register each TOF onto its CTA (:func:`register_pairs`, cached per patient);
    3. slice, filter, window, scale and split by patient
       (:func:`~xmodality_lite.data.dataset.build_slice_dataset`, cached per profile).

    ``splits`` (default all three): register and slice only the patients of these, e.g.
    ``("test",)`` to evaluate trained weights without registering the training patients.
    """
    from xmodality_lite.data.dataset import (
        build_slice_dataset,
        check_splits,
        load_cached_splits,
        slice_manifest,
    )

    profile = get_profile(profile)
    wanted = check_splits(splits)
    root = data_root() if root is None else Path(root).expanduser()
    pairs = find_pairs(root, region=region, check_files=True)
    options = dict(type_of_transform=type_of_transform, seed=seed)
    sources = {p.id: patient_source(p, **options) for p in pairs}
    name = f"topcow-{text_sha256(str(root.resolve()))[:8]}-{region}-{profile.name}"
    manifest = slice_manifest(profile, {pid: text_sha256(src) for pid, src in sources.items()})
    cached = load_cached_splits(Path(cache_dir or user_cache_dir()) / name, manifest, wanted)
    if cached is not None:
        return cached
    needed = {pid for split in wanted for pid in manifest["splits"][split]}
    warped = register_pairs([p for p in pairs if p.id in needed], cache_dir=cache_dir,
                            progress=progress, **options)
    volumes = [RegisteredVolumes(p.id, warped.get(p.id), p.cta, sources[p.id]) for p in pairs]
    return build_slice_dataset(volumes, profile, cache_dir=cache_dir, progress=progress,
                               name=name, splits=wanted)
