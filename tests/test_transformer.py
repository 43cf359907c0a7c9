"""Shared transformer pieces against closed forms, flax's reference MHA and the published layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layout import published_layout
from _tiny import normal
from flax import nnx

from xmodality_lite.models.layers import MultiHeadSelfAttention
from xmodality_lite.models.published import transformer_mapping
from xmodality_lite.models.transformer import SwiGLU, Transformer, modulate, sincos_2d_embedding


def param_shapes(model: nnx.Module) -> dict[tuple, tuple[int, ...]]:
    return {path: v.shape for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_sincos_matches_formula():
    gh, gw, d = 3, 5, 16
    emb = np.asarray(sincos_2d_embedding(gh, gw, d))
    assert emb.shape == (gh * gw, d)
    q = d // 4
    for n in range(gh * gw):
        y, x = divmod(n, gw)  # row-major: y outer, x inner
        for k in range(q):
            w = 10000.0 ** (-k / (q - 1))
            expected = [np.sin(x * w), np.cos(x * w), np.sin(y * w), np.cos(y * w)]
            np.testing.assert_allclose(emb[n, k::q], expected, atol=1e-6)
    np.testing.assert_array_equal(emb[0], np.repeat([0.0, 1.0, 0.0, 1.0], q))


def test_sincos_rejects_bad_dim():
    with pytest.raises(ValueError, match="dim"):
        sincos_2d_embedding(4, 4, 10)


def test_modulate():
    np.testing.assert_allclose(modulate(jnp.array(2.0), jnp.array(0.5), jnp.array(3.0)), 8.5)


def test_swiglu_matches_closed_form():
    mlp = SwiGLU(8, 12, time_dim=6, rngs=nnx.Rngs(0))
    # Non-zero biases so that a swapped bias would show.
    for lin in (mlp.time_proj, mlp.gate, mlp.value, mlp.out):
        lin.bias.value = normal(1, lin.bias.shape)
    x = normal(2, (2, 5, 8))
    t = normal(3, (2, 6))

    def dense(lin, v):
        return v @ lin.kernel.value + lin.bias.value

    h = jax.nn.silu(dense(mlp.gate, x)) * dense(mlp.value, x)
    scale, shift = np.split(dense(mlp.time_proj, jax.nn.gelu(t, approximate=True)), 2, -1)
    expected = dense(mlp.out, h * (1 + scale[:, None]) + shift[:, None])
    np.testing.assert_allclose(mlp(x, t), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="t_emb"):
        mlp(x)


def test_attention_matches_flax_reference():
    ours = MultiHeadSelfAttention(16, 4, rngs=nnx.Rngs(0))
    ref = nnx.MultiHeadAttention(4, 16, decode=False, rngs=nnx.Rngs(1))
    for name in ("query", "key", "value", "out"):
        for w in ("kernel", "bias"):
            getattr(getattr(ref, name), w).value = getattr(getattr(ours, name), w).value
    x = normal(0, (2, 7, 16))
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_attention_is_permutation_equivariant():
    attn = MultiHeadSelfAttention(16, 4, rngs=nnx.Rngs(0))
    x = normal(0, (1, 9, 16))
    perm = np.random.default_rng(0).permutation(9)
    np.testing.assert_allclose(attn(x)[:, perm], attn(x[:, perm]), rtol=1e-5, atol=1e-5)


def test_transformer_forward_shape_and_dtype():
    model = Transformer(2, 32, 4, 64, time_dim=16, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = model(jnp.ones((2, 10, 32)), jnp.ones((2, 16)))
    assert y.shape == (2, 10, 32)
    assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))


def test_uvit_transformer_matches_published_layout():
    # U-ViT middle (facts §4): depth 16, dim 512, 4 heads, mlp 2048, time 512.
    model = nnx.eval_shape(lambda: Transformer(16, 512, 4, 2048, time_dim=512, rngs=nnx.Rngs(0)))
    ours = param_shapes(model)
    published = {k: s for k, s in published_layout("uvit").items() if k.startswith("Transformer_0/")}
    mapping = transformer_mapping(16)
    assert set(mapping) == set(published)
    assert set(mapping.values()) == set(ours) and len(mapping) == len(ours)
    for key, path in mapping.items():
        assert ours[path] == published[key], key
    assert sum(np.prod(s) for s in ours.values()) == 100_852_224  # facts §4
