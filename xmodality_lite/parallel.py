"""Data parallelism: one mesh axis ``"data"`` over all local devices, the batch split along
it and the training state replicated. The jitted train step is unchanged; XLA inserts the
gradient all-reduce that the shardings imply, so N devices compute the same step as one
device on the same global batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def replicate(tree, mesh: Mesh):
    """Every leaf of ``tree`` copied to every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch, mesh: Mesh):
    """Split every array of ``batch`` along its first (batch) axis over the ``"data"`` axis."""
    n = mesh.shape[AXIS]
    for x in jax.tree.leaves(batch):
        if x.shape[0] % n:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by the {n} devices; "
                             f"choose a batch size that is a multiple of {n}")
    return jax.device_put(batch, NamedSharding(mesh, PartitionSpec(AXIS)))
