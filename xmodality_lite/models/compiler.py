"""XLA CPU compiler options that a model asks for, passed to the programs that run it.

XLA's CPU backend hands matrix products, convolutions and the elementwise and reduce fusions
around them to its YNNPACK library. At our ``cpu``-profile widths that is not always the faster
choice. XLA's own 3×3 convolutions ran 1.8–2.1× faster forward and 2.5–3.9× in the gradient at
16²–32² (batch 32/16). YNNPACK's reductions, on the other hand, ran 4–8× faster than XLA's own,
which rewrites a per-channel sum over [B, H, W] into a reduce-window tree. So the option
:data:`YNN_DOT_REDUCE` (``xla_cpu_experimental_ynn_fusion_type`` = matrix products and
reductions) gives the convolutions and elementwise fusions to XLA and keeps the rest with
YNNPACK. A/B pairs in one process, train step: U-Net 1.3–1.6×, ADM 1.1–1.3×, U-ViT 1.1–1.2×
over the defaults (``benchmarks/RESULTS.md`` §8 has the models before and after).

It is not a process-wide ``XLA_FLAGS`` because it depends on the model and the program. DiT's
train step ran 0.8–0.9× with matrix products alone and no faster with reductions added, and
the ADM's and U-ViT's forwards changed by less than the machine's noise. So a model class
lists its options per program in ``xla_cpu_options`` (``{"train": {...}, "forward": {...}}``),
and :func:`compiler_options` reads them from the model, its ``GraphDef``, or anything holding
one: the train step asks for ``"train"``, the samplers and ``models.forward`` for ``"forward"``.

The options are used only on the CPU backend and only where this jaxlib accepts them (checked
once by compiling a tiny program); ``$XMODALITY_XLA_OPTIONS=off`` turns them off everywhere
(``make checkpoints`` does, to retrain the shipped models as they were compiled).
The results differ from the default compilation by float32 rounding (a U-Net forward by ~1e-5).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.compilation import OFF_VALUES  # the same words turn the cache off

ENV_VAR = "XMODALITY_XLA_OPTIONS"
Options = tuple[tuple[str, str], ...]  # hashable, for caches of compiled functions
Program = Literal["train", "forward"]
PROGRAMS = get_args(Program)

YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"  # a list: which fusions YNNPACK may take
YNN_DOT_REDUCE = {YNN_FUSION: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def turned_off() -> bool:
    """``$XMODALITY_XLA_OPTIONS`` is ``0``/``off``/``false``/``no``."""
    return os.environ.get(ENV_VAR, "").strip().lower() in OFF_VALUES


def _graphdef(graph: Any) -> Any:
    if isinstance(graph, nnx.GraphDef):
        return graph
    if isinstance(graph, nnx.Module):
        return nnx.graphdef(graph)
    return getattr(graph, "graphdef", None)  # e.g. samplers.functional's pure function


def _check(program: str) -> None:
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {', '.join(PROGRAMS)}; got {program!r}")


def requested(graph: Any, program: Program) -> Options:
    """The options the model classes in ``graph`` declare for ``program`` (``xla_cpu_options``),
    whatever the backend or setting: a module, an ``nnx.GraphDef`` (of a model, or of a tuple
    holding one) or an object with a ``graphdef`` attribute; anything else asks for none."""
    _check(program)
    graphdef = _graphdef(graph)
    merged: dict[str, str] = {}
    for node in getattr(graphdef, "nodes", ()):
        declared = getattr(getattr(node, "type", None), "xla_cpu_options", {})
        merged.update(declared.get(program, {}))
    return tuple(sorted(merged.items()))


@functools.cache
def supported(options: Options) -> bool:
    """Whether this jaxlib's CPU compiler accepts ``options`` (one tiny program, compiled once)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(
            jnp.zeros(1, jnp.float32)).compile()
    except Exception as err:  # noqa: BLE001 - XLA reports an unknown option or value as it likes
        warnings.warn(f"XLA does not accept the compiler options {dict(options)} ({err}); "
                      "compiling with its defaults", RuntimeWarning, stacklevel=3)
        return False
    return True


def compiler_options(graph: Any, program: Program) -> Options:
    """What to pass as ``jax.jit(..., compiler_options=dict(...))`` for ``program`` running the
    model(s) in ``graph``: :func:`requested`, on the CPU backend where supported and not turned
    off; else ``()``."""
    options = requested(graph, program)
    if not options or turned_off() or jax.default_backend() != "cpu" or not supported(options):
        return ()
    return options


def jit(fun, options: Options, **kwargs):
    """``jax.jit(fun, **kwargs)`` compiled with ``options`` (none when empty)."""
    return jax.jit(fun, compiler_options=dict(options) or None, **kwargs)
