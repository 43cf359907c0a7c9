"""Ancestral (DDPM) and deterministic (DDIM) samplers on one driver.

Both walk t = linspace(1, 0, steps + 1) from z_1 ~ N(0, I). Each step predicts v̂, forms
x̂0 = α z − σ v̂ clipped to [−1, 1] (paper §3.3), and hands x̂0 to the sampler's step function,
the only place the two samplers differ. The final sample is clipped to [−1, 1].

Compilation: one loop program per (model structure, shape, dtype) serves every step count and
every sampler. The number of steps is an argument of a ``fori_loop`` and the loop reads λ and
the per-step keys from arrays padded to ``GRID_LENGTH`` steps. z_1 and the keys are drawn by one
program per padded length of z_1 (the step count is an argument there too, and z_1 the start of
a flat draw cut to shape, both under JAX's default partitionable threefry,
:mod:`xmodality_lite.prng`), so a new step count costs only a tiny program for λ, and a new
image shape no new draw. The sampler is an argument too,
an index into the registered step functions: each step computes all of them (elementwise,
beside one model call) and keeps the chosen one, so DDIM after DDPM compiles nothing; a sampler
registered later makes a new program. (A ``lax.scan`` over ``steps`` would compile the whole model once per step
count; the loop keeps what a scan has over steps called one by one from Python: XLA hoists the
work that does not change between steps out of the loop.) A trajectory is collected by calling
one compiled step per step from Python.

Model state: ``apply_fn`` is a plain function or a Flax NNX module. ``functional`` splits a module
into a hashable pure function (closing over its graphdef) and its state, so the loop is compiled
once per (structure, dtype/shape) and later calls, also with new weights, reuse it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xmodality_lite import prng
from xmodality_lite.diffusion.parametrisation import alpha_sigma, expand_logsnr, x0_from_v
from xmodality_lite.diffusion.schedules import logsnr_cosine
from xmodality_lite.models import compiler

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


def _denoise(pure_fn, state, z_t, cond, logsnr_t, logsnr_s, key, is_last, which, *, step_fns):
    """One step from λ_t to λ_s (scalars): predict v̂ in the model's dtype, form
    x̂0 = α z − σ v̂ clipped to [−1, 1], and take the step ``step_fns[which]`` (``which`` is
    traced: one program holds every sampler). Returns (z_s, x̂0)."""
    batch = cond.shape[0]
    logsnr_t, logsnr_s = jnp.full((batch,), logsnr_t), jnp.full((batch,), logsnr_s)
    v_hat = pure_fn(state, z_t.astype(cond.dtype), cond, logsnr_t).astype(jnp.float32)
    x0_hat = jnp.clip(x0_from_v(z_t, v_hat, logsnr_t), -1.0, 1.0)
    args = (z_t, x0_hat, logsnr_t, logsnr_s, key, is_last)
    # every step computed, one kept: elementwise work, small beside the model call, and it fuses
    # with it (a lax.switch would run one branch but cost the loop ~10-15 % in fusion)
    return jnp.stack([step(*args) for step in step_fns])[which], x0_hat


# One loop program serves every step count up to its grid length: λ and the keys are padded to it.
GRID_LENGTH = 1024


def _grid_length(steps: int) -> int:
    return max(GRID_LENGTH, 1 << (steps - 1).bit_length())


@partial(jax.jit, static_argnames=("size", "length", "draws", "per_key"))
def _start(key, steps, *, size, length, draws, per_key):
    """z_1 ~ N(0, I) in float32 as a flat draw of ``size`` numbers (cut to shape by
    :func:`_drive`: one program serves every shape up to ``size``, :mod:`xmodality_lite.prng`)
    and one key per step as raw key data, zero-padded to ``length`` steps; with ``per_key`` one
    z_1 and one set of keys per key. The keys are ``split(key_steps, steps)``, drawn as a split
    in ``draws`` (static) cut to ``steps`` (traced): with ``draws=length`` one program serves
    every step count, which is exact where a split's children are numbered by index (see
    :func:`_key_draws`)."""

    def chain(k):
        key_init, key_steps = jax.random.split(k)
        z_1 = jax.random.normal(key_init, (size,), jnp.float32)
        data = jax.random.key_data(jax.random.split(key_steps, draws))
        data = jnp.pad(data, ((0, length - draws), (0, 0)))
        return z_1, jnp.where(jnp.arange(length)[:, None] < steps, data, 0)

    return jax.vmap(chain)(key) if per_key else chain(key)


def _key_draws(key: jax.Array, steps: int, length: int) -> int:
    """How many step keys :func:`_start` splits off: ``length`` (one program for every step
    count) where a split of ``steps`` is the start of a longer one (:func:`prng.prefix_draws`,
    JAX's default); else ``steps``, a program per step count, as other key schemes need."""
    return length if prng.prefix_draws(key) else steps


@partial(jax.jit, static_argnames=("steps", "length", "schedule"))
def _logsnr_grid(*, steps, length, schedule):
    """λ on t = linspace(1, 0, steps + 1), zero-padded to ``length`` + 1 entries: a tiny program
    per step count."""
    return jnp.pad(schedule(jnp.linspace(1.0, 0.0, steps + 1)), (0, length - steps))


def _one_step(pure_fn, state, z_t, cond, logsnr_t, logsnr_s, key_data, is_last, which, *,
              step_fns, impl, per_key):
    def one(z, c, data):
        key = jax.random.wrap_key_data(data, impl=impl)
        return _denoise(pure_fn, state, z, c, logsnr_t, logsnr_s, key, is_last, which,
                        step_fns=step_fns)

    if per_key:  # z_t [B, 1, H, W, C], cond [B, H, W, C]: one chain of batch 1 per row
        return jax.vmap(lambda z, c, data: one(z, c[None], data))(z_t, cond, key_data)
    return one(z_t, cond, key_data)


def _clip(z_0, dtype, per_key):
    return jnp.clip(z_0[:, 0] if per_key else z_0, -1.0, 1.0).astype(dtype)


def _loop(pure_fn, state, z_1, cond, logsnr, key_data, steps, which, *, step_fns, impl, per_key):
    """``steps`` (an argument) steps of sampler ``which`` (an argument) in one compiled loop over
    the padded λ and keys: one program for every step count up to the grid's length, and for
    every sampler."""

    def body(i, z_t):
        data = key_data[:, i] if per_key else key_data[i]
        return _one_step(pure_fn, state, z_t, cond, logsnr[i], logsnr[i + 1], data,
                         i == steps - 1, which, step_fns=step_fns, impl=impl,
                         per_key=per_key)[0]

    return _clip(jax.lax.fori_loop(0, steps, body, z_1), cond.dtype, per_key)


def _step(pure_fn, state, z_t, cond, logsnr_t, logsnr_s, key_data, is_last, which, *, step_fns,
          impl, per_key):
    """One compiled step, walked from Python when the trajectory is kept."""
    return _one_step(pure_fn, state, z_t, cond, logsnr_t, logsnr_s, key_data, is_last, which,
                     step_fns=step_fns, impl=impl, per_key=per_key)


@functools.cache
def _compiled(fn: Callable, options: compiler.Options) -> Callable:
    """``fn`` (:func:`_loop` or :func:`_step`) jitted with the model's XLA options
    (:func:`xmodality_lite.models.compiler.compiler_options`), once per option set."""
    return compiler.jit(fn, options, static_argnames=("pure_fn", "step_fns", "impl", "per_key"))


def _drive(pure_fn, state, cond, key, *, steps, sampler, schedule, per_key=False,
           return_trajectory=False):
    """Sample with the loop program, or step by step for a trajectory; see :func:`sample`."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # a raw uint32 key (PRNGKey)
        key = jax.random.wrap_key_data(key)
    shape = (1, *cond.shape[1:]) if per_key else tuple(cond.shape)
    length = _grid_length(steps)
    lead = key.shape if per_key else ()
    z_t, key_data = _start(key, np.int32(steps), size=prng.draw_size(math.prod(shape), key),
                           length=length, draws=_key_draws(key, steps, length), per_key=per_key)
    z_t = prng.cut(z_t, (*lead, *shape))
    logsnr = _logsnr_grid(steps=steps, length=length, schedule=schedule)
    which = np.int32(list(SAMPLERS).index(sampler))  # every registered step in the program
    static = {"step_fns": tuple(SAMPLERS.values()), "impl": str(jax.random.key_impl(key)),
              "per_key": per_key}
    options = compiler.compiler_options(pure_fn, "forward")
    if not return_trajectory:
        return _compiled(_loop, options)(pure_fn, state, z_t, cond, logsnr, key_data,
                                         np.int32(steps), which, **static)
    logsnr, key_data = np.asarray(logsnr), np.asarray(key_data)  # trajectories: sample() only
    path = [(z_t, None)]
    step = _compiled(_step, options)
    for i in range(steps):
        z_t, x0_hat = step(pure_fn, state, z_t, cond, logsnr[i], logsnr[i + 1], key_data[i],
                           np.bool_(i == steps - 1), which, **static)
        path.append((z_t, x0_hat))
    z, x0 = (np.stack([np.asarray(p[j]) for p in path[j:]]).astype(cond.dtype) for j in (0, 1))
    x = jnp.asarray(np.clip(z[-1], -1.0, 1.0))
    return x, Trajectory(z=jnp.asarray(z), x0_hat=jnp.asarray(x0))


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
    are reused per (model structure, shape, dtype), whatever ``steps`` and sampler: pass an NNX
    module or one stable function (a fresh lambda per call recompiles) and a stable schedule
    (``get_schedule`` returns the same object for the same arguments).
    """
    _check(name, steps, cond)
    pure_fn, state = functional(apply_fn)
    return _drive(pure_fn, state, cond, key, steps=steps, sampler=name, schedule=schedule,
                  return_trajectory=return_trajectory)


def sample_slices(
    name: str,
    apply_fn: ApplyFn | nnx.Module,
    cond: jax.Array,  # [B, H, W, C] condition (TOF) in [-1, 1]
    keys: jax.Array,  # [B] keys, one per slice
    *,
    steps: int,
    schedule: Schedule = logsnr_cosine,
) -> jax.Array:
    """One independent chain per slice: row i equals ``sample(name, apply_fn, cond[i:i+1],
    keys[i], ...)[0]``, all rows in one batch. A slice's sample depends on its key only, not on
    the slices batched with it (:func:`xmodality_lite.translate_slices`)."""
    _check(name, steps, cond)
    if jnp.shape(keys) != (cond.shape[0],):
        raise ValueError(f"keys must be one key per slice, shape ({cond.shape[0]},); "
                         f"got {tuple(jnp.shape(keys))}")
    pure_fn, state = functional(apply_fn)
    return _drive(pure_fn, state, cond, keys, steps=steps, sampler=name, schedule=schedule,
                  per_key=True)


def _check(name: str, steps, cond) -> None:
    get_sampler(name)  # fail before tracing
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if jnp.ndim(cond) != 4:
        raise ValueError(f"cond must be NHWC [B, H, W, C]; got shape {tuple(jnp.shape(cond))}")
    if not jnp.issubdtype(cond.dtype, jnp.floating):
        raise ValueError(f"cond must be a floating-point array; got dtype {cond.dtype}")


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
