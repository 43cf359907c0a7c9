"""NIfTI I/O keeps affine and header and never leaves half-written files."""

import os

import nibabel as nib
import numpy as np
import pytest

from xmodality_lite.io import atomic_path, atomic_write_text, load_nifti, save_nifti


def _affine(spacing=(0.45, 0.45, 0.7)):
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = [-90.0, -120.0, -60.0]
    return a


def test_save_load_round_trip_keeps_affine_zooms_and_dtype(tmp_path):
    data = np.random.default_rng(0).normal(100, 50, (8, 9, 10)).astype(np.float32)
    path = tmp_path / "cta.nii.gz"
    save_nifti(data, path, affine=_affine())
    img = load_nifti(path)
    # NIfTI stores the sform in float32: equal to float32 precision.
    np.testing.assert_allclose(img.affine, _affine(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), (0.45, 0.45, 0.7), rtol=1e-6)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), data)


def test_like_header_does_not_quantise_hu(tmp_path):
    # A uint16 TOF header reused for a CTA would quantise HU (reference-code gotcha, facts §10).
    tof = nib.Nifti1Image(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), _affine())
    tof.set_data_dtype(np.uint16)
    hu = np.linspace(-50.5, 350.25, 24, dtype=np.float32).reshape(2, 3, 4)
    save_nifti(hu, tmp_path / "out.nii", like=tof)
    back = load_nifti(tmp_path / "out.nii")
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), hu)
    np.testing.assert_allclose(back.affine, tof.affine, rtol=1e-6, atol=1e-5)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt.*\.nii"):
        load_nifti(tmp_path / "notes.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="broken.nii.gz.*not a readable NIfTI"):
        load_nifti(tmp_path / "broken.nii.gz")
    save_nifti(np.zeros((2, 2, 2, 3), np.float32), tmp_path / "four.nii", affine=np.eye(4))
    with pytest.raises(ValueError, match=r"four.nii.*3D"):
        load_nifti(tmp_path / "four.nii")


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert os.listdir(tmp_path) == []


def test_overwrite_false_refuses_existing(tmp_path):
    p = atomic_write_text(tmp_path / "a.json", "{}")
    with pytest.raises(FileExistsError, match="a.json"):
        atomic_write_text(p, "[]", overwrite=False)
    assert p.read_text() == "{}"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_nifti(np.zeros((2, 2, 2)), tmp_path / "nope" / "x.nii", affine=np.eye(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_refused(tmp_path, bad):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    save_nifti(data, tmp_path / "bad.nii.gz", affine=np.eye(4))
    with pytest.raises(ValueError, match="bad.nii.gz: 1 non-finite voxels"):
        load_nifti(tmp_path / "bad.nii.gz")
    assert load_nifti(tmp_path / "bad.nii.gz", check_finite=False).shape == (4, 4, 4)


def test_unsupported_dtype_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"cta.nii.gz: dtype object"):
        save_nifti(np.zeros((2, 2, 2)), tmp_path / "cta.nii.gz", affine=np.eye(4), dtype=object)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
def test_like_keeps_the_nifti_flavour_header_and_affine_silently(tmp_path, image_class, caplog):
    """NIfTI-2 in → NIfTI-2 out: a NIfTI-2 header in a NIfTI-1 image makes nibabel log
    "sizeof_hdr should be 348" and write NIfTI-1."""
    src = image_class(np.zeros((4, 5, 6), np.int16), _affine())
    src.header["descrip"] = b"scanner X"
    src.header.set_xyzt_units("mm", "sec")
    src.set_qform(_affine(), code=1)
    nib.save(src, tmp_path / "tof.nii.gz")
    like = load_nifti(tmp_path / "tof.nii.gz")
    with caplog.at_level("DEBUG", logger="nibabel"):
        save_nifti(np.ones((4, 5, 6), np.float32), tmp_path / "out.nii.gz", like=like)
    assert caplog.records == []
    out = nib.load(tmp_path / "out.nii.gz")
    assert type(out) is image_class
    assert int(out.header["sizeof_hdr"]) == int(src.header["sizeof_hdr"])  # 348 or 540
    np.testing.assert_allclose(out.affine, like.affine, rtol=1e-6, atol=1e-5)
    assert out.header["descrip"] == b"scanner X" and out.header.get_xyzt_units() == ("mm", "sec")
    assert int(out.header["qform_code"]) == 1 and out.get_data_dtype() == np.float32


def test_provenance_hashes_and_commit(tmp_path):
    """One home for sha256 and the git commit (checkpoints, the dataset cache, the benchmarks)."""
    import hashlib
    import re

    from xmodality_lite.io import file_sha256, git_commit, text_sha256

    data = bytes(range(256)) * 5000  # > 1 MiB: more than one chunk
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert text_sha256("λ") == hashlib.sha256("λ".encode()).hexdigest()
    full = git_commit()
    if full is None:  # an installed package outside a checkout
        assert git_commit(short=True, mark_dirty=True) is None
        return
    assert re.fullmatch(r"[0-9a-f]{40}", full)
    short = git_commit(short=True)
    assert full.startswith(short) and len(short) < 40
    assert git_commit(short=True, mark_dirty=True) in (short, f"{short}-dirty")
