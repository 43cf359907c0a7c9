"""A 'same' 2-D convolution whose kernel gradient runs as matrix products on the CPU.

XLA's CPU backend computes the forward convolution and its input gradient near the machine's
GEMM throughput, but the kernel gradient ∂L/∂W — a correlation of the input with the output
gradient — runs an order of magnitude slower (about 20 GFLOP/s against 180 for a 3×3, 128 → 128
convolution at 256², batch 2; ``benchmarks/RESULTS.md``). That one operation dominates the train
step of every convolutional model at the paper's size.

The kernel gradient is a sum of k² matrix products. With the input zero-padded and flattened
row-major over a grid of width W + k − 1, the input pixel under kernel tap (i, j) of output
position p is the flat row p + i·(W + k − 1) + j, so

    ∂L/∂W[i, j] = Σ_b X_b[o_ij : o_ij + L]ᵀ · G_b,   o_ij = i·(W + k − 1) + j,

where G is the output gradient padded with zero columns to the same width and L = H·(W + k − 1).
Each term is one [C_in, L] × [L, C_out] product over a contiguous slice — no im2col copy. A
``lax.scan`` over the k² taps runs them one after another, so the two cores share one GEMM
instead of contending over nine. The forward pass and the input gradient stay XLA's.

:func:`conv_general_dilated` has the signature of ``jax.lax.conv_general_dilated`` and is what
``nnx.Conv`` calls in our models; anything other than a stride-1, undilated, ungrouped NHWC
convolution with an odd kernel and 'same' padding on the CPU goes straight to ``lax``.
``conv2d_same`` is a ``jax.custom_vjp``: reverse mode (``grad``, ``vjp``) works to any order
of composition with other transforms, forward mode (``jvp``, ``jacfwd``) through it does not;
where a layer takes the fast path, differentiate it in reverse mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Where the matrix products win (measured on the 2-core CPU, benchmarks/RESULTS.md §1): XLA's own
# kernel gradient is fast while its operands fit in cache, and slows 2–5× beyond. Below these
# sizes (every `cpu`- and `smoke`-profile layer, the 1–8-channel stems) XLA's is kept.
MIN_CHANNELS = 128                # min(C_in, C_out)
MIN_INPUT_BYTES = 16 * 2**20      # size of the layer's input x


def _lax_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    kh, kw = kernel.shape[:2]
    padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))  # odd kernels only
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                        dimension_numbers=DIMENSION_NUMBERS)


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """∂L/∂W of a stride-1 'same' convolution: k_h·k_w matrix products over flat shifts.

    x: input [B, H, W, C_in]; g: output gradient [B, H, W, C_out]; returns [k_h, k_w, C_in, C_out]
    in float32 (accumulated in float32 whatever the input dtype).
    """
    kh, kw, c_in, c_out = kernel_shape  # odd kh, kw
    b, h, w, _ = x.shape
    width = w + kw - 1
    # one extra zero row at the bottom keeps the slice of the last tap in bounds
    xf = jnp.pad(x, ((0, 0), (kh // 2, kh // 2 + 1), (kw // 2, kw // 2), (0, 0)))
    xf = xf.reshape(b, -1, c_in)
    gf = jnp.pad(g, ((0, 0), (0, 0), (0, kw - 1), (0, 0))).reshape(b, h * width, c_out)
    offsets = jnp.array([i * width + j for i in range(kh) for j in range(kw)], jnp.int32)

    def tap(_, offset):
        xs = jax.lax.dynamic_slice_in_dim(xf, offset, h * width, axis=1)
        # one product per image, summed after: a batched GEMM needs no transposed copy of xs
        per_image = jnp.einsum("blc,blo->bco", xs, gf, preferred_element_type=jnp.float32)
        return None, per_image.sum(0)

    _, taps = jax.lax.scan(tap, None, offsets)
    return taps.reshape(kh, kw, c_in, c_out)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 NHWC × HWIO convolution with 'same' zero padding (the forward is XLA's)."""
    return _lax_same(x, kernel)


def _conv2d_same_fwd(x, kernel):
    return _lax_same(x, kernel), (x, kernel)


def _conv2d_same_bwd(residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _lax_same(x_, kernel), x)
    (dx,) = input_vjp(g)
    dk = conv_kernel_grad(x, g, kernel.shape).astype(kernel.dtype)
    return dx, dk


conv2d_same.defvjp(_conv2d_same_fwd, _conv2d_same_bwd)


def _is_plain_same(x, kernel, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count) -> bool:
    """Whether the call is a stride-1, undilated, ungrouped NHWC/HWIO 'same' convolution."""
    if x.ndim != 4 or kernel.ndim != 4 or feature_group_count != 1 or dimension_numbers is None:
        return False
    kh, kw = kernel.shape[:2]
    if not (kh % 2 and kw % 2) or tuple(strides) != (1, 1):
        return False
    if any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
        return False
    nhwc = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, DIMENSION_NUMBERS)
    if jax.lax.conv_dimension_numbers(x.shape, kernel.shape, dimension_numbers) != nhwc:
        return False
    same = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    return padding == "SAME" or (not isinstance(padding, str)
                                 and tuple(tuple(p) for p in padding) == same)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         **kwargs):
    """``jax.lax.conv_general_dilated`` with :func:`conv2d_same`'s kernel gradient where it applies.

    The fast path is taken for stride-1 'same' NHWC convolutions at least ``MIN_CHANNELS`` wide
    on ``MIN_INPUT_BYTES`` of input when the default backend is the CPU; on GPUs (cuDNN has a
    fast kernel gradient) and for anything else the call is passed to ``lax`` unchanged.
    """
    fast = (jax.default_backend() == "cpu" and precision is None
            and all(kwargs.get(k) is None for k in ("preferred_element_type", "out_sharding"))
            and lhs.ndim == 4 and rhs.ndim == 4
            and min(rhs.shape[2], rhs.shape[3]) >= MIN_CHANNELS
            and lhs.size * lhs.dtype.itemsize >= MIN_INPUT_BYTES
            and _is_plain_same(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                               dimension_numbers, feature_group_count))
    if fast:
        return conv2d_same(lhs, rhs)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs)
