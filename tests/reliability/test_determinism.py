"""Determinism across processes: one seed gives the same phantom NIfTI bytes, the same training
batches and the same DDPM/DDIM samples in two separate interpreters (no shared in-process or
on-disk cache: each builds its dataset in its own folder)."""

from __future__ import annotations

import json
import subprocess

import pytest
from _reliability import PYTHON, REPO

PROBE = """
import hashlib, json, sys
from pathlib import Path
import jax, numpy as np
from flax import nnx
from xmodality_lite.data.layout import write_topcow_layout
from xmodality_lite.diffusion import sample
from xmodality_lite.models import build_model
from xmodality_lite.preprocessing import BatchIterator, phantom_dataset

sha = lambda b: hashlib.sha256(b).hexdigest()
out, cache = Path(sys.argv[1]), Path(sys.argv[2])
paths = write_topcow_layout(out, 1, seed=7, profile="smoke")
result = {"phantom": {p.relative_to(out).as_posix(): sha(p.read_bytes()) for p in paths}}
batches = BatchIterator(phantom_dataset("smoke", cache_dir=cache, progress=False)["train"],
                        4, 3, 32)
result["batches"] = {k: [sha(x.tobytes()) for x in batches.batch_at(k)] for k in (0, 1, 9)}
model = build_model("dit", "smoke", rngs=nnx.Rngs(0))
cond = batches.batch_at(0)[0][:2]
result["samples"] = {name: sha(np.asarray(sample(name, model, cond, jax.random.key(11),
                                                 steps=3)).tobytes()) for name in ("ddpm", "ddim")}
print(json.dumps(result))
"""


@pytest.mark.slow
def test_same_seed_same_bytes_in_two_processes(tmp_path, smoke_env):
    procs = [subprocess.Popen([PYTHON, "-c", PROBE, str(tmp_path / f"out{i}"),
                               str(tmp_path / f"cache{i}")], env=smoke_env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.splitlines()[-1]))
    first, second = results
    assert len(first["phantom"]) == 6  # CTA, TOF and 2 label files each (TopCoW 2023 layout)
    for part in ("phantom", "batches", "samples"):
        assert first[part] == second[part], part
    # the hashes do tell inputs apart: other steps give other batches, the samplers differ
    batch_hashes = [h for hs in first["batches"].values() for h in hs]
    assert len(set(batch_hashes)) == len(batch_hashes)
    assert first["samples"]["ddpm"] != first["samples"]["ddim"]
