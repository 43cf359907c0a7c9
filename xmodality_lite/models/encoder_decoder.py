"""The encoder and decoder shared by the U-Net, ADM and U-ViT (paper §3.2).

Stages of ResNetBlocks at falling (encoder) and rising (decoder) resolution, joined by
pixel-shuffle resampling (Shi et al. 2016), with optional row attention after each stage's last
block; the encoder pushes every block's output as a skip that the decoder concatenates back.
The U-Net uses one block per stage and no attention; ADM and U-ViT two blocks and attention.
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
)


def stage_widths(dim: int, dim_mults: tuple[int, ...]) -> list[tuple[int, int]]:
    """(C_in, C_out) per encoder stage: C=128, mults (1, 2, 4) → [(128,128), (128,256), (256,512)]."""
    widths = [dim] + [dim * m for m in dim_mults]
    return list(zip(widths[:-1], widths[1:], strict=True))


def has_residual(variant: Variant, declared_in: int, n_out: int) -> bool:
    """Whether a block adds its input back: the reference code's blocks declared with
    dim == dim_out do not (see :class:`~.layers.ResNetBlock`); ``"corrected"`` ones always do."""
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

    ``variant="published"`` has no highest-resolution stage, as in the reference code, so the
    skips of the first encoder stage are never read and both remaining stages upsample.
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
