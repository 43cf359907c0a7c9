"""Ancestral (DDPM) and deterministic (DDIM) samplers on one `jax.lax.scan` driver.

Both walk t = linspace(1, 0, steps + 1) from z_1 ~ N(0, I). Each step predicts v̂, forms
x̂0 = α z − σ v̂ clipped to [−1, 1] (paper §3.3), and hands x̂0 to the sampler's step function,
the only place the two samplers differ. The final sample is clipped to [−1, 1].

Model state: ``apply_fn`` is a plain function or a Flax NNX module. ``functional`` splits a module
into a hashable pure function (closing over its graphdef) and its state, so the jitted driver is
compiled once per (structure, steps, sampler, schedule, dtype/shape) and later calls, also with
new weights, reuse it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.diffusion.parametrisation import alpha_sigma, expand_logsnr, x0_from_v
from xmodality_lite.diffusion.schedules import logsnr_cosine

ApplyFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
Schedule = Callable[[jax.Array], jax.Array]
# A sampler's step: (z_t, x̂0, λ_t, λ_s, key, is_last) -> z_s, the one signature of SAMPLERS
StepFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------- model as a function
@dataclasses.dataclass(frozen=True)
class _PlainFn:
    fn: ApplyFn

    def __call__(self, state: None, z_t, cond, logsnr):
        return self.fn(z_t, cond, logsnr)


@dataclasses.dataclass(frozen=True)
class _MergedModule:
    graphdef: Any  # nnx.GraphDef: hashable and equal for models of the same structure

    def __call__(self, state, z_t, cond, logsnr):
        return nnx.merge(self.graphdef, state)(z_t, cond, logsnr)


def functional(apply_fn: ApplyFn | nnx.Module) -> tuple[Callable[..., jax.Array], Any]:
    """Split a model into ``(pure_fn, state)`` with ``pure_fn(state, z_t, cond, logsnr)``.

    For an NNX module, ``pure_fn`` closes over ``nnx.split(model)``'s graphdef and hashes by it,
    so it can be a static argument of ``jax.jit`` while the state is traced. A plain function
    is wrapped as is, with ``state=None``. Changes the module makes to its own state are dropped.
    """
    if isinstance(apply_fn, nnx.Module):
        graphdef, state = nnx.split(apply_fn)
        return _MergedModule(graphdef), state
    if not callable(apply_fn):
        raise ValueError(f"apply_fn must be callable or an nnx.Module; got {type(apply_fn)}")
    return _PlainFn(apply_fn), None


# --------------------------------------------------------------------------------- step functions
def ddpm_posterior(
    z_t: jax.Array, x0_hat: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(z_s | z_t, x0 = x̂0) for λ_s > λ_t (Kingma et al. 2021, App. A).

    With c = 1 − SNR_t/SNR_s = −expm1(λ_t − λ_s): mean = α_s (z_t (1 − c)/α_t + c x̂0) and
    variance = σ_s² c. λ has shape [B]; the variance is returned as [B, 1, 1, 1].
    """
    logsnr_t, logsnr_s = expand_logsnr(logsnr_t, z_t, "z_t"), expand_logsnr(logsnr_s, z_t, "z_t")
    alpha_t, _ = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    c = -jnp.expm1(logsnr_t - logsnr_s)
    mean = alpha_s * (z_t * (1.0 - c) / alpha_t + c * x0_hat)
    return mean, jnp.square(sigma_s) * c


def ddpm_step(
    z_t: jax.Array,  # [B, H, W, C] float32
    x0_hat: jax.Array,  # [B, H, W, C] clipped to [−1, 1]
    logsnr_t: jax.Array,  # [B]
    logsnr_s: jax.Array,  # [B], λ_s > λ_t
    key: jax.Array,
    is_last: jax.Array,  # bool scalar
) -> jax.Array:
    """Ancestral step z_s ~ q(z_s | z_t, x̂0) (Ho et al. 2020); the last step returns the mean."""
    mean, var = ddpm_posterior(z_t, x0_hat, logsnr_t, logsnr_s)
    noise = jax.random.normal(key, z_t.shape, z_t.dtype)
    return mean + jnp.where(is_last, 0.0, jnp.sqrt(var)) * noise


def ddim_step(
    z_t: jax.Array,  # [B, H, W, C] float32
    x0_hat: jax.Array,  # [B, H, W, C] clipped to [−1, 1]
    logsnr_t: jax.Array,  # [B]
    logsnr_s: jax.Array,  # [B], λ_s > λ_t
    key: jax.Array,  # unused: the step is deterministic
    is_last: jax.Array,  # unused
) -> jax.Array:
    """Deterministic DDIM step, η = 0 (Song et al. 2021, eq. 12): z_s = α_s x̂0 + σ_s ε̂."""
    del key, is_last
    alpha_t, sigma_t = alpha_sigma(expand_logsnr(logsnr_t, z_t, "z_t"))
    alpha_s, sigma_s = alpha_sigma(expand_logsnr(logsnr_s, z_t, "z_t"))
    return alpha_s * x0_hat + (sigma_s / sigma_t) * (z_t - alpha_t * x0_hat)


SAMPLERS: dict[str, StepFn] = {"ddpm": ddpm_step, "ddim": ddim_step}


def get_sampler(name: str) -> StepFn:
    """The step function of sampler ``name``: the one check of a sampler name."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


# ------------------------------------------------------------------------------------ the driver
class Trajectory(NamedTuple):
    """Sampling path for figures. z: [steps + 1, B, H, W, C], z[0] is the initial noise and
    z[-1] the final state before the last clip; x0_hat: [steps, B, H, W, C], the clipped data
    estimate made from z[i]."""

    z: jax.Array
    x0_hat: jax.Array


@partial(jax.jit, static_argnames=("pure_fn", "steps", "sampler", "schedule", "return_trajectory"))
def _sample(pure_fn, state, cond, key, *, steps, sampler, schedule, return_trajectory):
    step_fn = get_sampler(sampler)
    batch = cond.shape[0]
    logsnr = schedule(jnp.linspace(1.0, 0.0, steps + 1))  # [steps + 1]
    key_init, key_steps = jax.random.split(key)

    def body(z_t, xs):
        logsnr_t, logsnr_s, key_i, is_last = xs
        logsnr_t, logsnr_s = jnp.full((batch,), logsnr_t), jnp.full((batch,), logsnr_s)
        # 1. predict v in the model's dtype; 2. x̂0 = α z − σ v̂, clipped to [−1, 1]
        v_hat = pure_fn(state, z_t.astype(cond.dtype), cond, logsnr_t).astype(jnp.float32)
        x0_hat = jnp.clip(x0_from_v(z_t, v_hat, logsnr_t), -1.0, 1.0)
        # 3. the sampler's step from λ_t to λ_s
        z_s = step_fn(z_t, x0_hat, logsnr_t, logsnr_s, key_i, is_last)
        return z_s, ((z_s, x0_hat) if return_trajectory else None)

    # the state z is carried in float32 whatever the model's dtype
    z_1 = jax.random.normal(key_init, cond.shape, jnp.float32)
    xs = (
        logsnr[:-1],
        logsnr[1:],
        jax.random.split(key_steps, steps),
        jnp.arange(steps) == steps - 1,
    )
    z_0, path = jax.lax.scan(body, z_1, xs)
    x = jnp.clip(z_0, -1.0, 1.0).astype(cond.dtype)
    if not return_trajectory:
        return x
    z_path = jnp.concatenate([z_1[None], path[0]]).astype(cond.dtype)
    return x, Trajectory(z=z_path, x0_hat=path[1].astype(cond.dtype))


def sample(
    name: str,
    apply_fn: ApplyFn | nnx.Module,
    cond: jax.Array,  # [B, H, W, C] condition (TOF) in [-1, 1]
    key: jax.Array,
    *,
    steps: int,
    schedule: Schedule = logsnr_cosine,
    return_trajectory: bool = False,
) -> jax.Array | tuple[jax.Array, Trajectory]:
    """Draw x0 [B, H, W, C] in [−1, 1] given ``cond`` with the sampler ``name`` (see SAMPLERS).

    ``steps`` model calls on t = linspace(1, 0, steps + 1) under ``schedule``; the same key gives
    the same sample. With ``return_trajectory`` also returns a :class:`Trajectory`. Compilations
    are reused per (model structure, steps, sampler, schedule, shape, dtype): pass an NNX module
    or one stable function (a fresh lambda per call recompiles) and a stable schedule
    (``get_schedule`` returns the same object for the same arguments).
    """
    get_sampler(name)  # fail before tracing
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if jnp.ndim(cond) != 4:
        raise ValueError(f"cond must be NHWC [B, H, W, C]; got shape {tuple(jnp.shape(cond))}")
    if not jnp.issubdtype(cond.dtype, jnp.floating):
        raise ValueError(f"cond must be a floating-point array; got dtype {cond.dtype}")
    pure_fn, state = functional(apply_fn)
    return _sample(
        pure_fn,
        state,
        cond,
        key,
        steps=steps,
        sampler=name,
        schedule=schedule,
        return_trajectory=return_trajectory,
    )


def ddpm_sample(apply_fn: ApplyFn | nnx.Module, cond: jax.Array, key: jax.Array, *, steps: int,
                schedule: Schedule = logsnr_cosine, return_trajectory: bool = False
                ) -> jax.Array | tuple[jax.Array, Trajectory]:
    """Ancestral DDPM sampling (Ho et al. 2020), the paper's default sampler (Tables 1-4)."""
    return sample("ddpm", apply_fn, cond, key, steps=steps, schedule=schedule,
                  return_trajectory=return_trajectory)


def ddim_sample(apply_fn: ApplyFn | nnx.Module, cond: jax.Array, key: jax.Array, *, steps: int,
                schedule: Schedule = logsnr_cosine, return_trajectory: bool = False
                ) -> jax.Array | tuple[jax.Array, Trajectory]:
    """Deterministic DDIM sampling, η = 0 (Song et al. 2021); the noise is the only randomness."""
    return sample("ddim", apply_fn, cond, key, steps=steps, schedule=schedule,
                  return_trajectory=return_trajectory)
