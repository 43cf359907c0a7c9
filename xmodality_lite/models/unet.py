"""The U-Net backbone (encoder/decoder with pixel-shuffle resampling) and the regression baseline.

Paper §3.2: "a U-Net … which directly tries to predict the target modality … a single residual
block per resolution and 128 base channels. Group normalization is applied with 32 groups."
ADM and U-ViT reuse :class:`Encoder` and :class:`Decoder` with two blocks per stage and attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.layers import (
    Norm,
    PixelShuffleDown,
    PixelShuffleUp,
    ResNetBlock,
    RowAttention,
    Variant,
    check_image,
    check_variant,
    conv,
    dense,
)


def stage_widths(dim: int, dim_mults: tuple[int, ...]) -> list[tuple[int, int]]:
    """(C_in, C_out) per encoder stage: C=128, mults (1, 2, 4) → [(128,128), (128,256), (256,512)]."""
    widths = [dim] + [dim * m for m in dim_mults]
    return list(zip(widths[:-1], widths[1:], strict=True))


def has_residual(variant: Variant, declared_in: int, n_out: int) -> bool:
    """Published blocks declared with dim == dim_out have no residual (facts §1, §15.5)."""
    return variant == "corrected" or declared_in != n_out


class Stage(nnx.Module):
    """ResNetBlocks at one resolution, optional row attention after the last, then resampling."""

    def __init__(self, blocks: list[ResNetBlock], attn: RowAttention | None,
                 resample: nnx.Module | None):
        self.blocks = nnx.List(blocks)
        self.attn = attn
        self.resample = resample


class Encoder(nnx.Module):
    """Per stage: ``blocks`` ResNetBlocks (each output pushed as a skip; attention after the last
    one, before its push), then a pixel-shuffle downsample unless it is the last stage."""

    def __init__(self, dim: int, dim_mults: tuple[int, ...], *, blocks: int, heads: int | None,
                 time_dim: int | None, norm_kind: Norm, groups: int, variant: Variant,
                 dtype, rngs: nnx.Rngs):
        kw = dict(time_dim=time_dim, norm_kind=norm_kind, groups=groups, dtype=dtype, rngs=rngs)
        widths = stage_widths(dim, dim_mults)
        self.stages = nnx.List()
        for i, (c_in, c_out) in enumerate(widths):
            rbs = [ResNetBlock(c_in if j == 0 else c_out, c_out,
                               residual=has_residual(variant, c_in if j == 0 else c_out, c_out),
                               **kw) for j in range(blocks)]
            attn = RowAttention(c_out, heads, dtype=dtype, rngs=rngs) if heads else None
            last = i == len(widths) - 1
            down = None if last else PixelShuffleDown(c_out, c_out, dtype=dtype, rngs=rngs)
            self.stages.append(Stage(rbs, attn, down))

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None):
        skips = []
        for stage in self.stages:
            for j, block in enumerate(stage.blocks):
                x = block(x, t_emb)
                if stage.attn is not None and j == len(stage.blocks) - 1:
                    x = stage.attn(x)
                skips.append(x)
            if stage.resample is not None:
                x = stage.resample(x)
        return x, skips


class Decoder(nnx.Module):
    """Mirror of :class:`Encoder`: each block takes concat([x, skip]); attention after the last
    block; a pixel-shuffle upsample ends every stage but the highest-resolution one.

    ``variant="published"`` has no highest-resolution stage, so the skips of the first encoder
    stage are never read (facts §15.6) and both remaining stages upsample.
    ``variant="corrected"`` adds that stage back (at full resolution, without upsampling), so every
    skip is used, as in the encoder-decoder the code's unused ``is_last`` branch describes.
    """

    def __init__(self, dim: int, dim_mults: tuple[int, ...], *, blocks: int, heads: int | None,
                 time_dim: int | None, norm_kind: Norm, groups: int, variant: Variant,
                 dtype, rngs: nnx.Rngs):
        kw = dict(time_dim=time_dim, norm_kind=norm_kind, groups=groups, dtype=dtype, rngs=rngs)
        widths = stage_widths(dim, dim_mults)
        used = widths if variant == "corrected" else widths[1:]
        self.stages = nnx.List()
        for c_in, c_out in reversed(used):
            # The first block sees [x (c_out), skip (c_out)]; later ones [x (c_in), skip (c_out)].
            declared = [2 * c_out] + [c_in] * (blocks - 1)
            actual = [2 * c_out] + [c_in + c_out] * (blocks - 1)
            rbs = [ResNetBlock(n, c_in, residual=has_residual(variant, d, c_in), **kw)
                   for d, n in zip(declared, actual, strict=True)]
            attn = RowAttention(c_in, heads, dtype=dtype, rngs=rngs) if heads else None
            last = (c_in, c_out) == widths[0]
            up = None if last else PixelShuffleUp(c_in, c_in, dtype=dtype, rngs=rngs)
            self.stages.append(Stage(rbs, attn, up))

    def __call__(self, x: jax.Array, skips: list[jax.Array], t_emb: jax.Array | None = None):
        skips = list(skips)
        for stage in self.stages:
            for block in stage.blocks:
                x = block(jnp.concatenate([x, skips.pop()], axis=-1), t_emb)
            if stage.attn is not None:
                x = stage.attn(x)
            if stage.resample is not None:
                x = stage.resample(x)
        return x


class UNet(nnx.Module):
    """Regression baseline: TOF [B, H, W, 1] → CTA [B, H, W, 1] in one pass (paper §3.2).

    Stem conv 7×7 → Encoder (1 ResNetBlock per stage, GroupNorm) → middle ResNetBlock →
    Decoder → concat stem output → ResNetBlock → Dense(1), linear output (facts §2).
    No time input and no condition: ``cond`` and ``logsnr`` are accepted and ignored.

    ``variant="published"`` reproduces the released model exactly (14,733,953 parameters), with
    its quirks (facts §15): blocks declared with dim == dim_out have no residual (§15.5); the
    decoder never reads the highest-resolution skip h0 (§15.6); the middle has no attention
    (§15.6). ``variant="corrected"`` gives every block a residual (identity or 1×1 projection)
    and a full-resolution decoder stage that reads h0 (see :class:`Decoder`).
    """

    kind = "regression"

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
