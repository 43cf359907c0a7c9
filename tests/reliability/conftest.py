"""Fixtures of the reliability suite: the smoke environment for child processes and the bad
inputs, written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory) -> dict[str, str]:
    """Environment for child processes: smoke profile, CPU, one shared JAX compilation cache
    (so a resumed or repeated process does not recompile), deterministic hashing."""
    jax_cache = tmp_path_factory.mktemp("jax-cache")
    return {**os.environ, "XMODALITY_PROFILE": "smoke", "JAX_PLATFORMS": "cpu",
            "PYTHONHASHSEED": "0", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "JAX_COMPILATION_CACHE_DIR": str(jax_cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "TQDM_DISABLE": "1"}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    """A folder of bad (and a few good) inputs, written once per session."""
    d = tmp_path_factory.mktemp("inputs")
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    rng = np.random.default_rng(0)
    tof = rng.uniform(0, 100, (16, 16, 4)).astype(np.float32)

    def save(name, data):
        nib.save(nib.Nifti1Image(data, aff), str(d / name))

    save("tof.nii.gz", tof)
    save("img2d.nii.gz", tof[..., 0])
    save("img4d.nii.gz", np.stack([tof, tof], -1))
    nan, inf = tof.copy(), tof.copy()
    nan[3, 4, 1], inf[5, 6, 2] = np.nan, np.inf
    save("nan.nii.gz", nan)
    save("inf.nii.gz", inf)
    save("empty.nii.gz", np.zeros((0, 16, 4), np.float32))
    save("complex.nii.gz", (tof + 1j * tof).astype(np.complex64))
    (d / "notnifti.txt").write_text("this is not an image\n")
    (d / "garbage.nii.gz").write_bytes(rng.bytes(4096))
    (d / "afile").write_text("a regular file, so afile/<anything> cannot be created\n")
    _write_checkpoints(d)
    return d


def _write_checkpoints(d: Path) -> None:
    """Valid smoke checkpoints of two models (random init), damaged copies, a foreign format."""
    import jax
    from flax import nnx

    from xmodality_lite.checkpoint import save_checkpoint
    from xmodality_lite.config import get_profile
    from xmodality_lite.models import build_model
    from xmodality_lite.models.published import export_published

    prof = get_profile("smoke")
    for name in ("dit", "unet"):
        model = build_model(name, prof, rngs=nnx.Rngs(0))
        save_checkpoint(d / f"{name}.safetensors", model, None, 2, jax.random.key(0),
                        {"model": name, "variant": "published", "profile": prof})
    export_published(model, d / "published_unet.safetensors")  # weights without our metadata
    blob = (d / "dit.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    flipped = bytearray(blob)
    flipped[-5] ^= 0x01  # one bit of the last tensor
    (d / "flipped.safetensors").write_bytes(bytes(flipped))
    (d / "random.safetensors").write_bytes(np.random.default_rng(1).bytes(2048))
