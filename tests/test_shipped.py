"""The shipped checkpoints load in a fresh environment and reproduce their recorded metrics.

``make checkpoints`` trains the four models and records, beside them, the Table-3 volume metrics
of each on a fixed phantom patient (``evaluation.record_reference_metrics``). Recomputing them
here checks the whole chain a reader relies on: checksums, metadata, weights and the pipeline.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from xmodality_lite.checkpoint import (
    SHIPPED_DIR,
    file_sha256,
    load_model,
    load_shipped,
    read_metadata,
    shipped_checkpoint,
    sidecar_path,
)
from xmodality_lite.evaluation import REFERENCE_FILE, reference_volume_metrics

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
MODELS = ("unet", "adm", "uvit", "dit")
RECORD = json.loads((SHIPPED / REFERENCE_FILE).read_text())


@pytest.mark.parametrize("name", MODELS)
def test_shipped_checkpoint_is_intact(name):
    path = SHIPPED / f"{name}.safetensors"
    side = json.loads(sidecar_path(path).read_text())
    assert side["sha256"] == file_sha256(path)
    meta = read_metadata(path)
    assert meta["model"] == name and meta["profile"]["name"] == "cpu"
    assert meta["step"] == meta["profile"]["train"]["steps"]
    assert load_model(path).kind == ("regression" if name == "unet" else "diffusion")


def test_shipped_dir_is_the_repository_folder():
    assert SHIPPED_DIR == SHIPPED


def test_shipped_checkpoint_matches_name_and_profile(tmp_path):
    assert shipped_checkpoint("dit", "cpu") == SHIPPED / "dit.safetensors"
    assert shipped_checkpoint("dit", "smoke") is None  # trained at cpu, not smoke
    assert shipped_checkpoint("dit", "cpu", folder=tmp_path) is None  # an empty folder


def test_load_shipped_loads_the_weights_or_says_untrained(tmp_path):
    model, source = load_shipped("dit", "cpu")
    assert source == f"shipped, {read_metadata(SHIPPED / 'dit.safetensors')['step']} training steps"
    same = jax.tree.map(np.array_equal, nnx.state(model, nnx.Param),
                        nnx.state(load_model(SHIPPED / "dit.safetensors"), nnx.Param))
    assert all(jax.tree.leaves(same))
    untrained, source = load_shipped("dit", "smoke")
    assert source == "UNTRAINED" and untrained.kind == "diffusion"
    _, source = load_shipped("dit", "cpu", folder=tmp_path)
    assert source == "UNTRAINED"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_shipped_checkpoint_reproduces_recorded_metrics(name):
    got = reference_volume_metrics(SHIPPED / f"{name}.safetensors", steps=RECORD["steps"],
                                   seed=RECORD["phantom_seed"])
    for metric, value in RECORD["metrics"][name].items():
        # float32 maths: the same package gives the same numbers to ~1e-6 here; 1e-3 leaves room
        # for another CPU or jaxlib within the pinned range, and still catches wrong weights
        assert got[metric] == pytest.approx(value, rel=1e-3), metric
