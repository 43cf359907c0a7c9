"""Slice-wise TOF → CTA translation: a stack of TOF slices through a trained model.

Diffusion models sample with DDPM or DDIM (paper §3.3, §4.2); the U-Net baseline needs one
forward pass. Slices go through in batches of a fixed size (the last one padded), so each
(model, batch size, image size) is compiled once, for any sampler and number of steps.

Randomness: slice ``i`` draws all its noise from ``fold_in(key(seed), i)``, so a slice's
result depends on the seed and its index only, not on the batch size or on the slices batched
with it. (The reference splits one key per batch instead; its results change with the batch
size.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from xmodality_lite.config import get_profile, model_kind
from xmodality_lite.diffusion import get_sampler, sample_slices
from xmodality_lite.models import forward


def translate_slices(model: nnx.Module, tof_slices, *, sampler: str | None = None,
                     steps: int | None = None, batch_size: int | None = None,
                     seed: int | None = None, progress: bool = True,
                     profile=None) -> np.ndarray:
    """Synthetic CTA slices [N, H, W, 1] in [−1, 1] from TOF slices [N, H, W, 1] in [−1, 1].

    ``sampler``/``steps``/``batch_size``/``seed`` default to the profile's sampling settings
    (``$XMODALITY_PROFILE``). Slice ``i`` uses the key ``fold_in(key(seed), i)``.
    """
    cfg = get_profile(profile).sample
    sampler = cfg.sampler if sampler is None else sampler
    steps = cfg.steps if steps is None else steps
    batch_size = cfg.batch_size if batch_size is None else batch_size
    seed = cfg.seed if seed is None else seed
    tof = np.asarray(tof_slices, np.float32)
    if tof.ndim != 4 or tof.shape[-1] != 1:
        raise ValueError(f"tof_slices must be [N, H, W, 1]; got shape {tof.shape}")
    get_sampler(sampler)  # fail before compiling
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    kind = model_kind(model)
    n = len(tof)
    batch_size = max(1, min(batch_size, n))
    base = jax.random.key(seed)
    out = np.empty_like(tof)
    starts = range(0, n, batch_size)
    for lo in tqdm(starts, desc=f"translate ({sampler if kind == 'diffusion' else 'unet'})",
                   disable=not progress or len(starts) < 2):
        hi = min(lo + batch_size, n)
        batch = np.zeros((batch_size, *tof.shape[1:]), np.float32)  # static shape: pad the tail
        batch[: hi - lo] = tof[lo:hi]
        if kind == "regression":
            y = forward(model, jnp.asarray(batch))  # one pass; `out` holds float32
        else:
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(lo, lo + batch_size))
            y = sample_slices(sampler, model, jnp.asarray(batch), keys, steps=steps)
        out[lo:hi] = np.asarray(y)[: hi - lo]
    return np.clip(out, -1.0, 1.0)
