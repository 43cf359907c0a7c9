"""Published weight layout: exact key/shape equality with the release, and lossless round trips."""

import jax
import numpy as np
import pytest
from _layout import published_layout
from _tiny import normal
from flax import nnx
from safetensors.numpy import load_file, save_file

from xmodality_lite.config import get_profile
from xmodality_lite.models import MODELS, abstract_model, build_model
from xmodality_lite.models.published import export_published, load_published, published_shapes

NAMES = sorted(MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_paper_keys_and_shapes_equal_the_release(name):
    assert published_shapes(abstract_model(name, "paper")) == published_layout(name)


def test_models_exports_the_published_readers():
    """The README's ``xmodality_lite.models.load_published(name, path)``."""
    import xmodality_lite.models as models

    assert models.load_published is load_published
    assert models.export_published is export_published
    assert {"load_published", "export_published"} <= set(models.__all__)


def randomised(name: str):
    """A smoke model whose every parameter is distinct noise, so a swapped key cannot hide."""
    model = build_model(name, "smoke", rngs=nnx.Rngs(0), dtype=np.float32)
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(1)  # numpy: JAX would compile one program per parameter shape
    noisy = [np.float32(0.1) * rng.standard_normal(p.shape, np.float32) for p in leaves]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def model_inputs(batch: int = 2):
    size = get_profile("smoke").image_size
    shape = (batch, size, size, 1)
    return normal([2, 0], shape), normal([2, 1], shape), np.array([-3.0, 4.0], np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_export_then_load_reproduces_the_model(name, tmp_path):
    model = randomised(name)
    path = export_published(model, tmp_path / f"{name}.safetensors")
    loaded = load_published(name, path, profile="smoke")
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)),
                    jax.tree.leaves(nnx.state(loaded, nnx.Param)), strict=True):
        np.testing.assert_array_equal(a, b)
    forward = nnx.jit(lambda m, *args: m(*args))  # one compile serves both (same graph)
    np.testing.assert_array_equal(forward(model, *model_inputs()), forward(loaded, *model_inputs()))
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.safetensors"]  # no temp files left


@pytest.fixture
def adm_file(tmp_path):
    path = export_published(randomised("adm"), tmp_path / "adm.safetensors")
    return path, load_file(path)


def test_missing_key_is_named(adm_file):
    path, tensors = adm_file
    del tensors["ResNetBlock_3/Block_0/Conv_0/kernel"]
    save_file(tensors, path)
    with pytest.raises(ValueError, match=r"missing key 'ResNetBlock_3/Block_0/Conv_0/kernel' "
                                         r"\(expected shape \(3, 3, 16, 16\)\)"):
        load_published("adm", path, profile="smoke")


def test_unexpected_key_is_named(adm_file):
    path, tensors = adm_file
    tensors["ResNetBlock_13/Dense_0/kernel"] = np.zeros((2, 2), np.float32)
    save_file(tensors, path)
    with pytest.raises(ValueError, match="unexpected key 'ResNetBlock_13/Dense_0/kernel'"):
        load_published("adm", path, profile="smoke")


def test_misshaped_key_is_named(adm_file):
    path, tensors = adm_file
    with pytest.raises(ValueError, match=r"key 'Dense_0/bias' has shape \(32,\), expected \(512,\)"):
        load_published("adm", path, profile="paper")  # smoke file, paper model


def test_missing_file_and_corrected_variant_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_published("unet", tmp_path / "absent.safetensors")
    corrected = build_model("unet", "smoke", rngs=nnx.Rngs(0), variant="corrected")
    with pytest.raises(ValueError, match="only for variant='published'"):
        export_published(corrected, tmp_path / "unet.safetensors")
    assert not any(tmp_path.iterdir())
