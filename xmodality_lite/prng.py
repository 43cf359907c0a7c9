"""Random draws that share compiled programs across shapes, with the same numbers.

JAX's threefry PRNG is counter-based: a draw numbers its elements in row-major order whatever
the shape, so a draw at a shape is a flat draw reshaped; and under partitionable threefry (JAX's
default) element i of a flat draw depends only on the key and i, so a draw of n numbers is the
start of any longer draw from the same key. Each shape drawn eagerly is an XLA program of its
own, and threefry is slow to compile on the CPU (0.3–0.8 s a program on 2 cores: most of a
fresh process's model build, benchmarks/RESULTS.md §12). So the package draws flat vectors of a
few padded lengths, one program per length, and cuts them to shape: the model initialisers
(:func:`xmodality_lite.models.layers.draw_flat`) and the samplers' z_1
(:mod:`xmodality_lite.diffusion.samplers`).
"""

from __future__ import annotations

import math

import jax
import numpy as np

MIN_DRAW = 1 << 16  # the shortest padded draw: 65,536 numbers cost nothing to draw


def prefix_draws(key: jax.Array) -> bool:
    """Whether a draw of n numbers from ``key`` is the start of any longer one: true under
    partitionable threefry (``jax_threefry_partitionable``, JAX's default); other key schemes
    (rbg, or threefry with that flag off) number a draw's elements by its length."""
    return jax.config.jax_threefry_partitionable and str(jax.random.key_impl(key)) == "threefry2x32"


def draw_size(n: int, key: jax.Array) -> int:
    """How many numbers to draw for ``n``: the next power of two, at least :data:`MIN_DRAW`,
    where :func:`prefix_draws` holds (one program serves every n up to it), else ``n``."""
    return max(MIN_DRAW, 1 << (n - 1).bit_length()) if prefix_draws(key) else n


def cut(flat: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The start of each row of ``flat`` [..., size], reshaped to ``shape`` (whose leading axes
    are ``flat``'s). Concrete single-device arrays are cut on the host, which compiles nothing;
    traced or sharded ones are sliced as usual."""
    lead = flat.shape[:-1]
    n = math.prod(shape) // math.prod(lead)
    if isinstance(flat, jax.core.Tracer) or len(flat.devices()) != 1:
        return flat[..., :n].reshape(shape)
    host = np.asarray(flat)[..., :n].reshape(shape)
    # placed as the slice would be: committed to flat's device only if flat was
    return jax.device_put(host, flat.sharding if flat.committed else None)
