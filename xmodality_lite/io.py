"""NIfTI and file I/O that keeps the affine and header, and never writes half a file; and
what identifies a file or the code that wrote it (sha256, git commit)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_output_path(path: str | os.PathLike, *, overwrite: bool = True,
                      nifti: bool = False) -> Path:
    """Raise unless ``path`` can be written: a NIfTI name (if ``nifti``), its folder exists and
    is writable, and it does not exist already unless ``overwrite``. Call it before long work
    whose result goes there."""
    path = Path(path)
    if nifti:
        _check_nifti_name(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {path}: folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file keeps ``path``'s suffixes, so writers that infer the format from the
    name (nibabel, numpy) still work. On any exception the temporary file is removed and
    ``path`` is untouched.
    """
    path = check_output_path(path, overwrite=overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    suffix = "".join(path.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}",
                                   dir=parent)
    except OSError as err:  # e.g. /proc, a read-only mount: root passes os.access but not this
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every output private
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def _check_nifti_name(path: Path) -> None:
    if not str(path).endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: expected a NIfTI file ending in .nii or .nii.gz")


def load_nifti(path: str | os.PathLike, *, ndim: int | None = 3,
               check_finite: bool = True) -> nib.Nifti1Image:
    """Load a NIfTI image, checking it exists, is NIfTI, has ``ndim`` axes and finite voxels.

    The returned image keeps its affine and header; read voxels with ``img.get_fdata()``.
    Integer images (CT in HU, most TOF) cannot hold NaN, so only floating-point or scaled
    images are read in full for the finiteness check.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    _check_nifti_name(path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"{path}: not a readable NIfTI file ({err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: expected a NIfTI image, got {type(img).__name__}")
    if ndim is not None and img.ndim != ndim:
        raise ValueError(f"{path}: expected a {ndim}D image, got shape {img.shape}")
    if 0 in img.shape:
        raise ValueError(f"{path}: image has an empty axis, shape {img.shape}")
    if img.get_data_dtype().kind not in "iuf":
        raise ValueError(f"{path}: voxels must be real numbers; got dtype {img.get_data_dtype()}")
    slope, inter = img.header.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    if check_finite and (np.issubdtype(img.get_data_dtype(), np.floating) or scaled):
        bad = int(np.size(img.dataobj) - np.count_nonzero(np.isfinite(np.asanyarray(img.dataobj))))
        if bad:
            raise ValueError(f"{path}: {bad} non-finite voxels (NaN or Inf); expected finite values")
    return img


def save_nifti(
    data: np.ndarray,
    path: str | os.PathLike,
    *,
    affine: np.ndarray | None = None,
    header: nib.Nifti1Header | None = None,
    like: nib.Nifti1Image | None = None,
    dtype: np.dtype | type = np.float32,
    overwrite: bool = True,
) -> nib.Nifti1Image:
    """Write ``data`` as NIfTI atomically, with an explicit on-disk ``dtype``.

    The affine and header come from ``like`` (an image on the same grid) or are given
    directly; a NIfTI-2 header gives a NIfTI-2 file, anything else NIfTI-1. The data dtype is
    always set explicitly: reusing a uint16 TOF header would otherwise quantise HU values
    (the reference's ``inference.py`` writes the CTA with the TOF header's on-disk dtype, so a
    uint16 TOF gives a uint16 "CTA").
    """
    path = Path(path)
    _check_nifti_name(path)
    data = np.asarray(data)
    if like is not None:
        affine = like.affine if affine is None else affine
        header = like.header if header is None else header
    if affine is None:
        raise ValueError(f"{path}: an affine is required (pass affine= or like=)")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"{path}: affine must be 4x4, got {affine.shape}")
    header = header.copy() if header is not None else None
    # the input's flavour: a NIfTI-2 header in a Nifti1Image is rewritten as NIfTI-1, with
    # nibabel's "sizeof_hdr should be 348" on the terminal
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        img = image_class(data.astype(dtype, copy=False), affine, header=header)
        img.set_data_dtype(dtype)
    except (nib.spatialimages.HeaderDataError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: dtype {np.dtype(dtype).name} is not a NIfTI data type "
                         f"({err})") from err
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return img


# ------------------------------------------------------------------ provenance
def text_sha256(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes (the cache keys of a data recipe)."""
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit(*, short: bool = False, mark_dirty: bool = False) -> str | None:
    """The git commit of the package's work tree (``short``: abbreviated; ``mark_dirty``: with
    ``-dirty`` appended if tracked files are modified), or None outside git."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True,
                                 cwd=Path(__file__).parent, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", *(["--short"] if short else []), "HEAD")
    if not commit:
        return None
    if mark_dirty and git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return commit
