"""The CPU-friendly kernels behind the models equal the XLA/JAX operations they replace.

References: ``jax.lax.conv_general_dilated`` and its autodiff gradients, ``jax.nn.softmax``,
``jax.nn.dot_product_attention``.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny import normal
from flax import nnx

from xmodality_lite.models import attention, convolution, normalization
from xmodality_lite.models.layers import MultiHeadSelfAttention, RowAttention, conv

MEASURE = attention.measure_attention  # the real ones, before any test replaces them
MEASURE_TOKENS_LAST = attention.measure_tokens_last

NHWC = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, padding="SAME", strides=(1, 1)):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- convolution ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 8, 6, 16, 5, 3), (1, 9, 7, 20, 3, 5), (3, 5, 5, 17, 4, 1),
                                   (2, 4, 12, 8, 8, 7)])
def test_conv_kernel_grad_equals_autodiff_of_lax(shape):
    b, h, w, c_in, c_out, k = shape
    x, g = normal(0, (b, h, w, c_in)), normal(1, (b, h, w, c_out))
    _, vjp = jax.vjp(lambda kern: lax_conv(x, kern), jnp.zeros((k, k, c_in, c_out)))
    (expected,) = vjp(g)
    got = jax.jit(convolution.conv_kernel_grad, static_argnums=2)(x, g, (k, k, c_in, c_out))
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-5


def test_conv2d_same_forward_and_both_gradients_equal_lax():
    x, w = normal(0, (2, 10, 8, 24)), normal(1, (3, 3, 24, 12))
    assert rel_err(convolution.conv2d_same(x, w), lax_conv(x, w)) < 1e-6
    ours = jax.grad(lambda x, w: jnp.sum(jnp.sin(convolution.conv2d_same(x, w))), (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(lax_conv(x, w))), (0, 1))(x, w)
    for a, b in zip(ours, ref, strict=True):
        assert rel_err(a, b) < 1e-5


def test_conv2d_same_bfloat16_gradient_keeps_the_kernel_dtype():
    x, w = normal(0, (2, 8, 8, 16), jnp.bfloat16), normal(1, (3, 3, 16, 8), jnp.bfloat16)
    dk = jax.grad(lambda w: jnp.sum(convolution.conv2d_same(x, w).astype(jnp.float32)))(w)
    ref = jax.grad(lambda w: jnp.sum(lax_conv(x, w).astype(jnp.float32)))(w)
    assert dk.dtype == jnp.bfloat16
    assert rel_err(dk, ref) < 2e-2


def _uses_custom_vjp(fn, *args) -> bool:
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def test_dispatch_takes_the_gemm_path_only_where_it_applies(monkeypatch):
    monkeypatch.setattr(convolution, "MIN_CHANNELS", 4)
    monkeypatch.setattr(convolution, "MIN_INPUT_BYTES", 0)
    x, w = normal(0, (1, 8, 8, 8)), normal(1, (3, 3, 8, 8))

    def call(x, w, strides=(1, 1), padding="SAME"):
        return convolution.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

    assert _uses_custom_vjp(call, x, w)
    assert _uses_custom_vjp(lambda x, w: call(x, w, padding=((1, 1), (1, 1))), x, w)
    # stride 2, 'VALID', an even kernel, too few channels: XLA's convolution, unchanged
    assert not _uses_custom_vjp(lambda x, w: call(x, w, strides=(2, 2)), x, w)
    assert not _uses_custom_vjp(lambda x, w: call(x, w, padding="VALID"), x, w)
    w2 = normal(2, (2, 2, 8, 8))
    assert not _uses_custom_vjp(call, x, w2)
    narrow = normal(3, (3, 3, 8, 2))
    assert not _uses_custom_vjp(call, x, narrow)
    # every path computes the same convolution
    assert rel_err(call(x, w), lax_conv(x, w)) < 1e-6
    assert rel_err(call(x, w2), lax_conv(x, w2)) < 1e-6
    assert rel_err(call(x, w, strides=(2, 2)), lax_conv(x, w, strides=(2, 2))) < 1e-6


def test_default_thresholds_keep_small_layers_on_xla():
    # a cpu-profile layer (batch 16, 64², 32 channels) stays on XLA's kernel gradient
    x, w = jnp.zeros((16, 64, 64, 32)), jnp.zeros((3, 3, 32, 32))
    def call(x, w):
        return convolution.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)

    assert not _uses_custom_vjp(call, x, w)
    # a paper-size layer (batch 2, 256², 128 channels) takes the GEMM path
    x = jax.ShapeDtypeStruct((2, 256, 256, 128), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 128, 128), jnp.float32)
    assert "custom_vjp_call" in str(jax.make_jaxpr(call)(x, w))


def test_model_conv_layer_gradient_equals_plain_nnx_conv(monkeypatch):
    monkeypatch.setattr(convolution, "MIN_CHANNELS", 1)
    monkeypatch.setattr(convolution, "MIN_INPUT_BYTES", 0)
    # The custom backward rule calls conv_kernel_grad; count its calls, so this test fails if
    # nnx.Conv stops passing our conv_general_dilated through (both gradients would still agree).
    calls = []
    kernel_grad = convolution.conv_kernel_grad
    monkeypatch.setattr(convolution, "conv_kernel_grad",
                        lambda *a: calls.append(a[2]) or kernel_grad(*a))
    ours = conv(6, 5, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    plain = nnx.Conv(6, 5, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    plain.kernel[...] = ours.kernel[...]
    x = normal(4, (2, 7, 9, 6))

    def grads(layer):
        return nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)

    g_ours, g_plain = grads(ours), grads(plain)
    assert calls == [(3, 3, 6, 5)]  # our rule computed the kernel gradient, once
    assert rel_err(g_ours.kernel[...], g_plain.kernel[...]) < 1e-5
    assert rel_err(g_ours.bias[...], g_plain.bias[...]) < 1e-5


def test_conv_fast_path_has_no_forward_mode(monkeypatch):
    # as layers.conv documents: jvp through a layer on the custom-VJP path raises; grad works
    monkeypatch.setattr(convolution, "MIN_CHANNELS", 1)
    monkeypatch.setattr(convolution, "MIN_INPUT_BYTES", 0)
    layer = conv(4, 4, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = normal(0, (1, 6, 6, 4))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(layer, (x,), (x,))
    monkeypatch.setattr(convolution, "MIN_CHANNELS", 128)  # a small layer stays on lax: jvp works
    jax.jvp(layer, (x,), (x,))


def test_conv_dispatch_leaves_other_backends_to_xla(monkeypatch):
    monkeypatch.setattr(convolution, "MIN_CHANNELS", 4)
    monkeypatch.setattr(convolution, "MIN_INPUT_BYTES", 0)
    x, w = normal(0, (1, 8, 8, 8)), normal(1, (3, 3, 8, 8))

    def call(x, w):
        return convolution.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)

    assert _uses_custom_vjp(call, x, w)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not _uses_custom_vjp(lambda x, w: call(x, w), x, w)  # a new function: no cached trace


# --- attention --------------------------------------------------------------------------------

def test_softmax_last_vjp_equals_autodiff_of_jax_softmax():
    s, g = normal(0, (3, 5, 17)) * 4, normal(1, (3, 5, 17))
    assert rel_err(attention.softmax_last(s), jax.nn.softmax(s, -1)) < 1e-6
    (ours,) = jax.vjp(attention.softmax_last, s)[1](g)
    (ref,) = jax.vjp(lambda s: jax.nn.softmax(s, -1), s)[1](g)
    assert rel_err(ours, ref) < 1e-5


@pytest.mark.parametrize("shape", [(2, 16, 4, 8), (6, 9, 2, 16), (1, 33, 1, 4), (3, 64, 2, 8)])
def test_attention_equals_jax_dot_product_attention(shape):
    """Our kernel itself, at any length (the dispatch may pick either; both must agree)."""
    q, k, v, g = (normal(i, shape) for i in range(4))
    kernel = attention.cpu_dot_product_attention
    assert rel_err(kernel(q, k, v), jax.nn.dot_product_attention(q, k, v)) < 1e-5
    ours = jax.vjp(kernel, q, k, v)[1](g)
    ref = jax.vjp(jax.nn.dot_product_attention, q, k, v)[1](g)
    for a, b in zip(ours, ref, strict=True):
        assert rel_err(a, b) < 1e-4


def _logits_scaled(q, k, v):
    """The kernel as it was: 1/√d applied to Q Kᵀ before an unscaled softmax."""
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
    logits = jnp.einsum("bnth,bnsh->bnts", q, k) * q.shape[-1] ** -0.5
    return jnp.swapaxes(jnp.einsum("bnts,bnsh->bnth", attention.softmax_last(logits), v), 1, 2)


@pytest.mark.parametrize("shape", [(8, 64, 4, 4), (4, 32, 4, 8), (2, 32, 2, 16), (1, 40, 2, 32)])
def test_scale_inside_the_softmax_has_the_bits_of_the_scale_on_the_logits(shape):
    """The scale moved into the softmax's VJP computes the same products in the same order:
    the same bits as scaling Q Kᵀ, values and gradients, wherever the kernel is differentiated
    (the shipped models' training)."""
    q, k, v, g = (normal(i, shape) * 3 for i in range(4))
    new, old = (jax.jit(lambda q, k, v, g, f=f: (lambda out, vjp: (out, vjp(g)))(
                    *jax.vjp(f, q, k, v)))
                for f in (attention.cpu_dot_product_attention, _logits_scaled))
    for a, b in zip(jax.tree.leaves(new(q, k, v, g)), jax.tree.leaves(old(q, k, v, g)),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(2, 3, 16, 4), (1, 2, 40, 32)])  # heads-first [B, heads, T, d]
def test_row_contracted_products_have_the_gradients_of_the_plain_products(shape):
    """``_scores`` (q kᵀ) and ``_mixed`` (p v) with their hand-written VJPs: the values and
    gradients of the plain einsums' autodiff to float32 rounding, and ∂L/∂k = gᵀ q,
    ∂L/∂v = pᵀ g as NumPy computes them in float64."""
    b, n, t, d = shape
    q, k, v = (normal(i, shape) for i in range(3))
    p = jax.nn.softmax(normal(3, (b, n, t, t)), -1)
    g_s, g_m = normal(4, (b, n, t, t)), normal(5, shape)
    for custom, plain, args, g in [
            (attention._scores, lambda q, k: jnp.einsum("bnth,bnsh->bnts", q, k), (q, k), g_s),
            (attention._mixed, lambda p, v: jnp.einsum("bnts,bnsh->bnth", p, v), (p, v), g_m)]:
        out, vjp = jax.vjp(jax.jit(custom), *args)
        ref, ref_vjp = jax.vjp(plain, *args)
        assert rel_err(out, ref) < 2e-6
        for got, want in zip(vjp(g), ref_vjp(g), strict=True):
            assert got.shape == want.shape and rel_err(got, want) < 2e-6
    f64 = [np.asarray(a, np.float64) for a in (q, p, g_s, g_m)]
    assert rel_err(jax.vjp(attention._scores, q, k)[1](g_s)[1],
                   np.einsum("bnts,bnth->bnsh", f64[2], f64[0])) < 2e-6  # gᵀ q
    assert rel_err(jax.vjp(attention._mixed, p, v)[1](g_m)[1],
                   np.einsum("bnts,bnth->bnsh", f64[1], f64[3])) < 2e-6  # pᵀ g


def test_the_gradient_never_contracts_the_logits_along_their_rows_on_the_left(monkeypatch):
    """XLA writes ∂L/∂k and ∂L/∂v as products whose left operand, the [.., T, T] logits'
    gradient or the probabilities, is contracted along its rows (its own slow dot on the CPU).
    Our kernel's compiled gradient has no such product; with the row-contracted form switched
    off (``ROWS_CONTRACTED_MAX_WIDTH`` < d) it has two, and the same gradient to float32
    rounding."""
    q, k, v, g = (normal(i, (8, 64, 4, 4)) for i in range(4))

    def compiled():
        fn = jax.jit(lambda q, k, v, g: jax.vjp(attention.cpu_dot_product_attention, q, k, v)[1](g))
        return fn.lower(q, k, v, g).compile().as_text(), fn(q, k, v, g)

    row_contracted = re.compile(r"dot\(.*lhs_batch_dims=\{0,1\}, lhs_contracting_dims=\{2\}")
    hlo, new = compiled()
    assert not row_contracted.search(hlo)
    monkeypatch.setattr(attention, "ROWS_CONTRACTED_MAX_WIDTH", 0)
    hlo, old = compiled()
    assert len(row_contracted.findall(hlo)) == 2
    for a, b in zip(new, old, strict=True):
        assert rel_err(a, b) < 2e-6


def test_row_contracted_gradient_only_for_narrow_float32_heads():
    assert attention.rows_contracted_for((2, 4, 64, attention.ROWS_CONTRACTED_MAX_WIDTH),
                                         jnp.float32)
    assert not attention.rows_contracted_for((16, 4, 256, 32), jnp.float32)  # DiT cpu: ~1.0x
    assert not attention.rows_contracted_for((2, 4, 64, 64), jnp.float32)  # DiT-L/16's d
    assert not attention.rows_contracted_for((2, 4, 64, 4), jnp.bfloat16)


def _entry_values_of_shape(hlo: str, shape: tuple[int, ...]) -> int:
    """How many values of ``shape`` the compiled program's entry computation writes."""
    entry = hlo[hlo.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    return len(re.findall(rf"= f32\[{','.join(map(str, shape))}\]", entry))


@pytest.mark.parametrize("shape", [(8, 64, 4, 4), (2, 256, 4, 32)])
def test_undifferentiated_attention_normalises_after_the_product(shape):
    """Sampling calls the kernel without a gradient: it divides the [.., T, d] product by the
    row sums instead of the [.., T, T] probabilities (one pass less over the largest array),
    and equals the probabilities-first form to float32 rounding."""
    b, t, n, d = shape
    q, k, v = (jnp.swapaxes(normal(i, shape) * 3, 1, 2) for i in range(3))  # [B, heads, T, d]
    after = jax.jit(attention._heads_first_attention).lower(q, k, v).compile().as_text()
    first = jax.jit(attention._normalised_first).lower(q, k, v).compile().as_text()
    logits = (b, n, t, t)
    assert _entry_values_of_shape(after, logits) < _entry_values_of_shape(first, logits)
    assert rel_err(attention._heads_first_attention(q, k, v),
                   attention._normalised_first(q, k, v)) < 2e-6


def test_no_logit_sized_array_of_the_scale_is_materialised():
    """Scaling the logits made XLA write a [B, heads, T, T] array of the constant 1/√d every
    call (a 67 MB one in the cpu ADM's 64² rows), read by the forward and the backward."""
    b, t, n, d = 8, 64, 4, 4
    q = normal(0, (b, t, n, d))
    fn = jax.jit(lambda q: jax.vjp(attention.cpu_dot_product_attention, q, q, q)[1](q))
    hlo = fn.lower(q).compile().as_text()
    assert f"f32[{b},{n},{t},{t}]" in hlo  # the logits themselves are there
    assert not re.search(rf"= f32\[{b},{n},{t},{t}\]\{{[^}}]*\}} fusion\(%constant[.\d]*\)", hlo)


@pytest.mark.parametrize("shape", [(16, 64, 4, 4), (8, 32, 4, 8), (4, 33, 2, 16), (3, 7, 1, 4)])
def test_tokens_last_forward_equals_the_projections_around_xlas_attention(shape):
    """The sampling path of the conv stages' row attention: the same operator as flax's
    projections around ``jax.nn.dot_product_attention``, at any length, to float32 rounding."""
    args = attention.row_attention_inputs(shape)
    ref = attention._fused_qkv_xla(*args)
    assert rel_err(jax.jit(attention.tokens_last_forward)(*args), ref) < 2e-6
    assert rel_err(attention.tokens_last_forward(*args), ref) < 2e-6


@pytest.mark.parametrize("shape", [(16, 64, 4, 4), (8, 32, 4, 8)])
def test_row_attention_samples_tokens_last_and_trains_with_the_bits_of_our_kernel(shape, ours,
                                                                                    monkeypatch):
    """Undifferentiated, :func:`fused_qkv_attention` runs the tokens-last forward; under ``vjp``
    its values and gradients are those of the projections around our kernel, bit for bit (the
    shipped models' training is unchanged)."""
    args = attention.row_attention_inputs(shape, seed=3)
    g = normal(9, (shape[0], shape[1], shape[2] * shape[3]))
    calls = []
    real = attention.tokens_last_forward
    monkeypatch.setattr(attention, "tokens_last_forward",
                        lambda *a: calls.append(1) or real(*a))
    out = jax.jit(attention.fused_qkv_attention)(*args)
    assert calls and rel_err(out, attention._fused_qkv_ours(*args)) < 2e-6

    def with_grad(f):
        return jax.jit(lambda *a: (lambda o, vjp: (o, vjp(g)))(*jax.vjp(f, *a)))

    calls.clear()
    new, old = with_grad(attention.fused_qkv_attention), with_grad(attention._fused_qkv_ours)
    for a, b in zip(jax.tree.leaves(new(*args)), jax.tree.leaves(old(*args)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not calls  # the differentiated call never ran the tokens-last forward


def test_tokens_last_forward_in_bfloat16_is_finite_and_close(ours):
    args = attention.row_attention_inputs((4, 32, 2, 8), seed=5, dtype=jnp.bfloat16)
    out = attention.fused_qkv_attention(*args)
    assert out.dtype == jnp.bfloat16 and bool(jnp.isfinite(out).all())
    ref = attention._fused_qkv_xla(*(a.astype(jnp.float32) for a in args))
    assert rel_err(out, ref) < 3e-2


def test_tokens_last_is_chosen_like_our_kernel_and_measured_once_per_shape(table, monkeypatch):
    """Never off the CPU, below MIN_TOKENS or with XLA's kernel; with ours fixed from
    OURS_MIN_TOKENS; in auto mode by one forward measurement per shape against the path it
    replaces, kept in the machine's table beside the kernel's own choice."""
    shape, short = (4, 64, 2, 8), (4, attention.MIN_TOKENS - 1, 2, 8)
    timings, calls = {"tokens_last": 1.0, "replaced": 1.5}, []

    def measure(shape, dtype=jnp.float32, repeats=5):
        calls.append(tuple(shape))
        return dict(timings)

    monkeypatch.setattr(attention, "measure_tokens_last", measure)
    assert attention.tokens_last_for(shape) and calls == [shape]
    assert attention.tokens_last_for(shape) and calls == [shape]  # this process's choice
    assert not attention.tokens_last_for(short) and calls == [shape]  # < MIN_TOKENS
    timings.update(replaced=1.01)  # within the margin: the replaced path
    assert not attention.tokens_last_for((4, 32, 2, 8))
    saved = json.loads(attention.table_path().read_text())
    assert saved["tokens_last/4x64x2x8:float32"]["kernel"] == "tokens_last"
    assert saved["tokens_last/4x32x2x8:float32"]["kernel"] == "replaced"
    monkeypatch.setenv(attention.ENV_VAR, "ours")
    rows = (4, attention.OURS_MIN_TOKENS, 2, 8)
    assert attention.tokens_last_for(rows) and not attention.tokens_last_for(
        (4, attention.OURS_MIN_TOKENS - 1, 2, 8))
    assert saved["tokens_last/4x64x2x8:float32"]["replaced_s"] == 1.5
    with attention.fixed_kernel("xla"):
        assert not attention.tokens_last_for(shape)
    monkeypatch.setenv(attention.ENV_VAR, "ours")
    assert attention.tokens_last_for((4, 48, 2, 8)) and len(calls) == 2  # fixed: not measured
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not attention.tokens_last_for(shape)


def test_tokens_last_measurement_times_both_paths(table):
    timings = MEASURE_TOKENS_LAST((8, 32, 2, 4), repeats=1)
    assert set(timings) == {"tokens_last", "replaced"} and all(0 < t < 10 for t in timings.values())


def test_attention_bfloat16_is_finite_and_close(ours):
    q, k, v = (normal(i, (2, attention.OURS_MIN_TOKENS, 2, 8), jnp.bfloat16) for i in range(3))
    out = attention.dot_product_attention(q, k, v)
    assert out.dtype == jnp.bfloat16 and bool(jnp.isfinite(out).all())
    ref = jax.nn.dot_product_attention(*(t.astype(jnp.float32) for t in (q, k, v)))
    assert rel_err(out, ref) < 3e-2


def test_attention_rejects_mismatched_shapes():
    q = jnp.zeros((2, 8, 2, 4))
    with pytest.raises(ValueError, match=r"\[B, T, heads, d\]"):
        attention.dot_product_attention(q, q[:, :4], q)
    with pytest.raises(ValueError, match=r"\[B, T, heads, d\]"):
        attention.dot_product_attention(q[0], q[0], q[0])


def _custom_softmax_vjp_ran(fn, *args) -> bool:
    """Whether the gradient of ``fn`` contains the row sum that only our softmax VJP materialises."""
    return "optimization_barrier" in str(jax.make_jaxpr(jax.grad(fn))(*args))


@pytest.fixture
def ours(monkeypatch):
    """``$XMODALITY_ATTENTION=ours``: our kernel at every shape of OURS_MIN_TOKENS tokens or more."""
    monkeypatch.setenv(attention.ENV_VAR, "ours")


@pytest.fixture
def table(monkeypatch, tmp_path):
    """Auto mode with an empty cache, a fresh process's choices, and measurements that return
    the timings the test sets (``table.timings``); the kernel's records its calls."""
    monkeypatch.setenv("XMODALITY_CACHE", str(tmp_path))
    monkeypatch.setenv(attention.ENV_VAR, "auto")
    monkeypatch.setattr(attention, "_CHOSEN", {})
    fake = SimpleNamespace(calls=[], timings={"ours": 1.0, "xla": 2.0})

    def measure(shape, dtype=jnp.float32, repeats=5):
        fake.calls.append(tuple(shape))
        return dict(fake.timings)

    monkeypatch.setattr(attention, "measure_attention", measure)
    monkeypatch.setattr(attention, "measure_tokens_last",
                        lambda shape, dtype=jnp.float32, repeats=5: {
                            "tokens_last": fake.timings["ours"], "replaced": fake.timings["xla"]})
    return fake


def test_attention_dispatch_uses_our_kernel_on_the_cpu_only(monkeypatch, ours):
    q, k, v = (normal(i, (2, attention.OURS_MIN_TOKENS, 2, 4)) for i in range(3))

    def loss():  # a new function per call, so that no cached trace hides the dispatch
        return lambda q: jnp.sum(attention.dot_product_attention(q, k, v) ** 2)

    assert jax.default_backend() == "cpu"  # the test suite runs on the CPU
    assert _custom_softmax_vjp_ran(loss(), q)
    cpu = attention.dot_product_attention(q, k, v)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert attention.kernel_for(q.shape) == "xla"
    assert not _uses_custom_vjp(loss(), q) and not _custom_softmax_vjp_ran(loss(), q)
    assert rel_err(cpu, attention.dot_product_attention(q, k, v)) < 1e-5


def test_short_sequences_use_xlas_attention(ours, table, monkeypatch):
    """With ours fixed (the shipped models' training), XLA's below OURS_MIN_TOKENS; in auto
    mode XLA's below MIN_TOKENS, unmeasured, and shapes from MIN_TOKENS measured."""
    short, long_ = (normal(0, (2, t, 2, 4)) for t in (attention.OURS_MIN_TOKENS - 1,
                                                      attention.OURS_MIN_TOKENS))
    monkeypatch.setenv(attention.ENV_VAR, "ours")
    for x, used in ((short, False), (long_, True)):
        assert _custom_softmax_vjp_ran(
            lambda q, x=x: jnp.sum(attention.dot_product_attention(q, x, x) ** 2), x) is used
        np.testing.assert_allclose(attention.dot_product_attention(x, x, x),
                                   jax.nn.dot_product_attention(x, x, x), atol=1e-5)
    assert table.calls == []
    monkeypatch.setenv(attention.ENV_VAR, "auto")
    tiny, rows = (2, attention.MIN_TOKENS - 1, 2, 4), (2, attention.MIN_TOKENS, 2, 4)
    assert attention.kernel_for(tiny) == "xla" and table.calls == []
    assert attention.kernel_for(rows) == "ours" and table.calls == [rows]  # measured: faster


def test_xla_mode_never_runs_ours_and_a_bad_mode_is_named(monkeypatch):
    x = normal(0, (2, 64, 2, 4))
    monkeypatch.setenv(attention.ENV_VAR, "xla")
    assert not _custom_softmax_vjp_ran(lambda q: jnp.sum(attention.dot_product_attention(q, x, x)), x)
    monkeypatch.setenv(attention.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="XMODALITY_ATTENTION='fastest'.*auto, ours, xla"):
        attention.dot_product_attention(x, x, x)


def test_fixed_kernel_overrides_mode_and_table_inside_the_block_only(table, monkeypatch):
    shape = (4, 64, 2, 8)
    monkeypatch.setenv(attention.ENV_VAR, "ours")
    with attention.fixed_kernel("xla"):
        assert attention.kernel_for(shape) == "xla"
        with attention.fixed_kernel("ours"):
            assert attention.kernel_for(shape) == "ours"
        assert attention.kernel_for(shape) == "xla"
    assert attention.kernel_for(shape) == "ours"  # the environment's again
    monkeypatch.setenv(attention.ENV_VAR, "auto")
    with attention.fixed_kernel("ours"):
        assert attention.kernel_for(shape) == "ours" and table.calls == []  # nothing measured
    with pytest.raises(ValueError, match="'ours' or 'xla'; got 'auto'"):
        with attention.fixed_kernel("auto"):
            pass


def test_model_flops_counts_xlas_attention_and_times_nothing(table):
    """A FLOP count is the same on every machine: no shape is measured to choose a kernel."""
    from xmodality_lite.models import abstract_model, model_flops

    table.timings = {"ours": 1.0, "xla": 9.0}  # auto would choose ours at DiT's 64 tokens
    flops = model_flops("dit", "smoke")
    assert table.calls == []
    with attention.fixed_kernel("xla"):
        graphdef, state = nnx.split(abstract_model("dit", "smoke"))
        x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
        lowered = jax.jit(lambda s, a, b, c: nnx.merge(graphdef, s)(a, b, c)).lower(
            state, x, x, jax.ShapeDtypeStruct((1,), jnp.float32))
    assert flops == lowered.cost_analysis()["flops"]


def test_choice_needs_ours_faster_by_the_margin():
    assert attention.choose({"ours": 1.0, "xla": attention.MARGIN}) == "ours"
    assert attention.choose({"ours": 1.0, "xla": 0.99 * attention.MARGIN}) == "xla"
    assert attention.choose({"ours": 2.0, "xla": 1.0}) == "xla"
    assert attention.choose({"new": 1.0, "old": 2.0}, "new", "old") == "new"


def test_auto_measures_each_shape_once_and_the_table_outlives_the_process(table, monkeypatch):
    fast, slow = (4, 64, 2, 8), (4, 32, 2, 8)
    table.timings = {"ours": 1.0, "xla": 1.5}
    assert attention.kernel_for(fast) == "ours"
    table.timings = {"ours": 1.0, "xla": 1.01}  # within the margin: XLA's, the replaced one
    assert attention.kernel_for(slow) == "xla"
    assert attention.kernel_for(fast) == "ours" and table.calls == [fast, slow]
    assert attention.kernel_for((4, attention.MIN_TOKENS - 1, 2, 8)) == "xla"  # unmeasured
    assert len(table.calls) == 2

    saved = json.loads(attention.table_path().read_text())
    assert {k: v["kernel"] for k, v in saved.items()} == {"4x64x2x8:float32": "ours",
                                                          "4x32x2x8:float32": "xla"}
    assert saved["4x64x2x8:float32"]["xla_s"] == 1.5
    monkeypatch.setattr(attention, "_CHOSEN", {})  # as a new process: read, never re-measure
    table.timings = {"ours": 9.0, "xla": 1.0}
    assert attention.kernel_for(fast) == "ours" and len(table.calls) == 2
    x = normal(0, fast)  # and the model path follows the table
    assert _custom_softmax_vjp_ran(lambda q: jnp.sum(attention.dot_product_attention(q, x, x)), x)


def test_a_second_process_reads_the_machines_table(tmp_path):
    """Another interpreter (same machine, same JAX, same XLA_FLAGS) takes a shape's kernel from
    the table the first one wrote: here a choice no measurement made, so a re-measurement
    would show."""
    env = {**os.environ, "XMODALITY_CACHE": str(tmp_path), attention.ENV_VAR: "auto"}
    code = ("from xmodality_lite.models import attention as a; import sys; "
            "print(a.table_path()) if sys.argv[1] == 'path' else "
            "print(a.kernel_for((2, 64, 2, 4)), a.kernel_for((2, 96, 2, 4)))")
    path = subprocess.run([sys.executable, "-c", code, "path"], env=env, text=True,
                          capture_output=True, check=True).stdout.strip()
    Path(path).parent.mkdir(parents=True)
    Path(path).write_text(json.dumps({"2x64x2x4:float32": {"kernel": "xla"},
                                      "2x96x2x4:float32": {"kernel": "ours"}}))
    out = subprocess.run([sys.executable, "-c", code, "choose"], env=env, text=True,
                         capture_output=True, check=True).stdout.split()
    assert out == ["xla", "ours"]


def test_measurement_times_both_kernels_even_inside_a_trace(table, monkeypatch):
    monkeypatch.setattr(attention, "measure_attention", MEASURE)  # the real one
    seen = {}

    @jax.jit
    def f(q):
        seen.update(MEASURE(q.shape, repeats=1))
        return attention.dot_product_attention(q, q, q)

    f(normal(0, (2, 32, 2, 4))).block_until_ready()
    assert set(seen) == {"ours", "xla"} and all(0 < t < 10 for t in seen.values())
    assert attention.kernel_for((2, 32, 2, 4)) in ("ours", "xla")
    assert attention.table_path().is_file()


@pytest.mark.parametrize("cls, shape", [
    (RowAttention, (1, 4, 32, 8)),  # conv stages: [B, H, W, C], rows of W = 32 tokens
    (MultiHeadSelfAttention, (2, 32, 8)),  # transformers: [B, N, D]
])
def test_model_attention_gradient_runs_our_softmax_vjp(cls, shape, ours):
    module = cls(8, 2, rngs=nnx.Rngs(0))
    assert _custom_softmax_vjp_ran(lambda x: jnp.sum(module(x) ** 2), normal(5, shape))


# --- group normalisation ----------------------------------------------------------------------


def flax_group_norm(x, scale, bias, groups):
    """flax ``nnx.GroupNorm`` with the given affine parameters (the operation replaced)."""
    layer = nnx.GroupNorm(x.shape[-1], num_groups=groups, epsilon=1e-6, rngs=nnx.Rngs(0))
    layer.scale[...], layer.bias[...] = scale, bias
    return layer(x)


def float64_group_norm(x, scale, bias, groups):
    """The definition, in float64 with numpy: (x − mean) / √(var + ε) per (image, group)."""
    x = np.asarray(x, np.float64)
    g = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
    mean, var = g.mean((1, 3), keepdims=True), g.var((1, 3), keepdims=True)
    y = ((g - mean) / np.sqrt(var + 1e-6)).reshape(x.shape)
    return y * np.asarray(scale, np.float64) + np.asarray(bias, np.float64)


@pytest.mark.parametrize("shape,groups", [((4, 16, 16, 16), 8), ((3, 5, 6, 32), 4),
                                          ((2, 7, 12), 3)])
def test_group_norm_equals_flax_and_the_float64_definition(shape, groups):
    x = normal(0, shape) * 3 + 1.5  # an offset mean, as E[x²] − μ² is sensitive to it
    scale, bias = normal(1, shape[-1:]), normal(2, shape[-1:])
    ours = normalization.group_norm(x, scale, bias, groups, 1e-6)
    exact = float64_group_norm(x, scale, bias, groups)
    assert rel_err(ours, flax_group_norm(x, scale, bias, groups)) < 1e-5
    # summing positions first, then channels, is at least as close to float64 as flax's sum
    assert rel_err(ours, exact) <= max(rel_err(flax_group_norm(x, scale, bias, groups), exact),
                                       1e-6)


def test_group_norm_gradients_and_tangents_equal_flax():
    x, dy = normal(0, (4, 8, 8, 16)) * 2 + 0.5, normal(3, (4, 8, 8, 16))
    scale, bias = normal(1, (16,)), normal(2, (16,))
    ours = lambda x, s, b: normalization.group_norm(x, s, b, 8, 1e-6)  # noqa: E731
    theirs = lambda x, s, b: flax_group_norm(x, s, b, 8)  # noqa: E731
    grads = jax.vjp(ours, x, scale, bias)[1](dy)
    expected = jax.vjp(theirs, x, scale, bias)[1](dy)
    for g, e in zip(grads, expected, strict=True):  # ∂/∂x, ∂/∂γ, ∂/∂β
        assert rel_err(g, e) < 1e-5
    tangents = (dy, normal(4, (16,)), normal(5, (16,)))  # forward mode works too
    np.testing.assert_allclose(jax.jvp(ours, (x, scale, bias), tangents)[1],
                               jax.jvp(theirs, (x, scale, bias), tangents)[1],
                               rtol=1e-4, atol=1e-4)


def test_group_norm_layer_rejects_bad_shapes():
    ours = normalization.GroupNorm(32, num_groups=8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible by num_groups=5"):
        normalization.GroupNorm(32, num_groups=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must be \[B, ..., 32\]"):
        ours(normal(0, (2, 4, 4, 16)))


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_group_norm_layer_keeps_flax_layout_keys_and_dtypes(dtype):
    ours_rngs, flax_rngs = nnx.Rngs(7), nnx.Rngs(7)
    ours = normalization.GroupNorm(32, num_groups=8, dtype=dtype, rngs=ours_rngs)
    theirs = nnx.GroupNorm(32, num_groups=8, epsilon=1e-6, dtype=dtype, rngs=flax_rngs)
    assert jax.tree.map(np.shape, nnx.state(ours)) == jax.tree.map(np.shape, nnx.state(theirs))
    # the layer built next (the U-Net's next conv) starts from the same key as after flax's
    assert np.array_equal(jax.random.key_data(ours_rngs.params()),
                          jax.random.key_data(flax_rngs.params()))
    x = normal(0, (2, 4, 4, 32)) * 2
    tol = 1e-2 if dtype else 1e-5
    for x_in in (x, x.astype(jnp.bfloat16)):  # bfloat16 in: float32 out unless dtype says
        y, expected = ours(x_in), theirs(x_in)
        assert y.dtype == expected.dtype
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(expected, np.float32),
                                   rtol=tol, atol=tol)
