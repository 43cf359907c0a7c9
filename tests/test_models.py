"""Models of paper §3.2: shapes, exact published sizes, training signal, and the published quirks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny import adam_losses, normal, uniform
from flax import nnx

from xmodality_lite.config import get_profile
from xmodality_lite.models import (
    MODELS,
    abstract_model,
    build_model,
    count_params,
    eval_shape,
    model_flops,
)
from xmodality_lite.models.encoder_decoder import Decoder
from xmodality_lite.models.layers import (
    ResNetBlock,
    RowAttention,
    depth_to_space,
    logsnr_embedding,
    space_to_depth,
)

NAMES = sorted(MODELS)  # unet, adm, uvit, dit: the colleague's DiT runs through the same tests
CONV = ["adm", "unet", "uvit"]
forward = nnx.jit(lambda model, *args: model(*args))  # one compile instead of op-by-op dispatch


def inputs(size: int, batch: int = 2, seed: int = 0):
    shape = (batch, size, size, 1)
    return (normal(seed, shape), uniform([seed, 1], shape, -1, 1),
            uniform([seed, 2], (batch,), -15, 15))


# --- shapes and sizes -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape(name, profile):
    size = get_profile(profile).image_size
    graphdef, state = nnx.split(abstract_model(name, profile))
    x = jax.ShapeDtypeStruct((3, size, size, 1), jnp.float32)
    out = jax.eval_shape(lambda s, x, c, l: nnx.merge(graphdef, s)(x, c, l), state, x, x,
                         jax.ShapeDtypeStruct((3,), jnp.float32))
    assert (out.shape, out.dtype) == ((3, size, size, 1), jnp.float32)


@pytest.mark.parametrize("name", NAMES)
def test_eval_shape_gives_what_nnx_eval_shape_gives(name):
    """The package's faster abstract build traces the same constructor: same graph, same paths,
    shapes and dtypes (at the cpu profile, where flax's own is quick too)."""
    def build():
        return build_model(name, "cpu", rngs=nnx.Rngs(0))

    ours, flax_s = nnx.split(eval_shape(build)), nnx.split(nnx.eval_shape(build))
    assert ours[0] == flax_s[0]
    shapes = [jax.tree.map(lambda v: (v.shape, v.dtype), nnx.to_pure_dict(state))
              for _, state in (ours, flax_s)]
    assert shapes[0] == shapes[1]


def test_eval_shape_leaves_jax_error_messages_as_they_were():
    """Only inside the trace is a tracer's error message shortened; it is restored after, also
    when the constructor raises, and an error raised inside still reaches the caller."""
    from jax._src.interpreters.partial_eval import DynamicJaxprTracer

    original = DynamicJaxprTracer._origin_msg
    seen = []

    def build():  # inside: the method replaced, and a tracer still has no .sharding
        seen.append((DynamicJaxprTracer._origin_msg is original,
                     hasattr(jnp.sin(jnp.ones(2)), "sharding")))
        return build_model("dit", "smoke", rngs=nnx.Rngs(0))

    eval_shape(build)
    with pytest.raises(ValueError, match="unknown variant 'fixed'"):
        eval_shape(lambda: build_model("adm", "smoke", rngs=nnx.Rngs(0), variant="fixed"))
    assert seen == [(False, False)] and DynamicJaxprTracer._origin_msg is original


# Exact counts of the released models (reference facts §14; paper Table 2 rounds them).
PAPER_COUNTS = {"unet": 14_733_953, "adm": 35_371_777, "uvit": 124_719_499, "dit": 558_368_000}


@pytest.mark.parametrize("name", NAMES)
def test_paper_parameter_count_is_exact(name):
    assert count_params(name, "paper") == PAPER_COUNTS[name]


def test_unet_paper_flops_match_reference():
    # XLA cost analysis of the published U-Net, batch 1, 256² (facts §14: 255.5 GFLOPs).
    assert model_flops("unet", "paper") == pytest.approx(255.5e9, rel=0.01)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_forward_is_finite_with_float32_params(name):
    model = build_model(name, "smoke", rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    out = forward(model, *inputs(get_profile("smoke").image_size))
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}


@pytest.mark.parametrize("name", CONV)  # DiT's: test_dit.py::test_adam_steps_lower_loss (both variants)
def test_adam_steps_lower_the_loss(name):
    model = build_model(name, "smoke", rngs=nnx.Rngs(0), dtype=jnp.float32)
    x, cond, logsnr = inputs(get_profile("smoke").image_size)
    # target: a fixed, learnable map of the inputs
    losses = adam_losses(model, (x, cond, logsnr), jnp.tanh(cond))
    assert all(np.diff(losses) < 0) and losses[-1] < 0.9 * losses[0], losses


# --- building blocks --------------------------------------------------------------------------


def test_logsnr_embedding_is_sin_then_cos_with_divisor_half_minus_one():
    lam = np.array([-15.0, 0.3, 7.0])
    freqs = 10000.0 ** (-np.arange(64) / 63)  # facts §1: dim 128, divisor 63
    expected = np.concatenate([np.sin(lam[:, None] * freqs), np.cos(lam[:, None] * freqs)], 1)
    np.testing.assert_allclose(logsnr_embedding(jnp.asarray(lam), 128), expected, atol=2e-5)


def test_space_to_depth_is_channel_major_and_inverted_by_depth_to_space():
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype(np.float32)
    # b (h s1) (w s2) c -> b h w (c s1 s2)
    expected = x.reshape(2, 3, 2, 2, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 3, 2, 12)
    y = space_to_depth(jnp.asarray(x))
    np.testing.assert_array_equal(y, expected)
    assert y[0, 1, 0, 4 * 2 + 2 * 1 + 0] == x[0, 2 + 1, 0, 2]  # channel 2, s1 = 1, s2 = 0
    np.testing.assert_array_equal(depth_to_space(y), x)


def test_row_attention_matches_flax_attention_applied_to_nhwc():
    attn = RowAttention(16, 4, rngs=nnx.Rngs(0))
    ref = nnx.MultiHeadAttention(4, 16, decode=False, rngs=nnx.Rngs(1))
    for p in ("query", "key", "value", "out"):
        rng = np.random.default_rng(len(p))
        getattr(ref, p).kernel[...] = getattr(attn, p)[...]
        bias = rng.normal(size=getattr(attn, f"{p}_bias").shape).astype(np.float32)
        getattr(attn, f"{p}_bias")[...] = bias
        getattr(ref, p).bias[...] = bias
    x = normal(0, (2, 8, 8, 16))
    # Flax attention on a 4-D tensor batches over H (facts §1): the published behaviour.
    np.testing.assert_allclose(attn(x), x + ref(attn.norm(x)), atol=1e-5)


def test_row_attention_mixes_only_within_a_row():
    attn = RowAttention(16, 4, rngs=nnx.Rngs(0))
    x = normal(0, (1, 8, 8, 16))
    dx = jnp.zeros_like(x).at[:, 3, 5].set(1.0)  # perturb one pixel of row 3
    changed = jnp.any(jnp.abs(attn(x + dx) - attn(x)) > 1e-6, axis=(0, 3))  # [H, W]
    assert bool(changed[3].all()) and not bool(changed.at[3].set(False).any())


def test_resnet_block_without_residual_is_the_two_conv_blocks():
    x = normal(0, (1, 8, 8, 16))
    with_res = ResNetBlock(16, 16, residual=True, rngs=nnx.Rngs(0))
    without = ResNetBlock(16, 16, residual=False, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(with_res(x) - without(x), x, atol=1e-5)


# --- published quirks vs the corrected variant -------------------------------------------------


def test_corrected_unet_adds_exactly_the_missing_stage_and_projections():
    # Identity residuals are free; corrected adds a 256-res decoder stage RB(2C→C) with its 1×1
    # projection, and a projection for the head block (2C→C). GroupNorm: scale + bias.
    c = 128
    conv_block = lambda n_in, n_out: 9 * n_in * n_out + n_out + 2 * n_out  # noqa: E731
    projection = 2 * c * c + c
    extra = conv_block(2 * c, c) + conv_block(c, c) + projection + projection
    assert count_params("unet", "paper", variant="corrected") - PAPER_COUNTS["unet"] == extra


@pytest.mark.parametrize("name", CONV)
def test_corrected_variant_is_larger_and_computes_differently(name):
    assert count_params(name, "paper", variant="corrected") > PAPER_COUNTS[name]
    args = inputs(get_profile("smoke").image_size)
    outs = [forward(build_model(name, "smoke", rngs=nnx.Rngs(0), variant=v), *args)
            for v in ("published", "corrected")]
    assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize("variant, reads_first_skip", [("published", False), ("corrected", True)])
def test_published_decoder_ignores_the_highest_resolution_skips(variant, reads_first_skip):
    dec = Decoder(8, (1, 2, 4), blocks=2, heads=4, time_dim=None, norm_kind="rms", groups=0,
                  variant=variant, dtype=jnp.float32, rngs=nnx.Rngs(0))
    shapes = [(16, 8), (16, 8), (8, 16), (8, 16), (4, 32), (4, 32)]  # encoder pushes
    skips = [normal(i, (1, s, s, c)) for i, (s, c) in enumerate(shapes)]
    x = normal(6, (1, 4, 4, 32))
    moved = [skips[0] + 1.0, skips[1] - 1.0, *skips[2:]]
    decode = nnx.jit(lambda dec, x, skips: dec(x, skips))  # one program, not ~100 eager ops
    assert (not np.allclose(decode(dec, x, skips), decode(dec, x, moved))) == reads_first_skip


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bad_shapes_raise_naming_the_expected_shape(name):
    model = build_model(name, "smoke", rngs=nnx.Rngs(0))
    x, cond, logsnr = inputs(32)
    multiple = 8 if name == "uvit" else 4
    bad_size = inputs(multiple * 5 + 4)[0] if name == "uvit" else inputs(34)[0]
    for bad in (x[..., 0], jnp.concatenate([x, x], -1), bad_size):
        what = "patch_size" if name == "dit" else "the downsampling factor"
        with pytest.raises(ValueError,
                           match=rf"\[B, H, W, 1\] with H, W divisible by {what} {multiple}"):
            model(bad, bad if bad.shape != x.shape else cond, logsnr)
    if model.kind == "diffusion":
        with pytest.raises(ValueError, match="cond must have the shape of x"):
            model(x, cond[:1], logsnr)
        with pytest.raises(ValueError, match=r"logsnr must have shape \[B\]"):
            model(x, cond, logsnr[:1])


def test_unknown_names_raise():
    with pytest.raises(ValueError, match=r"unknown model 'vae'; choose one of \['adm', 'dit'"):
        build_model("vae", "smoke", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown variant 'fixed'"):
        build_model("adm", "smoke", rngs=nnx.Rngs(0), variant="fixed")


def test_build_model_takes_the_compute_dtype_from_the_profile():
    assert abstract_model("unet", "smoke").final.dtype == jnp.float32
    paper = eval_shape(lambda: build_model("unet", "paper", rngs=nnx.Rngs(0)))
    assert paper.final.dtype == jnp.bfloat16  # paper profile trains in bf16 (§3.5)
    assert {m.kind for m in (paper, abstract_model("adm", "smoke"))} == {"regression", "diffusion"}


def test_forward_is_the_eager_call_compiled_once_per_structure():
    from xmodality_lite.models import forward

    class Counted(nnx.Module):
        traces = 0

        def __init__(self, rngs):
            self.conv = nnx.Conv(2, 3, kernel_size=(3, 3), rngs=rngs)

        def __call__(self, x, y):
            Counted.traces += 1
            return jnp.tanh(self.conv(jnp.concatenate([x, y], -1)))

    x, y = normal(0, (2, 8, 8, 1)), normal(1, (2, 8, 8, 1))
    a, b = Counted(nnx.Rngs(0)), Counted(nnx.Rngs(1))
    Counted.traces = 0
    got = forward(a, x, y)
    np.testing.assert_allclose(got, a(x, y), rtol=1e-6, atol=1e-6)
    assert Counted.traces == 2  # one trace under jit, one eager call
    other = forward(b, x, y)  # same structure, other weights: no new trace
    assert Counted.traces == 2 and not np.allclose(other, got)
    forward(a, x[:1], y[:1])  # a new shape traces again
    assert Counted.traces == 3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(3, 3, 32, 16), (9, 9, 1, 4), (1, 1, 16, 32), (7, 7, 2, 8),
                                   (2, 5, 7), (96, 48), (16, 1)])
def test_glorot_drawn_flat_equals_flax_glorot_bit_for_bit(shape, dtype):
    """The house kernels' faster-compiling flat draw changes nothing: same bits, same bound."""
    from xmodality_lite.models.layers import flax_glorot, glorot

    key = jax.random.key(7)
    fast = glorot(key, shape, dtype)
    assert fast.shape == shape and fast.dtype == dtype
    np.testing.assert_array_equal(fast, flax_glorot(key, shape, dtype))
    receptive = np.prod(shape[:-2])  # glorot-uniform bound √(6 / (fan_in + fan_out))
    bound = np.sqrt(6 / (receptive * (shape[-2] + shape[-1])))
    assert np.abs(np.asarray(fast, np.float32)).max() <= bound * (1 + 1e-2)
    with pytest.raises(ValueError, match="rank >= 2"):
        glorot(key, (5,))


@pytest.mark.parametrize("shape", [(3, 3, 32, 16), (64, 4, 16), (300, 7)])
def test_lecun_and_truncated_normal_drawn_flat_equal_flax_bit_for_bit(shape):
    """DiT's two other initialisers, drawn the same way, equal flax's lecun_normal and
    truncated_normal(0.02); the law's bounds hold (|x| < 2 σ of the untruncated normal)."""
    from xmodality_lite.models import layers

    key = jax.random.key(11)
    lecun, trunc = layers.lecun(key, shape), layers.trunc_normal(key, shape)
    np.testing.assert_array_equal(lecun, layers.flax_lecun(key, shape))
    np.testing.assert_array_equal(trunc, layers.flax_trunc_normal(key, shape))
    fan_in = np.prod(shape[:-1])
    assert np.abs(lecun).max() < 2 * np.sqrt(1 / fan_in) / 0.87962566103423978
    assert np.abs(trunc).max() < 2 * 0.02
    with pytest.raises(ValueError, match="rank >= 2"):
        layers.lecun(key, (5,))


def test_a_model_draws_every_kernel_as_flax_would_from_few_programs(monkeypatch):
    """A smoke DiT (all three initialisers) built with the padded flat draws has the parameters
    it has with flax's own initialisers, bit for bit, and its kernels come from one compiled
    draw per padded length (:mod:`xmodality_lite.prng`), not one per kernel shape."""
    from xmodality_lite import prng
    from xmodality_lite.models import dit, layers

    layers._scaled_draw.clear_cache()
    ours = nnx.state(build_model("dit", "smoke", rngs=nnx.Rngs(3)), nnx.Param)
    kernels = [p for path, p in jax.tree_util.tree_leaves_with_path(ours)
               if "kernel" in jax.tree_util.keystr(path) and np.any(p)]
    sizes = {prng.draw_size(p.size, jax.random.key(0)) for p in kernels}
    # one program per law (uniform, truncated normal) and padded length; a shape each before
    assert layers._scaled_draw._cache_size() <= 2 * len(sizes) < len({p.shape for p in kernels})
    for name in ("glorot", "lecun", "trunc_normal"):
        monkeypatch.setattr(dit, name, getattr(layers, f"flax_{name}"))
    monkeypatch.setitem(layers.MultiHeadSelfAttention.__init__.__kwdefaults__, "kernel_init",
                        layers.flax_glorot)
    theirs = nnx.state(build_model("dit", "smoke", rngs=nnx.Rngs(3)), nnx.Param)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv_layer_initialises_as_a_flax_glorot_conv():
    """The house conv (flat draw) starts from exactly the weights flax's own Conv would."""
    from xmodality_lite.models.layers import conv, flax_glorot

    layer = conv(3, 5, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    reference = nnx.Conv(3, 5, (3, 3), padding="SAME", kernel_init=flax_glorot, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(layer.kernel[...], reference.kernel[...])
