"""U-ViT (Hoogeboom et al. 2023) as used in paper §3.2: an ADM whose middle is a transformer,
wrapped in a one-level bior4.4 wavelet transform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.compiler import YNN_DOT_REDUCE
from xmodality_lite.models.encoder_decoder import Decoder, Encoder
from xmodality_lite.models.layers import (
    ResNetBlock,
    TimeMLP,
    Variant,
    check_diffusion_inputs,
    check_variant,
    conv,
    dense,
)
from xmodality_lite.models.transformer import Transformer, sincos_2d_embedding
from xmodality_lite.models.wavelets import dwt2, idwt2


class UViT(nnx.Module):
    """v̂ = UViT(x_t, cond, λ): all [B, H, W, 1] but λ [B] (paper §3.2).

    concat([cond, x_t]) (condition first, as in the reference code) → DWT [B, H/2, W/2, 8] (subband-major) →
    stem conv 7×7 → Encoder as in ADM → tokens + 2-D sin-cos embedding → Transformer (pre-norm
    RMSNorm, SwiGLU FiLM-ed by the time embedding, final RMSNorm) → Decoder → concat stem
    output → ResNetBlock → Dense(8) → inverse DWT [B, H, W, 2] → Dense(1), a learned mix of
    the two reconstructed planes.

    ``variant="published"`` reproduces the released model exactly (124,719,499 parameters),
    with the reference code's quirks: row-wise conv-stage attention
    (:class:`~.layers.RowAttention`, kept in both variants); blocks declared with dim == dim_out
    have no residual; the decoder never reads the two highest-resolution skips.
    ``variant="corrected"`` gives every block a residual and a decoder stage at the stem's
    resolution that reads them (see :class:`~.encoder_decoder.Decoder`).
    """

    kind = "diffusion"
    # the train step with XLA's own convolutions, YNNPACK's products and reductions: 1.1-1.2x;
    # the forward did not change beyond noise with it (models.compiler)
    xla_cpu_options = {"train": YNN_DOT_REDUCE}

    def __init__(self, dim: int = 128, dim_mults: tuple[int, ...] = (1, 2, 4), channels: int = 1,
                 heads: int = 4, depth: int = 16, vit_heads: int = 4, mlp_dim: int = 2048,
                 variant: Variant = "published", dtype=jnp.float32, *, rngs: nnx.Rngs):
        check_variant(variant)
        self.variant, self.channels = variant, channels
        self.downsampling = 2 ** len(dim_mults)  # the wavelet halves H and W once more
        corrected = variant == "corrected"
        mid, time_dim, bands = dim * dim_mults[-1], 4 * dim, 4 * 2 * channels
        stages = dict(blocks=2, heads=heads, time_dim=time_dim, norm_kind="rms", groups=0,
                      variant=variant, dtype=dtype, rngs=rngs)
        self.time_mlp = TimeMLP(dim, dtype=dtype, rngs=rngs)
        self.stem = conv(bands, dim, 7, dtype=dtype, rngs=rngs)
        self.encoder = Encoder(dim, dim_mults, **stages)
        self.transformer = Transformer(depth, mid, vit_heads, mlp_dim, time_dim=time_dim,
                                       dtype=dtype, rngs=rngs)
        self.decoder = Decoder(dim, dim_mults, **stages)
        self.final_block = ResNetBlock(2 * dim, dim, residual=corrected, norm_kind="rms",
                                       dtype=dtype, rngs=rngs)
        self.to_wavelet = dense(dim, bands, dtype=dtype, rngs=rngs)
        self.final = dense(2 * channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None,
                 logsnr: jax.Array | None = None) -> jax.Array:
        check_diffusion_inputs(x, cond, logsnr, self.channels, self.downsampling)
        t = self.time_mlp(logsnr)  # [B, 4C]
        r = self.stem(dwt2(jnp.concatenate([cond, x], axis=-1)))  # [B, H/2, W/2, C]
        h, skips = self.encoder(r, t)
        b, gh, gw, d = h.shape
        tokens = h.reshape(b, gh * gw, d) + sincos_2d_embedding(gh, gw, d).astype(h.dtype)
        h = self.transformer(tokens, t).reshape(b, gh, gw, d)
        h = self.decoder(h, skips, t)
        h = self.final_block(jnp.concatenate([h, r], axis=-1))
        planes = idwt2(self.to_wavelet(h).astype(jnp.float32))  # [B, H, W, 2]
        return self.final(planes).astype(jnp.float32)  # [B, H, W, 1] v̂


UVIT_SIZES: dict[str, dict] = {
    "paper": dict(dim=128, dim_mults=(1, 2, 4), heads=4, depth=16, vit_heads=4, mlp_dim=2048),
    "cpu": dict(dim=16, dim_mults=(1, 2, 4), heads=4, depth=2, vit_heads=4, mlp_dim=256),
    "smoke": dict(dim=8, dim_mults=(1, 2, 4), heads=4, depth=1, vit_heads=4, mlp_dim=64),
}
