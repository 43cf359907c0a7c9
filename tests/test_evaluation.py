"""Evaluation table and steps sweep from checkpoints, with tiny stand-in models."""

import jax
import numpy as np
import pytest
from _tiny import TinyModel, tiny_build
from flax import nnx

from xmodality_lite.checkpoint import save_checkpoint
from xmodality_lite.config import get_profile
from xmodality_lite.evaluation import evaluate
from xmodality_lite.metrics import evaluate_slices
from xmodality_lite.translation import translate_slices


def test_rows_per_model_and_step_count(tmp_path, monkeypatch):
    paths = _tiny_checkpoints(tmp_path, monkeypatch)
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


def test_paper_table1_runs_both_samplers_and_the_unet_once(tmp_path, monkeypatch):
    from xmodality_lite.evaluation import paper_table1

    paths = _tiny_checkpoints(tmp_path, monkeypatch)
    rng = np.random.default_rng(1)
    tof, cta = (np.tanh(rng.normal(size=(3, 16, 16, 1))).astype(np.float32) for _ in range(2))
    monkeypatch.setattr("xmodality_lite.evaluation.fixed_test_crops",
                        lambda profile, n, seed: (tof, cta))
    rows = paper_table1(paths, "smoke", steps=3, n_slices=3, extractor=None)
    assert [(r["model"], r["sampler"], r["steps"]) for r in rows] == [
        ("adm", "ddpm", 3), ("unet", "N/A", None), ("adm", "ddim", 3)]
    for row in rows[::2]:  # each sampler row is that sampler's translation, scored
        pred = translate_slices(TinyModel(rngs=nnx.Rngs(0)), tof, sampler=row["sampler"],
                                steps=3, seed=0, progress=False)
        assert row["psnr"] == evaluate_slices(pred, cta, extractor=None)["psnr"]


def _tiny_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr("xmodality_lite.models.build_model", tiny_build)
    paths = []
    for name, kind in (("adm", "diffusion"), ("unet", "regression")):
        meta = {"model": name, "profile": get_profile("smoke"), "variant": "published"}
        paths.append(save_checkpoint(tmp_path / f"{name}.safetensors",
                                     TinyModel(kind, rngs=nnx.Rngs(0)), None, 0,
                                     jax.random.key(0), meta))
    return paths


def test_volume_report_rows_intervals_paired_and_files(tmp_path, monkeypatch):
    import json

    from xmodality_lite.evaluation import VOLUME_METRICS, evaluate_volumes, phantom_volume
    from xmodality_lite.metrics import volume_metrics
    from xmodality_lite.reconstruction import translate_volume
    from xmodality_lite.regions import intracranial_mask

    paths = _tiny_checkpoints(tmp_path, monkeypatch)
    report = evaluate_volumes(paths, "smoke", seeds=[1000, 1001], sampler="ddim", steps=2,
                              seed=3, n_boot=200, out_dir=tmp_path / "ev", progress=False)
    rows = report["rows"]
    assert [(r["model"], r["item"]) for r in rows] == [
        ("adm", "phantom1000"), ("adm", "phantom1001"),
        ("unet", "phantom1000"), ("unet", "phantom1001")]
    assert all(set(VOLUME_METRICS) <= set(r) for r in rows)
    # one row recomputed by hand: the paper's whole-volume metrics and the vessel Dice
    pair, tof = phantom_volume(1001, "smoke")
    synthetic = translate_volume(TinyModel("regression", rngs=nnx.Rngs(0)), tof, seed=3,
                                 progress=False, profile="smoke").get_fdata()
    cta = np.asarray(pair.cta.dataobj, np.float64)
    whole = volume_metrics(synthetic, cta)
    assert rows[3]["whole_psnr"] == pytest.approx(whole["psnr"])
    assert rows[3]["whole_ssim"] == pytest.approx(whole["ssim"])
    brain = intracranial_mask(cta, pair.cta.header.get_zooms()[:3])
    fake, real = (synthetic >= 150) & brain, (cta >= 150) & brain
    expect = 2 * (fake & real).sum() / (fake.sum() + real.sum())
    assert rows[3]["vessel_dice"] == pytest.approx(expect)
    # intervals over the two patients, paired differences against the U-Net
    by = {(r["model"], r["item"]): r for r in rows}
    for s in report["summary"]:
        values = [by[s["model"], i][s["metric"]] for i in ("phantom1000", "phantom1001")]
        assert s["estimate"] == pytest.approx(np.mean(values))
        assert min(values) <= s["low"] <= s["high"] <= max(values)
    assert {(p["model"], p["reference"]) for p in report["paired"]} == {("adm", "unet")}
    for p in report["paired"]:
        d = [by["adm", i][p["metric"]] - by["unet", i][p["metric"]]
             for i in ("phantom1000", "phantom1001")]
        assert p["difference"] == pytest.approx(np.mean(d))
        assert p["p_value"] >= 0.5  # two patients: the exact sign-flip test cannot go lower
    # files: tables, JSON, Markdown and one figure per model
    ev = tmp_path / "ev"
    assert len((ev / "volumes.csv").read_text().splitlines()) == 1 + 4
    assert json.loads((ev / "volumes.json").read_text())["settings"]["reference"] == "unet"
    md = (ev / "volumes.md").read_text()
    assert "Circle-of-Willis region" in md and "model − unet" in md and "vessel clDice" in md
    for name in ("adm", "unet"):
        assert (ev / "figures" / f"{name}_phantom1000.png").stat().st_size > 0


def test_unseen_seeds_stay_outside_the_dataset():
    import dataclasses

    from xmodality_lite.evaluation import REFERENCE_SEED, unseen_seeds

    assert unseen_seeds(3, "smoke") == [REFERENCE_SEED, REFERENCE_SEED + 1, REFERENCE_SEED + 2]
    smoke = get_profile("smoke")
    data = dataclasses.replace(smoke.data, seed=REFERENCE_SEED - 1)
    clash = dataclasses.replace(smoke, data=data)
    with pytest.raises(ValueError, match="overlap"):
        unseen_seeds(3, clash)
