"""Paired slice dataset: patient split, cached npz slices, and a resumable batch iterator (paper §3.1).

Cache layout (``<cache_dir>/<name>/``): ``{train,val,test}.npz`` with ``tof``, ``cta`` [N, H, W]
float32 in [−1, 1] (TOF per-slice min-max, CTA HU-windowed), ``hw`` [N, 2] (valid size before
padding to the split's largest slice), ``subject`` and ``index`` (axial slice number), plus
``manifest.json`` (profile, seeds, source hashes, slice counts, file hashes). The manifest is
removed first and written last, so a crash mid-build leaves no cache that looks valid.

Asked for some splits only (``splits=("test",)``: evaluation needs no training patients), only
their patients are generated, registered and sliced, into ``<name>-<splits>/`` with ``built``
in its manifest. Every patient's split follows from the ids alone (:func:`split_patients`), so
a split built alone equals the same split of the whole dataset; a whole dataset already cached
serves any of its splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from xmodality_lite.config import CACHE_ENV_VAR as CACHE_ENV_VAR  # re-exported
from xmodality_lite.config import Profile, get_profile, user_cache_dir
from xmodality_lite.data.slices import (
    minmax_scale,
    random_crop,
    resample_slices,
    slice_filter,
    slice_volume,
    window_hu,
)
from xmodality_lite.io import atomic_path, atomic_write_text, file_sha256, text_sha256

SPLITS = ("train", "val", "test")
_FORMAT = 1


def default_cache_dir() -> Path:
    """``$XMODALITY_CACHE``, else the platform's per-user cache folder; never inside the package.

    Linux ``$XDG_CACHE_HOME/xmodality_lite`` (default ``~/.cache/xmodality_lite``), macOS
    ``~/Library/Caches/xmodality_lite``, Windows ``%LOCALAPPDATA%\\xmodality_lite\\Cache``; an
    installed package's folder may be read-only and is shared by every user. One helper
    (:func:`xmodality_lite.config.user_cache_dir`) for every cache of the package.
    """
    return user_cache_dir()


def split_patients(ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 42) -> dict[str, list[str]]:
    """Seeded patient-level split, so no patient's slices reach two sets.

    As the reference: shuffle, train = ⌊f_train·N⌋, val = ⌊f_val/(f_val+f_test)·rest⌋, test = the
    rest (89 patients → 62/13/14, paper §3.1). With few patients each set with a positive
    fraction still gets one patient, taken from train.
    """
    ids = sorted(map(str, ids))
    if len(set(ids)) != len(ids):
        raise ValueError("ids: patient ids must be unique")
    f = np.asarray(fractions, float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions: expected three non-negative numbers summing to 1, got {fractions}")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_train = int(np.floor(f[0] * len(ids)))
    rest = len(ids) - n_train
    n_val = int(np.floor(f[1] / (f[1] + f[2]) * rest)) if f[1] + f[2] > 0 else 0
    n_test = rest - n_val
    for need in (1, 2):  # give val, then test, one patient if it has a fraction but none
        counts = [n_train, n_val, n_test]
        if f[need] > 0 and counts[need] == 0 and n_train > 1:
            n_train -= 1
            n_val, n_test = (n_val + 1, n_test) if need == 1 else (n_val, n_test + 1)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}


@dataclass(frozen=True)
class VolumePair:
    """One patient's TOF already on the CTA grid (registered) and the CTA in HU."""

    id: str
    tof: np.ndarray  # [X, Y, Z] TOF on the CTA grid, any units
    cta: np.ndarray  # [X, Y, Z] HU
    source: str | None = None  # recipe that fully determines the data; else the voxels' hash

    def sha256(self) -> str:
        if self.source is not None:
            return text_sha256(self.source)
        h = hashlib.sha256()
        for a in (self.tof, self.cta):
            a = np.ascontiguousarray(a, np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class SliceSet:
    """The slices of one split: ``tof``, ``cta`` [N, H, W] in [−1, 1]; ``hw`` [N, 2] valid sizes."""

    tof: np.ndarray
    cta: np.ndarray
    hw: np.ndarray
    subject: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.tof)


def _slices_of(pair: VolumePair, d) -> tuple[dict, dict]:
    """Filtered, normalised axial slices of one patient and the count of each filter reason."""
    tof, cta = np.asarray(pair.tof, np.float32), np.asarray(pair.cta, np.float32)
    if tof.shape != cta.shape or tof.ndim != 3:
        raise ValueError(f"pair {pair.id}: tof and cta must be 3-D on one grid, got {tof.shape}, {cta.shape}")
    mean = float(tof.mean())  # the reference's z-score then "> 0" = above the volume mean
    out = {"tof": [], "cta": [], "index": []}
    reasons: dict[str, int] = {}
    for k, (s, t) in enumerate(zip(slice_volume(tof), slice_volume(cta), strict=True)):
        dec = slice_filter(s, t, tof_threshold=mean, min_pixels=d.min_foreground_px, min_dice=d.min_overlap_dice)
        reasons[dec.reason] = reasons.get(dec.reason, 0) + 1
        if dec.keep:
            cta_w = window_hu(t, d.hu_window)
            if d.slice_size is not None:  # as translate_volume: resample, then min-max the TOF
                size = (d.slice_size, d.slice_size)
                s = resample_slices(s[None], size)[0]
                cta_w = np.clip(resample_slices(cta_w[None], size)[0], -1.0, 1.0)
            out["tof"].append(minmax_scale(s))
            out["cta"].append(cta_w)
            out["index"].append(k)
    return out, reasons


def _stack(slices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    hw = np.array([s.shape for s in slices], np.int32).reshape(-1, 2)
    size = hw.max(axis=0) if len(slices) else np.zeros(2, np.int32)
    out = np.full((len(slices), *size), -1.0, np.float32)
    for i, s in enumerate(slices):
        out[i, : s.shape[0], : s.shape[1]] = s
    return out, hw


def slice_manifest(profile: Profile, sources: dict[str, str]) -> dict:
    """What a sliced dataset is made from: profile, data settings, each patient's split
    (:func:`split_patients` of all ids) and source hash; its cache is valid while this matches."""
    d = profile.data
    return {"format": _FORMAT, "profile": profile.name, "data": profile.to_dict()["data"],
            "seeds": {"split": d.seed}, "splits": split_patients(list(sources), d.split, d.seed),
            "sources": sources}


def check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    """``splits`` in the canonical order (train, val, test); an unknown or empty one is an error."""
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if not splits or set(splits) - set(SPLITS):
        raise ValueError(f"splits: expected a non-empty subset of {SPLITS}, got {splits}")
    return tuple(s for s in SPLITS if s in splits)


def build_slice_dataset(pairs: Sequence[VolumePair], profile: Profile | str | None = None, *,
                        cache_dir: str | os.PathLike | None = None, name: str | None = None,
                        progress: bool = True, splits: Sequence[str] = SPLITS) -> dict[str, SliceSet]:
    """Split patients, slice, filter and normalise; cached, rebuilt when the manifest changes.

    Every patient is given (the split depends on all ids), but only those of ``splits`` are
    sliced: the volumes of the others are never read and may be ``None``.
    """
    profile = get_profile(profile)
    d = profile.data
    wanted = check_splits(splits)
    if not pairs:
        raise ValueError("pairs: need at least one registered TOF/CTA pair")
    by_id = {p.id: p for p in pairs}
    if len(by_id) != len(pairs):
        raise ValueError("pairs: patient ids must be unique")
    manifest = slice_manifest(profile, {p.id: p.sha256() for p in pairs})
    folder = Path(cache_dir or default_cache_dir()) / (name or profile.name)
    cached = load_cached_splits(folder, manifest, wanted)
    if cached is not None:
        return cached
    if wanted != SPLITS:
        folder = _partial_folder(folder, wanted)
        manifest["built"] = list(wanted)
    splits = manifest["splits"]

    manifest.update(slices={}, dropped={}, files={})
    result = {}
    bar = tqdm(total=sum(len(splits[s]) for s in wanted), desc="slicing", disable=not progress)
    for split in wanted:
        parts = {"tof": [], "cta": [], "index": [], "subject": []}
        for pid in splits[split]:
            out, reasons = _slices_of(by_id[pid], d)
            for key in ("tof", "cta", "index"):
                parts[key] += out[key]
            parts["subject"] += [pid] * len(out["index"])
            manifest["dropped"][pid] = {r: n for r, n in reasons.items() if r != "kept"}
            bar.update()
        tof, hw = _stack(parts["tof"])
        cta, _ = _stack(parts["cta"])
        result[split] = SliceSet(tof, cta, hw, np.array(parts["subject"], dtype=str),
                                 np.array(parts["index"], np.int32))
    bar.close()
    # Write only once every pair has been sliced: a bad pair must not leave files behind.
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)  # invalid until the last write succeeds
    for split in wanted:
        path = folder / f"{split}.npz"
        with atomic_path(path) as tmp:
            np.savez(tmp, **vars(result[split]))
        manifest["slices"][split] = len(result[split])
        manifest["files"][path.name] = file_sha256(path)
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return result


def _partial_folder(folder: Path, splits: tuple[str, ...]) -> Path:
    return folder.with_name(f"{folder.name}-{'+'.join(splits)}")


def load_cached_splits(folder: Path, manifest: dict,
                       splits: Sequence[str] = SPLITS) -> dict[str, SliceSet] | None:
    """``splits`` from the cache of the whole dataset in ``folder``, else from the cache of
    those splits alone (``<folder>-<splits>``); ``None`` if neither matches ``manifest``."""
    splits = check_splits(splits)
    cached = _load_cache(folder, manifest, splits)
    if cached is None and splits != SPLITS:
        cached = _load_cache(_partial_folder(folder, splits), manifest, splits)
    return cached


def _load_cache(folder: Path, manifest: dict, splits: tuple[str, ...]) -> dict[str, SliceSet] | None:
    try:
        stored = json.loads((folder / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    expected = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "built"}))
    if any(stored.get(k) != v for k, v in expected.items()):
        return None
    if set(splits) - set(stored.get("built", SPLITS)):
        return None
    files = {f"{s}.npz": stored.get("files", {}).get(f"{s}.npz") for s in splits}
    if any(not (folder / f).exists() or file_sha256(folder / f) != h for f, h in files.items()):
        return None
    out = {}
    for split in splits:
        with np.load(folder / f"{split}.npz") as z:
            out[split] = SliceSet(**{k: z[k] for k in z.files})
    return out


class BatchIterator:
    """Seeded NHWC batches of random crops; the batch at step ``k`` depends only on (seed, k).

    Patients' slices are visited in a fresh permutation each epoch (sampling without
    replacement, as the reference's shuffled index sampler); resuming at step ``k`` after a
    crash yields exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, dataset: SliceSet, batch_size: int, seed: int, image_size: int):
        if len(dataset) == 0:
            raise ValueError("dataset: no slices (did the filter drop them all?)")
        if batch_size < 1 or image_size < 1:
            raise ValueError(f"batch_size, image_size: expected positive, got {batch_size}, {image_size}")
        self.dataset, self.batch_size, self.seed, self.image_size = dataset, batch_size, seed, image_size

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.dataset))

    def batch_at(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(tof, cta), each [B, S, S, 1] float32 in [−1, 1]."""
        if step < 0:
            raise ValueError(f"step: expected >= 0, got {step}")
        n = len(self.dataset)
        positions = step * self.batch_size + np.arange(self.batch_size)
        epochs = positions // n
        perms = {e: self._permutation(e) for e in np.unique(epochs)}
        idx = [perms[e][p % n] for e, p in zip(epochs, positions, strict=True)]
        rng = np.random.default_rng([self.seed, 1, step])
        crops = []
        for i in idx:
            h, w = self.dataset.hw[i]
            crops.append(random_crop(rng, self.dataset.tof[i, :h, :w], self.dataset.cta[i, :h, :w],
                                     self.image_size))
        tof, cta = (np.stack(x)[..., None] for x in zip(*crops, strict=True))
        return tof, cta

    def iterate(self, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless batches from ``start_step`` on."""
        step = start_step
        while True:
            yield self.batch_at(step)
            step += 1

    __iter__ = iterate


def resample_with_known_transform(pair) -> np.ndarray:
    """A phantom TOF on its CTA grid through the true misalignment, cubic B-spline (order 3)."""
    from scipy import ndimage

    shape, a_ct, a_tof = pair.cta.shape, pair.cta.affine, pair.tof.affine
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3)
    world_tof = pair.transform.map_points(ijk @ a_ct[:3, :3].T + a_ct[:3, 3])  # CTA → TOF world
    coords = (world_tof - a_tof[:3, 3]) @ np.linalg.inv(a_tof[:3, :3]).T
    tof = np.asarray(pair.tof.dataobj, np.float32)
    return ndimage.map_coordinates(tof, coords.T, order=3, mode="constant", cval=0.0).reshape(shape)


def phantom_dataset(profile: Profile | str | None = None, *, register: bool = False,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True,
                    splits: Sequence[str] = SPLITS) -> dict[str, SliceSet]:
    """``profile.data.n_subjects`` phantom patients → sliced, filtered, split and cached.

    ``register=False`` (default, fast) puts each TOF on its CTA grid through the phantom's
    known transform; ``register=True`` runs the ANTs SyN registration the paper uses (§3.1).
    ``splits`` (default all three): generate and return only these, e.g. ``("test",)`` for an
    evaluation, which then makes 3 of the cpu profile's 16 patients.
    """
    from xmodality_lite.data import anatomy, phantom
    from xmodality_lite.data.phantom import make_pair
    from xmodality_lite.registration import register_tof_to_cta

    profile = get_profile(profile)
    wanted = check_splits(splits)
    code = "".join(file_sha256(Path(m.__file__)) for m in (anatomy, phantom, _this_module()))
    seeds = [profile.data.seed + i for i in range(profile.data.n_subjects)]
    sources = {f"phantom{s:04d}": f"make_pair({s}, {profile.name!r}) register={register} code={code}"
               for s in seeds}
    name = f"phantom-{profile.name}-{'registered' if register else 'known'}"
    folder = Path(cache_dir or default_cache_dir()) / name
    manifest = slice_manifest(profile, {k: text_sha256(v) for k, v in sources.items()})
    cached = load_cached_splits(folder, manifest, wanted)
    if cached is not None:  # skip generating the phantoms at all
        return cached
    needed = {pid for split in wanted for pid in manifest["splits"][split]}
    pairs = []
    for (pid, source), seed in zip(tqdm(sources.items(), desc="phantom", disable=not progress), seeds, strict=True):
        if pid not in needed:  # a patient of another split: its id and recipe only
            pairs.append(VolumePair(pid, None, None, source))
            continue
        p = make_pair(seed, profile)
        if register:
            tof = register_tof_to_cta(p.tof, p.cta).warped.get_fdata(dtype=np.float32)
        else:
            tof = resample_with_known_transform(p)
        pairs.append(VolumePair(pid, tof, np.asarray(p.cta.dataobj, np.float32), source))
    return build_slice_dataset(pairs, profile, cache_dir=cache_dir, name=name, progress=progress,
                               splits=wanted)


def default_dataset(profile: Profile | str | None = None, *, data: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True,
                    splits: Sequence[str] = SPLITS) -> dict[str, SliceSet]:
    """The dataset that training, sampling and evaluation use by default: the TopCoW folder
    ``data`` (else ``$XMODALITY_DATA``), registered and sliced by
    :func:`~xmodality_lite.data.topcow.topcow_dataset`, when either is given; else the phantom.
    Only the patients of ``splits`` are made (the phantom) or registered (TopCoW)."""
    from xmodality_lite.data.topcow import DATA_ENV_VAR, topcow_dataset

    root = data if data is not None else os.environ.get(DATA_ENV_VAR) or None
    if root is None:
        return phantom_dataset(profile, cache_dir=cache_dir, progress=progress, splits=splits)
    return topcow_dataset(root, profile, cache_dir=cache_dir, progress=progress, splits=splits)


def _this_module():
    import sys

    return sys.modules[__name__]


__all__ = ["SPLITS", "BatchIterator", "SliceSet", "VolumePair", "build_slice_dataset", "check_splits",
           "default_cache_dir", "load_cached_splits", "slice_manifest",
           "default_dataset", "phantom_dataset", "resample_with_known_transform", "split_patients"]
