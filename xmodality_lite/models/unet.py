"""The U-Net regression baseline (paper §3.2): TOF → CTA in one pass, no diffusion.

Paper §3.2: "a U-Net … which directly tries to predict the target modality … a single residual
block per resolution and 128 base channels. Group normalization is applied with 32 groups."
The :class:`~.encoder_decoder.Encoder` and :class:`~.encoder_decoder.Decoder` are shared with ADM
and U-ViT, which use two blocks per stage and attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.compiler import YNN_DOT_REDUCE
from xmodality_lite.models.encoder_decoder import Decoder, Encoder
from xmodality_lite.models.layers import (
    ResNetBlock,
    Variant,
    check_image,
    check_variant,
    conv,
    dense,
)


class UNet(nnx.Module):
    """Regression baseline: TOF [B, H, W, 1] → CTA [B, H, W, 1] in one pass (paper §3.2).

    Stem conv 7×7 → Encoder (1 ResNetBlock per stage, GroupNorm) → middle ResNetBlock →
    Decoder → concat stem output → ResNetBlock → Dense(1), linear output.
    No time input and no condition: ``cond`` and ``logsnr`` are accepted and ignored.

    ``variant="published"`` reproduces the released model exactly (14,733,953 parameters), with
    the reference code's quirks: blocks declared with dim == dim_out have no residual; the
    decoder never reads the highest-resolution skip h0; the middle has no attention, although
    the code's comment says it has. ``variant="corrected"`` gives every block a residual
    (identity or 1×1 projection) and a full-resolution decoder stage that reads h0 (see
    :class:`~.encoder_decoder.Decoder`).
    """

    kind = "regression"
    # XLA's own convolutions, YNNPACK's matrix products and reductions: faster at these widths
    # (models.compiler; benchmarks/RESULTS.md §8)
    xla_cpu_options = {"train": YNN_DOT_REDUCE, "forward": YNN_DOT_REDUCE}

    def __init__(self, dim: int = 128, dim_mults: tuple[int, ...] = (1, 2, 4), channels: int = 1,
                 groups: int = 32, variant: Variant = "published", dtype=jnp.float32, *,
                 rngs: nnx.Rngs):
        check_variant(variant)
        self.variant, self.channels = variant, channels
        self.downsampling = 2 ** (len(dim_mults) - 1)
        kw = dict(norm_kind="group", groups=groups, dtype=dtype, rngs=rngs)
        corrected = variant == "corrected"
        mid = dim * dim_mults[-1]
        self.stem = conv(channels, dim, 7, dtype=dtype, rngs=rngs)
        self.encoder = Encoder(dim, dim_mults, blocks=1, heads=None, time_dim=None,
                               variant=variant, **kw)
        self.middle = ResNetBlock(mid, mid, residual=corrected, **kw)
        self.decoder = Decoder(dim, dim_mults, blocks=1, heads=None, time_dim=None,
                               variant=variant, **kw)
        self.final_block = ResNetBlock(2 * dim, dim, residual=corrected, **kw)
        self.final = dense(dim, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None,
                 logsnr: jax.Array | None = None) -> jax.Array:
        check_image(x, "x", self.channels, self.downsampling)  # [B, H, W, 1] TOF
        r = self.stem(x)
        h, skips = self.encoder(r)
        h = self.decoder(self.middle(h), skips)
        h = self.final_block(jnp.concatenate([h, r], axis=-1))
        return self.final(h).astype(jnp.float32)  # [B, H, W, 1] CTA


UNET_SIZES: dict[str, dict] = {
    "paper": dict(dim=128, dim_mults=(1, 2, 4), groups=32),
    "cpu": dict(dim=16, dim_mults=(1, 2, 4), groups=8),
    "smoke": dict(dim=8, dim_mults=(1, 2, 4), groups=4),
}
