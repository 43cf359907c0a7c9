"""Evaluation table and steps sweep from checkpoints, with tiny stand-in models."""

import jax
import numpy as np
from _tiny import TinyModel, tiny_build
from flax import nnx

from xmodality_lite.checkpoint import save_checkpoint
from xmodality_lite.config import get_profile
from xmodality_lite.evaluation import evaluate
from xmodality_lite.metrics import evaluate_slices
from xmodality_lite.translation import translate_slices


def test_rows_per_model_and_step_count(tmp_path, monkeypatch):
    monkeypatch.setattr("xmodality_lite.models.build_model", tiny_build)
    paths = []
    for name, kind in (("adm", "diffusion"), ("unet", "regression")):
        meta = {"model": name, "profile": get_profile("smoke"), "variant": "published"}
        paths.append(save_checkpoint(tmp_path / f"{name}.safetensors",
                                     TinyModel(kind, rngs=nnx.Rngs(0)), None, 0,
                                     jax.random.key(0), meta))
    rng = np.random.default_rng(0)
    tof = np.tanh(rng.normal(size=(4, 16, 16, 1))).astype(np.float32)
    cta = np.tanh(rng.normal(size=(4, 16, 16, 1))).astype(np.float32)
    rows = evaluate(paths, "smoke", steps=[2, 1], sampler="ddim", data=(tof, cta), seed=3,
                    extractor=None, out_dir=tmp_path / "ev", progress=False)
    assert [(r["model"], r["sampler"], r["steps"]) for r in rows] == [
        ("adm", "ddim", 1), ("adm", "ddim", 2), ("unet", "N/A", None)]
    pred = translate_slices(TinyModel(rngs=nnx.Rngs(0)), tof, sampler="ddim", steps=2, seed=3,
                            progress=False)
    expect = evaluate_slices(pred, cta, extractor=None)
    assert rows[1]["psnr"] == expect["psnr"] and rows[1]["ssim"] == expect["ssim"]
    csv = (tmp_path / "ev/results.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[3].startswith("unet,N/A,,")
    assert (tmp_path / "ev/steps_sweep.png").stat().st_size > 0
