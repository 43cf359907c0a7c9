"""ADM: the ablated diffusion model of Dhariwal & Nichol (2021) as used in paper §3.2.

"128 base channels, two residual blocks per resolution and multi-resolution self-attention with
four attention heads", RMSNorm throughout; it predicts v from (x_t, TOF condition, log-SNR λ).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.compiler import YNN_DOT_REDUCE
from xmodality_lite.models.encoder_decoder import Decoder, Encoder
from xmodality_lite.models.layers import (
    ResNetBlock,
    RowAttention,
    TimeMLP,
    Variant,
    check_diffusion_inputs,
    check_variant,
    conv,
    dense,
)


class ADM(nnx.Module):
    """v̂ = ADM(x_t, cond, λ): all [B, H, W, 1] but λ [B] (paper §3.2).

    λ → sinusoidal embedding → MLP (4C) FiLMs every ResNetBlock. Input concat([cond, x_t])
    (condition first, as in the reference code; DiT puts x_t first) → stem conv 7×7 → Encoder (2 ResNetBlocks per stage, row
    attention after the second) → middle ResNetBlock, attention, ResNetBlock → Decoder →
    concat stem output → ResNetBlock → Dense(1).

    ``variant="published"`` reproduces the released model exactly (35,371,777 parameters), with
    the reference code's quirks: row-wise attention (:class:`~.layers.RowAttention`, kept in
    both variants); blocks declared with dim == dim_out have no residual; the decoder never
    reads the two highest-resolution skips. ``variant="corrected"`` gives every block a residual
    and a full-resolution decoder stage that reads them (see :class:`~.encoder_decoder.Decoder`).
    """

    kind = "diffusion"
    # the train step with XLA's own convolutions, YNNPACK's products and reductions: 1.1-1.3x;
    # the forward did not change beyond noise with it (models.compiler)
    xla_cpu_options = {"train": YNN_DOT_REDUCE}

    def __init__(self, dim: int = 128, dim_mults: tuple[int, ...] = (1, 2, 4), channels: int = 1,
                 heads: int = 4, variant: Variant = "published", dtype=jnp.float32, *,
                 rngs: nnx.Rngs):
        check_variant(variant)
        self.variant, self.channels = variant, channels
        self.downsampling = 2 ** (len(dim_mults) - 1)
        corrected = variant == "corrected"
        mid, time_dim = dim * dim_mults[-1], 4 * dim
        kw = dict(time_dim=time_dim, norm_kind="rms", dtype=dtype, rngs=rngs)
        stages = dict(blocks=2, heads=heads, groups=0, variant=variant, **kw)
        self.time_mlp = TimeMLP(dim, dtype=dtype, rngs=rngs)
        self.stem = conv(2 * channels, dim, 7, dtype=dtype, rngs=rngs)
        self.encoder = Encoder(dim, dim_mults, **stages)
        self.middle_0 = ResNetBlock(mid, mid, residual=corrected, **kw)
        self.middle_attn = RowAttention(mid, heads, dtype=dtype, rngs=rngs)
        self.middle_1 = ResNetBlock(mid, mid, residual=corrected, **kw)
        self.decoder = Decoder(dim, dim_mults, **stages)
        self.final_block = ResNetBlock(2 * dim, dim, residual=corrected, norm_kind="rms",
                                       dtype=dtype, rngs=rngs)
        self.final = dense(dim, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None,
                 logsnr: jax.Array | None = None) -> jax.Array:
        check_diffusion_inputs(x, cond, logsnr, self.channels, self.downsampling)
        t = self.time_mlp(logsnr)  # [B, 4C]
        r = self.stem(jnp.concatenate([cond, x], axis=-1))
        h, skips = self.encoder(r, t)
        h = self.middle_1(self.middle_attn(self.middle_0(h, t)), t)
        h = self.decoder(h, skips, t)
        h = self.final_block(jnp.concatenate([h, r], axis=-1))
        return self.final(h).astype(jnp.float32)  # [B, H, W, 1] v̂


ADM_SIZES: dict[str, dict] = {
    "paper": dict(dim=128, dim_mults=(1, 2, 4), heads=4),
    "cpu": dict(dim=16, dim_mults=(1, 2, 4), heads=4),
    "smoke": dict(dim=8, dim_mults=(1, 2, 4), heads=4),
}
