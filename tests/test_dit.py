"""DiT-L/16 (paper §3.2; Peebles & Xie 2023): exact size, published layout, adaLN-Zero init, training signal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layout import published_layout
from _tiny import adam_losses, normal, uniform
from flax import nnx
from test_transformer import param_shapes

from xmodality_lite.models import eval_shape
from xmodality_lite.models.dit import DIT_SIZES, DiT, patchify, unpatchify
from xmodality_lite.models.layers import logsnr_embedding
from xmodality_lite.models.published import dit_mapping

VARIANTS = ["published", "corrected"]
IMAGE = {"smoke": 32, "cpu": 64, "paper": 256}


def make(size: str, variant: str = "published", **kw) -> DiT:
    return DiT(**DIT_SIZES[size], variant=variant, **kw, rngs=nnx.Rngs(0))


@nnx.jit
def forward(model: DiT, x_t, cond, logsnr) -> jax.Array:
    return model(x_t, cond, logsnr)


def inputs(size: str, batch: int = 2, seed: int = 0):
    shape = (batch, IMAGE[size], IMAGE[size], 1)
    return (normal(seed, shape), uniform([seed, 1], shape, -1, 1),
            uniform([seed, 2], (batch,), -15, 15))


@pytest.fixture(scope="module")
def paper_model() -> DiT:
    return eval_shape(lambda: make("paper"))  # the package's: nnx.eval_shape, faster


def test_paper_parameter_count(paper_model):
    # facts §5/§14: 558,368,000 in 447 tensors (paper Table 2: 558M).
    shapes = param_shapes(paper_model)
    assert len(shapes) == 447
    assert sum(int(np.prod(s)) for s in shapes.values()) == 558_368_000


def test_paper_layout_matches_published(paper_model):
    ours = param_shapes(paper_model)
    published = published_layout("dit")
    mapping = dit_mapping(depth=24)
    assert set(mapping) == set(published)
    assert set(mapping.values()) == set(ours) and len(mapping) == len(ours)
    for key, path in mapping.items():
        assert ours[path] == published[key], key


@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_output_at_init(variant):
    # adaLN-Zero and the zero-initialised head make a fresh DiT output exactly 0 (facts §14).
    v = forward(make("smoke", variant), *inputs("smoke"))
    assert v.shape == (2, 32, 32, 1) and v.dtype == jnp.float32
    assert float(jnp.abs(v).max()) == 0.0


@pytest.mark.parametrize("size", ["smoke", "cpu"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape(size, variant):
    model = make(size, variant)
    nnx.update(model, jax.tree.map(lambda p: p + 0.01, nnx.state(model, nnx.Param)))
    v = forward(model, *inputs(size, batch=1))
    assert v.shape == (1, IMAGE[size], IMAGE[size], 1)
    assert float(jnp.abs(v).max()) > 0


def test_bfloat16_forward_finite():
    model = make("smoke", dtype=jnp.bfloat16)
    nnx.update(model, jax.tree.map(lambda p: p + 0.01, nnx.state(model, nnx.Param)))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    v = forward(model, *inputs("smoke"))
    assert bool(jnp.all(jnp.isfinite(v))) and float(jnp.abs(v).max()) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_adam_steps_lower_loss(variant):
    x_t, cond, logsnr = inputs("smoke", batch=4)
    losses = adam_losses(make("smoke", variant), (x_t, cond, logsnr), jnp.tanh(cond) * 0.5)
    assert all(np.diff(losses) < 0) and losses[-1] < 0.8 * losses[0], losses


def test_logsnr_features_cos_first():
    # facts §5: [cos, sin], f_k = exp(−ln(10⁴)·k/half).
    lam = jnp.array([0.0, 2.5])
    f = np.asarray(logsnr_embedding(lam, 8, cos_first=True, endpoint=False))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    np.testing.assert_allclose(f[1], np.concatenate([np.cos(2.5 * freqs), np.sin(2.5 * freqs)]),
                               rtol=1e-6)
    np.testing.assert_array_equal(f[0], [1, 1, 1, 1, 0, 0, 0, 0])


def test_patchify_layout_and_inverse():
    x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
    t = patchify(x, 4)
    assert t.shape == (2, 2, 2, 48)
    # b (h p1) (w p2) c -> b h w (p1 p2 c): token (1, 0), entry (p1=2, p2=3, c=1)
    assert t[1, 1, 0, (2 * 4 + 3) * 3 + 1] == x[1, 4 + 2, 0 + 3, 1]
    np.testing.assert_array_equal(unpatchify(t, 4), x)


@pytest.mark.parametrize("shape, match", [
    ((2, 30, 32, 1), "divisible"),
    ((2, 32, 32, 2), r"\[B, H, W, 1\]"),
    ((32, 32, 1), r"\[B, H, W, 1\]"),
])
def test_bad_input_shape_raises(shape, match):
    model = make("smoke")
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(shape), jnp.zeros(shape), jnp.zeros(shape[:1]))


def test_bad_logsnr_and_variant_raise():
    model = make("smoke")
    x = jnp.zeros((2, 32, 32, 1))
    with pytest.raises(ValueError, match="logsnr"):
        model(x, x, jnp.zeros(()))
    with pytest.raises(ValueError, match="cond"):
        model(x, x[:1], jnp.zeros(2))
    with pytest.raises(ValueError, match="variant"):
        make("smoke", "fixed")
