"""The four architectures of paper §3.2, by name, at the size each profile names.

>>> model = build_model("adm", "smoke", rngs=nnx.Rngs(0))
>>> v_hat = model(x_t, cond, logsnr)  # [B, H, W, 1] each, logsnr [B]

``kind`` tells a trainer how to call a model: ``"diffusion"`` models predict v from
(x_t, TOF, log-SNR); the ``"regression"`` U-Net maps TOF → CTA and ignores the extras.
Sizes are the models' keyword arguments per profile (``UNET_SIZES`` etc.); ``paper`` is the
published configuration (Table 2 counts are checked exactly in ``tests/test_models.py``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.config import Profile, get_profile
from xmodality_lite.models import attention, compiler
from xmodality_lite.models.adm import ADM, ADM_SIZES
from xmodality_lite.models.dit import DIT_SIZES, DiT
from xmodality_lite.models.layers import Variant
from xmodality_lite.models.unet import UNET_SIZES, UNet
from xmodality_lite.models.uvit import UVIT_SIZES, UViT


class Architecture(NamedTuple):
    cls: type[nnx.Module]
    sizes: dict[str, dict]  # profile name → constructor kwargs


MODELS: dict[str, Architecture] = {
    "unet": Architecture(UNet, UNET_SIZES),
    "adm": Architecture(ADM, ADM_SIZES),
    "uvit": Architecture(UViT, UVIT_SIZES),
    "dit": Architecture(DiT, DIT_SIZES),
}


def architecture(name: str) -> Architecture:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, profile: str | Profile, *, rngs: nnx.Rngs,
                variant: Variant = "published", dtype=None) -> nnx.Module:
    """Model ``name`` at ``profile``'s size; ``dtype`` (compute) defaults to the profile's.

    Parameters are always float32; ``dtype`` only sets the compute precision.
    """
    arch, profile = architecture(name), get_profile(profile)
    dtype = jnp.dtype(dtype if dtype is not None else profile.train.dtype)
    return arch.cls(**arch.sizes[profile.name], variant=variant, dtype=dtype, rngs=rngs)


M = TypeVar("M")
_QUIET = threading.Lock()


@contextlib.contextmanager
def _tracer_errors_without_origin() -> Iterator[None]:
    # While tracing, `tracer.sharding` raises an AttributeError whose message JAX (0.10) builds
    # by walking back through every equation traced so far (DynamicJaxprTracer._origin_msg), and
    # flax probes `.sharding` each time an RNG stream's counter is updated, i.e. for every
    # parameter drawn. Tracing a constructor is therefore quadratic in its number of parameter
    # tensors, and at the paper size 2.5-5× slower than it need be (benchmarks/RESULTS.md §12).
    # Only the message goes: the error is still raised, and caught by flax.
    from jax._src.interpreters import partial_eval

    tracer = getattr(partial_eval, "DynamicJaxprTracer", None)
    original = vars(tracer).get("_origin_msg") if tracer is not None else None
    if original is None or not _QUIET.acquire(blocking=False):
        yield  # another JAX, or already quiet (nested, or another thread): trace as is
        return
    tracer._origin_msg = lambda self: ""
    try:
        yield
    finally:
        tracer._origin_msg = original
        _QUIET.release()


def eval_shape(constructor: Callable[[], M]) -> M:
    """``nnx.eval_shape(constructor)``, the same module (arrays as ShapeDtypeStructs, nothing
    allocated), several times faster for a paper-size model: see ``_tracer_errors_without_origin``.
    """
    with _tracer_errors_without_origin():
        return nnx.eval_shape(constructor)


@functools.lru_cache(maxsize=32)
def _abstract_split(name: str, profile: Profile, variant: str, dtype) -> tuple:
    # Tracing the paper-size constructor takes a second or more (DiT-L: 24 blocks), so it is
    # done once per (model, profile, variant, dtype); the state holds only ShapeDtypeStructs.
    return nnx.split(eval_shape(
        lambda: build_model(name, profile, rngs=nnx.Rngs(0), variant=variant, dtype=dtype)))


def abstract_model(name: str, profile: str | Profile, *, variant: Variant = "published",
                   dtype=jnp.float32) -> nnx.Module:
    """The model with shapes only (``nnx.eval_shape``): no weights are allocated."""
    architecture(name)
    graphdef, state = _abstract_split(name, get_profile(profile), variant, jnp.dtype(dtype))
    # fresh Variable objects, so a caller filling in weights never touches the cached shapes
    return nnx.merge(graphdef, jax.tree.map(lambda leaf: leaf, state))


def count_params(name: str, profile: str | Profile, *, variant: Variant = "published") -> int:
    """Number of trainable parameters, from shapes alone (paper Table 2 at ``"paper"``)."""
    state = nnx.state(abstract_model(name, profile, variant=variant), nnx.Param)
    return sum(leaf.size for leaf in jax.tree.leaves(state))


def forward(model: nnx.Module, *inputs: jax.Array) -> jax.Array:
    """``model(*inputs)`` compiled as one program, reused per model structure and input shapes.

    An eager call compiles one small program per operation and per shape, hundreds for one
    forward pass of a U-Net; this compiles the pass once (and the compilation cache keeps it),
    with the XLA options the model asks for (:func:`compiler.compiler_options`).
    """
    graphdef, state = nnx.split(model)
    return _forward(compiler.compiler_options(graphdef, "forward"))(graphdef, state, *inputs)


def _apply(graphdef: nnx.GraphDef, state: nnx.State, *inputs: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(*inputs)


@functools.cache
def _forward(options: compiler.Options) -> Callable:
    return compiler.jit(_apply, options, static_argnums=0)


def model_flops(name: str, profile: str | Profile, batch: int = 1, *,
                variant: Variant = "published") -> float:
    """XLA's FLOP count of one float32 forward pass at the profile's image size (≈ 2 × MACs).

    Lowered from abstract shapes, so no paper-size weights are allocated. The count is XLA's
    cost analysis of the lowered (pre-optimisation) module: within 0.1 % of the compiled one
    for all four models, and without a compile that takes seconds at paper size. Attention is
    counted with XLA's kernel (``attention.fixed_kernel``), so the count is the same on every
    machine and no attention shape is timed to choose a kernel for a program that never runs.
    """
    profile = get_profile(profile)
    graphdef, state = nnx.split(abstract_model(name, profile, variant=variant))
    size = profile.image_size
    image = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
    logsnr = jax.ShapeDtypeStruct((batch,), jnp.float32)

    def forward(state, x, cond, logsnr):
        return nnx.merge(graphdef, state)(x, cond, logsnr)

    with attention.fixed_kernel("xla"):
        lowered = jax.jit(forward).lower(state, image, image, logsnr)
    return float(lowered.cost_analysis()["flops"])


# The authors' released weights (models/published.py). Loaded on first use: published.py
# imports the architectures from this package, so an import at the top would be circular.
_PUBLISHED = ("export_published", "load_published")


def __getattr__(name: str):
    if name in _PUBLISHED:
        from xmodality_lite.models import published

        return getattr(published, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADM", "ADM_SIZES", "Architecture", "DIT_SIZES", "DiT", "MODELS", "UNET_SIZES", "UNet",
    "UVIT_SIZES", "UViT", "abstract_model", "architecture", "build_model", "count_params",
    "eval_shape", "export_published", "forward", "load_published", "model_flops",
]
