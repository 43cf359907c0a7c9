"""Training: the loss falls, EMA follows its closed form, and a crash-and-resume run is
bit-identical to an uninterrupted one."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from _tiny import TinyData, tiny_build
from flax import nnx

from xmodality_lite import training
from xmodality_lite.config import get_profile

SMOKE = get_profile("smoke")


def profile(**train):
    return SMOKE.replace(train=dataclasses.replace(SMOKE.train, **train))


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch):
    monkeypatch.setattr(training, "build", lambda name, prof, seed, variant="published":
                        tiny_build(name, prof, rngs=nnx.Rngs(seed),
                                   dtype=training.compute_dtype(prof)))


@pytest.mark.parametrize("name", ["unet", "adm"])
def test_smoke_training_lowers_the_loss(name, tmp_path):
    prof = profile(learning_rate=3e-3, log_every=10, checkpoint_every=20)
    res = training.train(name, prof, data=TinyData(), steps=60, out_dir=tmp_path, progress=False,
                         keep_checkpoints=1)
    log = training.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in log] == list(range(10, 61, 10))
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    assert res.step == 60 and res.final_loss == log[-1]["loss"]
    assert res.checkpoint.name == "step_0000060.safetensors" and res.steps_per_s > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_0000060.json", "step_0000060.safetensors"]
    assert set(log[0]) == {"step", "loss", "steps_per_s", "wall_s"}


def test_crash_and_resume_is_bit_identical(tmp_path):
    prof = profile(checkpoint_every=3, log_every=1, ema_decay=0.9)
    straight = training.train("adm", prof, data=TinyData(), steps=6, out_dir=tmp_path / "a",
                              progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        training.train("adm", prof, data=TinyData(fail_at=4), steps=6, out_dir=tmp_path / "b",
                       progress=False)
    assert training.read_metrics(tmp_path / "b/metrics.jsonl")[-1]["step"] == 4
    resumed = training.train("adm", prof, data=TinyData(), steps=6, out_dir=tmp_path / "b",
                             progress=False)
    assert training.params_bytes(resumed.model) == training.params_bytes(straight.model)
    for a, b in zip(jax.tree.leaves(resumed.ema), jax.tree.leaves(straight.ema), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    log_a, log_b = (training.read_metrics(tmp_path / d / "metrics.jsonl") for d in "ab")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]  # step 4 of the crash not repeated
    assert [r["loss"] for r in log_b] == [r["loss"] for r in log_a]
    walls = [r["wall_s"] for r in log_b]
    assert walls == sorted(walls)  # wall time continues across the resume
    meta = json.loads((tmp_path / "b/checkpoints/step_0000006.json").read_text())
    assert meta["step"] == 6 and meta["profile"]["name"] == "smoke" and meta["model"] == "adm"


def test_ema_is_updated_every_step():
    """EMA after n steps of decay d is the closed-form recursion e ← d·e + (1−d)·θ_k."""
    prof = profile(ema_decay=0.5, log_every=1)
    params = []
    for n in range(4):
        res = training.train("adm", prof, data=TinyData(), steps=n, progress=False)
        params.append(nnx.state(res.model, nnx.Param))
    expect = params[0]
    for p in params[1:]:
        expect = jax.tree.map(lambda e, q: 0.5 * e + 0.5 * q, expect, p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), res.ema, expect)


def test_bfloat16_compute_keeps_float32_params():
    res = training.train("adm", profile(dtype="bfloat16"), data=TinyData(), steps=2,
                         progress=False)
    assert {v.dtype for v in jax.tree.leaves(nnx.state(res.model, nnx.Param))} == {np.dtype("float32")}
    assert np.isfinite(res.final_loss)


def test_resume_with_another_seed_is_refused(tmp_path):
    training.train("adm", SMOKE, data=TinyData(), steps=2, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\[42, 0, 'published'\], this run uses \[1, 0, 'published'\]"):
        training.train("adm", SMOKE, data=TinyData(), steps=4, out_dir=tmp_path, seed=1,
                       progress=False)
    with pytest.raises(ValueError, match="'adm'.*'dit'"):
        training.train("dit", SMOKE, data=TinyData(), steps=4, out_dir=tmp_path, progress=False)


def test_plot_loss(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    records = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    ax = training.plot_loss(records)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [1.0, 0.5])


def test_ema_warmup_follows_its_closed_form():
    """With ema_warmup the k-th update (k = 0, 1, …) uses d_k = min(d, (1 + k)/(10 + k))."""
    prof = profile(ema_decay=0.95, ema_warmup=True, log_every=1)
    params = []
    for n in range(4):
        res = training.train("adm", prof, data=TinyData(), steps=n, progress=False)
        params.append(nnx.state(res.model, nnx.Param))
    expect = params[0]
    for k, p in enumerate(params[1:]):
        d = min(0.95, (1 + k) / (10 + k))
        expect = jax.tree.map(lambda e, q, d=d: d * e + (1 - d) * q, expect, p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 res.ema, expect)


def test_learning_rate_schedule_warmup_and_cosine():
    """η_k = η·min(1, (k+1)/W)·(0.01 + 0.99·½(1 + cos(π(k − W)/(T − W)))) after the warm-up."""
    cfg = dataclasses.replace(SMOKE.train, learning_rate=2e-3, warmup_steps=10,
                              lr_decay="cosine", steps=110)
    eta = training.learning_rate_schedule(cfg)
    np.testing.assert_allclose(float(eta(0)), 2e-4, rtol=1e-6)  # (0 + 1)/10 of the peak
    np.testing.assert_allclose(float(eta(9)), 2e-3, rtol=1e-6)  # warm-up ends at the peak
    np.testing.assert_allclose(float(eta(60)), 2e-3 * (0.01 + 0.99 * 0.5), rtol=1e-5)  # halfway
    np.testing.assert_allclose(float(eta(110)), 2e-5, rtol=1e-5)  # 1 % of the peak at the end
    np.testing.assert_allclose(float(eta(500)), 2e-5, rtol=1e-5)  # and stays there
    assert training.learning_rate_schedule(SMOKE.train) == SMOKE.train.learning_rate  # paper
    with pytest.raises(ValueError, match="lr_decay"):
        training.learning_rate_schedule(dataclasses.replace(cfg, lr_decay="linear"))


def test_adam_follows_the_schedule():
    """The first Adam step moves each weight by ≈ η_0 (|m̂/√v̂| = 1 at step 1)."""
    prof = profile(learning_rate=1e-2, warmup_steps=4, lr_decay="cosine", steps=20)
    start = training.train("unet", prof, data=TinyData(), steps=0, progress=False)
    one = training.train("unet", prof, data=TinyData(), steps=1, progress=False)
    moves = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree.leaves(nnx.state(one.model, nnx.Param)),
        jax.tree.leaves(nnx.state(start.model, nnx.Param)), strict=True)]
    np.testing.assert_allclose(max(moves), 1e-2 / 4, rtol=1e-3)  # η_0 = η·1/W


def test_resume_refuses_another_recipe(tmp_path):
    prof = profile(checkpoint_every=2, log_every=1)
    training.train("unet", prof, data=TinyData(), steps=2, out_dir=tmp_path, progress=False)
    other = profile(checkpoint_every=2, log_every=1, learning_rate=5e-3)
    with pytest.raises(ValueError, match="another recipe"):
        training.train("unet", other, data=TinyData(), steps=4, out_dir=tmp_path, progress=False)
    # the logging cadence is not part of the recipe
    again = profile(checkpoint_every=1, log_every=2)
    assert training.train("unet", again, data=TinyData(), steps=4, out_dir=tmp_path,
                          progress=False).step == 4


def test_resume_refuses_to_go_back(tmp_path):
    """A run folder at step 4 cannot give the weights of step 2: a clear error, not step 4's."""
    prof = profile(checkpoint_every=2, log_every=1)
    training.train("unet", prof, data=TinyData(), steps=4, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="already at step 4"):
        training.train("unet", prof, data=TinyData(), steps=2, out_dir=tmp_path, progress=False)


def test_named_steps_by_hand_equal_train(tmp_path):
    """A lesson can run the loop one named step at a time: start → step → save → resume gives
    the weights, log and checkpoint of ``train`` itself, bit for bit."""
    prof = profile(checkpoint_every=2, log_every=1, ema_decay=0.9)
    whole = training.train("adm", prof, data=TinyData(), steps=3, out_dir=tmp_path / "a",
                           progress=False)

    run = training.start_run("adm", prof, prof.train.seed, data_seed=TinyData().seed)
    graphdef, state = nnx.split(run.objects)
    step_fn = training.make_train_step(graphdef, gamma=prof.train.min_snr_gamma,
                                       ema_decay=prof.train.ema_decay)
    for k in range(2):
        tof, cta = training.as_pair(TinyData().batch_at(k))
        state, loss = step_fn(state, tof, cta, jax.random.fold_in(run.key, k))
        run.step = k + 1
        training.log_metrics(tmp_path / "b.jsonl", {"step": run.step, "loss": float(loss)})
    nnx.update(run.objects, state)
    saved = training.save_run(run, tmp_path / "b")
    assert saved.name == "step_0000002.safetensors"
    assert [r["step"] for r in training.read_metrics(tmp_path / "b.jsonl")] == [1, 2]

    again = training.start_run("adm", prof, prof.train.seed, data_seed=TinyData().seed)
    assert training.resume_run(again, tmp_path / "b", prof, steps=3) == saved and again.step == 2
    graphdef, state = nnx.split(again.objects)
    tof, cta = training.as_pair(TinyData().batch_at(2))
    state, _ = step_fn(state, tof, cta, jax.random.fold_in(again.key, 2))
    nnx.update(again.objects, state)
    assert training.params_bytes(again.model) == training.params_bytes(whole.model)


def test_messages_go_to_the_logger(tmp_path, caplog):
    prof = profile(checkpoint_every=2, log_every=1)
    training.train("unet", prof, data=TinyData(), steps=2, out_dir=tmp_path, progress=False)
    with caplog.at_level("INFO", logger="xmodality_lite.training"):
        training.train("unet", prof, data=TinyData(), steps=3, out_dir=tmp_path, progress=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "xmodality_lite.training"]
    assert any(m.startswith("training 'unet'") for m in messages)
    assert any("resuming from" in m and "step_0000002" in m and m.endswith("at step 2")
               for m in messages)
