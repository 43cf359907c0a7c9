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
    load_model,
    load_shipped,
    read_metadata,
    shipped_checkpoint,
    sidecar_path,
    warn_untrained,
)
from xmodality_lite.evaluation import REFERENCE_FILE, reference_volume_metrics
from xmodality_lite.io import file_sha256
from xmodality_lite.models import MODELS as ARCHITECTURES

SHIPPED = Path(__file__).resolve().parents[1] / "xmodality_lite" / "checkpoints"  # package data
MODELS = tuple(ARCHITECTURES)  # unet, adm, uvit, dit: one shipped model per architecture
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


def test_shipped_dir_is_the_package_data_folder():
    assert SHIPPED_DIR == SHIPPED  # what the wheel carries (tests/test_wheel.py installs one)


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


def test_warn_untrained_is_silent_for_shipped_models(capsys):
    assert warn_untrained({"adm": "shipped, 1200 training steps"}, "cpu") is False
    assert capsys.readouterr().out == ""


def test_warn_untrained_prints_one_line_outside_a_notebook(capsys):
    assert warn_untrained({"unet": "shipped, 2000 training steps", "adm": "UNTRAINED",
                           "dit": "UNTRAINED dit: no smoke-profile checkpoint"}, "smoke")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("WARNING: adm, dit are UNTRAINED")
    assert "'smoke'" in out[0] and "XMODALITY_PROFILE=cpu" in out[0] and "unet" not in out[0]


def test_warn_untrained_shows_a_warning_box_in_a_notebook(monkeypatch):
    """In IPython: an HTML admonition (text/html) with the same words as text/plain."""
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display",
                        lambda data, raw=False: shown.append((data, raw)))
    assert warn_untrained({"adm": "UNTRAINED"}, "smoke")
    [(data, raw)] = shown
    assert raw and data["text/plain"].startswith("WARNING: adm is UNTRAINED")
    assert '<div class="admonition warning"' in data["text/html"]
    assert "adm is UNTRAINED" in data["text/html"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_shipped_checkpoint_reproduces_recorded_metrics(name):
    got = reference_volume_metrics(SHIPPED / f"{name}.safetensors", steps=RECORD["steps"],
                                   seed=RECORD["phantom_seed"])
    for metric, value in RECORD["metrics"][name].items():
        # float32 maths: the same package gives the same numbers to ~1e-6 here; 1e-3 leaves room
        # for another CPU or jaxlib within the pinned range, and still catches wrong weights
        assert got[metric] == pytest.approx(value, rel=1e-3), metric


def test_readme_states_what_the_record_shows():
    """The README's block about the shipped models is generated from reference_metrics.json
    (refresh it with tools/update_readme.py after `make checkpoints`)."""
    from xmodality_lite.findings import check_readme

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert check_readme(readme, RECORD) == readme


def test_snapshots_ship_with_increasing_steps():
    from xmodality_lite.checkpoint import SNAPSHOT_MODEL, SNAPSHOT_STEPS, shipped_snapshots

    snaps = shipped_snapshots()
    assert [s for s, _ in snaps] == [*SNAPSHOT_STEPS, read_metadata(
        SHIPPED / f"{SNAPSHOT_MODEL}.safetensors")["step"]]
    for step, path in snaps:
        meta = read_metadata(path)
        assert meta["model"] == SNAPSHOT_MODEL and meta["step"] == step and meta["weights"] == "ema"
        assert not meta["has_optimizer"]  # weights only: small enough to ship
    assert shipped_snapshots("dit", "smoke") == []


@pytest.mark.slow
def test_shipped_models_show_the_pattern_the_book_states():
    """Recompute Table 1 on held-out slices (fewer than recorded, to stay quick) and assert the
    findings the README and lessons 7-9 state: the U-Net near-best on MSE/PSNR, a diffusion
    model better on FD, and the best diffusion model where the record puts it."""
    from xmodality_lite.evaluation import evaluate
    from xmodality_lite.findings import findings, record_findings

    recorded = record_findings(RECORD)
    assert recorded.paper_pattern
    from xmodality_lite.metrics import StandinFDWarning

    with pytest.warns(StandinFDWarning, match="NOT comparable"):  # the stand-in FD says so
        rows = evaluate([SHIPPED / f"{m}.safetensors" for m in MODELS], "cpu", steps=[32],
                        sampler="ddim", n_slices=32, seed=0, extractor="standin", progress=False)
    now = findings({r["model"]: r for r in rows})
    assert now.paper_pattern
    assert now.best_diffusion == recorded.best_diffusion
    assert set(recorded.beats_unet_fd) & set(now.beats_unet_fd)
