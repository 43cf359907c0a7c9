"""Tiny stand-ins (a two-conv model, synthetic data) and shared helpers for fast tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class TinyModel(nnx.Module):
    """Conv over [x_t, cond] (diffusion) or over tof (regression); log-SNR enters as a bias."""

    def __init__(self, kind: str = "diffusion", *, rngs: nnx.Rngs, dtype=None):
        self.kind = kind
        c_in = 2 if kind == "diffusion" else 1
        self.conv1 = nnx.Conv(c_in, 8, (3, 3), rngs=rngs, dtype=dtype)
        self.conv2 = nnx.Conv(8, 1, (3, 3), rngs=rngs, dtype=dtype)
        self.time = nnx.Linear(1, 8, rngs=rngs, dtype=dtype)

    def __call__(self, x, cond=None, logsnr=None):
        if self.kind == "regression":
            return self.conv2(nnx.gelu(self.conv1(x))).astype(jnp.float32)
        h = self.conv1(jnp.concatenate([x, cond], -1))
        h = h + self.time(logsnr[:, None] / 15.0)[:, None, None, :]
        return self.conv2(nnx.gelu(h)).astype(jnp.float32)


def tiny_build(name, profile, *, rngs, variant="published", dtype=None):
    return TinyModel("regression" if name == "unet" else "diffusion", rngs=rngs, dtype=dtype)


class TinyData:
    """Batches that depend only on (seed, step); the CTA is a smooth function of the TOF."""

    def __init__(self, batch_size=4, size=16, seed=0, fail_at=None):
        self.batch_size, self.size, self.seed, self.fail_at = batch_size, size, seed, fail_at

    def batch_at(self, step):
        if step == self.fail_at:
            raise RuntimeError(f"simulated crash at step {step}")
        rng = np.random.default_rng([self.seed, step])
        tof = np.tanh(rng.normal(size=(self.batch_size, self.size, self.size, 1)))
        return tof.astype(np.float32), (0.5 * tof - 0.2).astype(np.float32)


def normal(seed, shape, dtype=jnp.float32) -> jax.Array:
    """Standard-normal test input drawn by NumPy (``default_rng(seed)``).

    Test inputs need no JAX randomness, and an eager ``jax.random.normal`` compiles one XLA
    program per shape (0.5-1.2 s at rank 4 on 2 cores): 38 s of test_kernels.py's 68 s went to
    drawing inputs. NumPy draws them at no compile cost.
    """
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32), dtype)


def uniform(seed, shape, minval=0.0, maxval=1.0, dtype=jnp.float32) -> jax.Array:
    """Uniform test input on [minval, maxval), drawn by NumPy (see :func:`normal`)."""
    x = np.random.default_rng(seed).uniform(minval, maxval, shape).astype(np.float32)
    return jnp.asarray(x, dtype)


def key_equal(a, b) -> bool:
    return bool(np.array_equal(jax.random.key_data(a), jax.random.key_data(b)))


def adam_losses(model: nnx.Module, inputs: tuple, target: jax.Array, steps: int = 8,
                learning_rate: float = 1e-3) -> list[float]:
    """MSE of ``model(*inputs)`` against ``target`` over ``steps`` Adam steps (before each)."""
    import optax

    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(*inputs) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    return [float(step(model, optimizer)) for _ in range(steps)]
