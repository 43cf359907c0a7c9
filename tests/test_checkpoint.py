"""Checkpoint round trips, and refusal of corrupted, truncated or mismatched files."""

import json

import jax
import numpy as np
import pytest
from _tiny import TinyModel, key_equal, tiny_build
from flax import nnx

from xmodality_lite import checkpoint as ck
from xmodality_lite.config import get_profile
from xmodality_lite.io import file_sha256
from xmodality_lite.training import make_optimizer, params_bytes

PROFILE = get_profile("smoke")


def trained(seed=0):
    """A tiny model and optimiser after one Adam step (so the moments are non-zero)."""
    model = TinyModel(rngs=nnx.Rngs(seed))
    opt = make_optimizer(model, PROFILE)
    grads = jax.tree.map(lambda p: 0.1 * p, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    return model, opt


def save(path, model, opt, name="adm", **kw):
    meta = {"model": name, "profile": PROFILE, "variant": "published", "data_seed": 3}
    return ck.save_checkpoint(path, model, opt, 7, jax.random.key(5), meta, **kw)


def test_round_trip_restores_everything(tmp_path):
    model, opt = trained()
    ema = jax.tree.map(lambda p: p + 1, nnx.state(model, nnx.Param))
    path = save(tmp_path / "a.safetensors", model, opt, ema=ema)
    model2, opt2 = TinyModel(rngs=nnx.Rngs(1)), None
    opt2 = make_optimizer(model2, PROFILE)
    got = ck.load_checkpoint(path, model2, opt2, model_name="adm", profile="smoke")
    assert params_bytes(model2) == params_bytes(model)
    for a, b in zip(jax.tree.leaves(nnx.state(opt)), jax.tree.leaves(nnx.state(opt2)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(opt2.step.get_value()) == 1
    assert got.step == 7 and key_equal(got.key, jax.random.key(5))
    jax.tree.map(np.testing.assert_array_equal, got.ema, ema)
    assert got.meta["profile"] == json.loads(PROFILE.to_json()) and got.meta["data_seed"] == 3
    assert ck.profile_from_dict(got.meta["profile"]) == PROFILE
    side = json.loads(ck.sidecar_path(path).read_text())
    assert side["sha256"] == file_sha256(path) and side["model"] == "adm"


def test_load_model_rebuilds_from_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr("xmodality_lite.models.build_model", tiny_build, raising=False)
    model, opt = trained()
    path = save(tmp_path / "a.safetensors", model, opt)
    assert params_bytes(ck.load_model(path)) == params_bytes(model)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_file_is_refused(tmp_path, damage):
    model, opt = trained()
    path = save(tmp_path / "a.safetensors", model, opt)
    ck.sidecar_path(path).unlink()  # the in-file checksum alone must catch it
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-20] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray(b"not a checkpoint at all")
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="a.safetensors"):
        ck.load_checkpoint(path, TinyModel(rngs=nnx.Rngs(0)))


def test_sidecar_mismatch_is_refused(tmp_path):
    model, opt = trained()
    path = save(tmp_path / "a.safetensors", model, opt)
    other = save(tmp_path / "b.safetensors", *trained(seed=1))
    path.write_bytes(other.read_bytes())  # a valid file, but not the one the sidecar describes
    with pytest.raises(ValueError, match="sha256 differs"):
        ck.load_checkpoint(path, TinyModel(rngs=nnx.Rngs(0)))


def test_other_model_or_profile_is_refused(tmp_path):
    model, opt = trained()
    path = save(tmp_path / "a.safetensors", model, opt, name="adm")
    with pytest.raises(ValueError, match=r"'adm' at profile 'smoke'.*'dit' at profile 'smoke'"):
        ck.load_checkpoint(path, TinyModel(rngs=nnx.Rngs(0)), model_name="dit")
    with pytest.raises(ValueError, match=r"'adm' at profile 'smoke'.*'adm' at profile 'cpu'"):
        ck.load_checkpoint(path, TinyModel(rngs=nnx.Rngs(0)), profile="cpu")
    with pytest.raises(ValueError, match="wrong model"):
        ck.load_checkpoint(path, TinyModel("regression", rngs=nnx.Rngs(0)))


def test_missing_file_and_latest(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        ck.load_checkpoint(tmp_path / "nope.safetensors", TinyModel(rngs=nnx.Rngs(0)))
    assert ck.latest_checkpoint(tmp_path) is None
    model, opt = trained()
    for step in (2, 10):
        save(tmp_path / ck.checkpoint_name(step), model, opt)
    assert ck.latest_checkpoint(tmp_path).name == "step_0000010.safetensors"


@pytest.mark.parametrize("name", ["unet", "dit"])  # a regression and a transformer model
def test_real_models_round_trip_through_load_model(name, tmp_path):
    from xmodality_lite.models import build_model

    model = build_model(name, "smoke", rngs=nnx.Rngs(0))
    meta = {"model": name, "profile": PROFILE, "variant": "published"}
    path = ck.save_checkpoint(tmp_path / f"{name}.safetensors", model, None, 0,
                              jax.random.key(0), meta)
    loaded = ck.load_model(path)
    assert type(loaded) is type(model) and loaded.kind == model.kind
    assert params_bytes(loaded) == params_bytes(model)
    with pytest.raises(ValueError, match="holds no optimiser state"):
        ck.load_checkpoint(path, model, make_optimizer(model, PROFILE))


def test_ema_only_keeps_just_the_averaged_weights(tmp_path, monkeypatch):
    """The shipped files: the EMA weights as the model's, half the bytes, metadata kept."""
    monkeypatch.setattr("xmodality_lite.models.build_model", tiny_build, raising=False)
    model, _ = trained()
    ema = jax.tree.map(lambda p: p + 1, nnx.state(model, nnx.Param))
    path = save(tmp_path / "a.safetensors", model, None, ema=ema)
    expected = params_bytes(ck.load_model(path, use_ema=True))
    before = path.stat().st_size
    ck.ema_only(path)
    meta = ck.read_metadata(path)
    assert meta["weights"] == "ema" and not meta["has_ema"] and meta["data_seed"] == 3
    assert meta["step"] == 7 and path.stat().st_size < before  # one copy of the weights
    assert params_bytes(ck.load_model(path)) == expected
    assert ck.ema_only(path) == path and params_bytes(ck.load_model(path)) == expected  # no-op
    side = json.loads(ck.sidecar_path(path).read_text())
    assert side["sha256"] == file_sha256(path)
