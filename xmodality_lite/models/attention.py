"""Scaled dot-product attention, softmax(Q Kᵀ / √d) V (Vaswani et al. 2017), laid out for XLA's CPU.

Dispatched like :mod:`.convolution`: our kernel below on the CPU backend for sequences of at
least ``MIN_TOKENS`` tokens, ``jax.nn.dot_product_attention`` (XLA's) for shorter ones and on
every other backend. Ours gives the same result (to float32 rounding; tested) and is
1.2–1.5× faster on the CPU, forward + backward, at every shape of 32 tokens or more that the
models use; at 8 and 16 tokens (the conv stages' 8² and 16² rows) XLA's is faster
(``benchmarks/RESULTS.md`` §8, the cpu profile). It was measured only on the CPU, so only
there is it used:

* the heads are moved next to the batch axis once ([B, T, heads, d] → [B, heads, T, d]), so
  both products are plain batched GEMMs with no per-call layout changes;
* the softmax has its own VJP, ∂L/∂s = p ⊙ (g − Σ_j g_j p_j), whose row sum is materialised
  (``optimization_barrier``) so that XLA does not fuse it into the elementwise product and
  recompute it for every element of the row.

Used by the conv-stage row attention (ADM, U-ViT) and by the transformer blocks (U-ViT, DiT).
``softmax_last`` is a ``jax.custom_vjp``: reverse mode works, forward mode (``jvp``) through the
CPU path does not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_TOKENS = 32  # shorter sequences: XLA's attention is faster (measured, RESULTS.md §8)


@jax.custom_vjp
def softmax_last(logits: jax.Array) -> jax.Array:
    """softmax over the last axis of float32 logits."""
    return jax.nn.softmax(logits, axis=-1)


def _softmax_last_fwd(logits):
    p = softmax_last(logits)
    return p, p


def _softmax_last_bwd(p, g):
    row = jax.lax.optimization_barrier(jnp.sum(g * p, axis=-1, keepdims=True))
    return (p * (g - row),)


softmax_last.defvjp(_softmax_last_fwd, _softmax_last_bwd)


def cpu_dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Our kernel: heads next to the batch, two batched GEMMs, :func:`softmax_last` between."""
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [B, heads, T, d]
    logits = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32)
    probs = softmax_last(logits * (q.shape[-1] ** -0.5)).astype(v.dtype)
    return jnp.swapaxes(jnp.einsum("bnts,bnsh->bnth", probs, v), 1, 2)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q kᵀ / √d) v for q, k, v [B, T, heads, d] → [B, T, heads, d] (no mask, no bias).

    :func:`cpu_dot_product_attention` when the default backend is the CPU and T ≥
    ``MIN_TOKENS``, else ``jax.nn.dot_product_attention``.
    """
    if not (q.ndim == k.ndim == v.ndim == 4) or q.shape != k.shape or k.shape != v.shape:
        raise ValueError("q, k, v must share one shape [B, T, heads, d]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if jax.default_backend() == "cpu" and q.shape[1] >= MIN_TOKENS:
        return cpu_dot_product_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v)
