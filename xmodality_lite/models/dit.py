"""DiT-L/16 in pixel space, as published by Koch et al. (paper §3.2; Peebles & Xie 2023).

A plain vision transformer over 16×16 patches of [x_t, TOF] whose blocks are conditioned on the
log-SNR by adaptive normalisation (adaLN-Zero). Departures from vanilla DiT that the published
model makes, all kept here:

* RMSNorm with a learnable scale instead of LayerNorm without affine;
* SwiGLU MLPs instead of GELU MLPs; fixed 2-D sin-cos position embedding;
* the patch embedding is LayerNorm → Dense → LayerNorm, not a strided conv;
* the input is concat[x_t, cond] (x first; ADM and U-ViT put the condition first);
* log-SNR features are [cos, sin] with divisor ``half`` (the conv models use [sin, cos], half−1);
* the attention kernels keep flax's default (lecun-normal) initialiser, not glorot.

``variant="corrected"`` applies the fix the paper proposes for the seams of DiT's patches (§4.1):
run the transformer on the one-level bior4.4 wavelet coefficients, as U-ViT does. [x_t, cond]
goes through :func:`dwt2` (8 channels at half resolution), is patchified with p/2, and the head's
4 coefficient channels go back through :func:`idwt2`. Token grid, patch vector widths and so all
parameter shapes are the same as ``"published"``, so the two variants share one layout. (The
published code's unused ``in_channels`` argument is simply absent here.) The published weights'
names are mapped in :mod:`.published`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.layers import (
    MultiHeadSelfAttention,
    Variant,
    check_diffusion_inputs,
    check_variant,
    glorot,
    lecun,
    logsnr_embedding,
    trunc_normal,
    zeros,
)
from xmodality_lite.models.transformer import SwiGLU, modulate, sincos_2d_embedding
from xmodality_lite.models.wavelets import dwt2, idwt2

# --- embeddings -------------------------------------------------------------------------------

def patchify(x: jax.Array, p: int) -> jax.Array:
    """``b (h p1) (w p2) c -> b h w (p1 p2 c)``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // p, w // p, p * p * c)


def unpatchify(x: jax.Array, p: int) -> jax.Array:
    """``b h w (p1 p2 c) -> b (h p1) (w p2) c``, the inverse of :func:`patchify`."""
    b, gh, gw, d = x.shape
    c = d // (p * p)
    x = x.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * p, gw * p, c)


# --- blocks -----------------------------------------------------------------------------------

class DiTBlock(nnx.Module):
    """adaLN-Zero block: x += g₁·MHA(mod(RMSNorm(x))); x += g₂·SwiGLU(mod(RMSNorm(x)))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.adaln = nnx.Linear(dim, 6 * dim, kernel_init=zeros, dtype=dtype, rngs=rngs)
        self.attention_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.attention = MultiHeadSelfAttention(dim, heads, kernel_init=lecun, dtype=dtype,
                                                rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(dim, mlp_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        # x: [B, N, dim]; c: [B, dim]
        mods = jnp.split(self.adaln(nnx.silu(c))[:, None, :], 6, axis=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa * self.attention(modulate(self.attention_norm(x), shift_msa, scale_msa))
        return x + gate_mlp * self.mlp(modulate(self.mlp_norm(x), shift_mlp, scale_mlp))


class FinalLayer(nnx.Module):
    """mod(RMSNorm(x)) with zero-initialised (shift, scale), then a zero-initialised patch head."""

    def __init__(self, dim: int, patch_dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.adaln = nnx.Linear(dim, 2 * dim, kernel_init=zeros, dtype=dtype, rngs=rngs)
        self.norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, patch_dim, kernel_init=zeros, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.adaln(nnx.silu(c))[:, None, :], 2, axis=-1)
        return self.proj(modulate(self.norm(x), shift, scale))  # [B, N, p·p·1]


# --- model ------------------------------------------------------------------------------------

class DiT(nnx.Module):
    """Diffusion transformer predicting v̂ from (x_t, TOF condition, log-SNR λ)."""

    kind = "diffusion"
    channels = 1  # x_t and cond are one channel each (the published code's in_channels is unused)

    def __init__(self, *, patch_size: int = 16, dim: int = 1024, depth: int = 24, heads: int = 16,
                 mlp_dim: int = 4096, frequency_dim: int = 256, variant: Variant = "published",
                 dtype=jnp.float32, rngs: nnx.Rngs):
        check_variant(variant)
        if variant == "corrected" and patch_size % 2:
            raise ValueError(f"variant 'corrected' needs an even patch_size; got {patch_size}")
        self.patch_size, self.dim, self.frequency_dim = patch_size, dim, frequency_dim
        self.variant = variant
        self.downsampling = patch_size  # H and W must be whole numbers of patches
        dense = dict(kernel_init=glorot, dtype=dtype, rngs=rngs)
        time = dict(kernel_init=trunc_normal, dtype=dtype, rngs=rngs)
        in_dim = patch_size * patch_size * 2  # x_t and the condition
        self.patch_norm_in = nnx.LayerNorm(in_dim, dtype=dtype, rngs=rngs)
        self.patch_proj = nnx.Linear(in_dim, dim, **dense)
        self.patch_norm_out = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.time_mlp_in = nnx.Linear(frequency_dim, dim, **time)
        self.time_mlp_out = nnx.Linear(dim, dim, **time)
        self.blocks = nnx.List([
            DiTBlock(dim, heads, mlp_dim, dtype=dtype, rngs=rngs) for _ in range(depth)
        ])
        self.final = FinalLayer(dim, patch_size * patch_size, dtype=dtype, rngs=rngs)

    def __call__(self, x_t: jax.Array, cond: jax.Array, logsnr: jax.Array) -> jax.Array:
        """x_t, cond: [B, H, W, 1]; logsnr: [B] → v̂ [B, H, W, 1] (float32)."""
        check_diffusion_inputs(x_t, cond, logsnr, self.channels, self.downsampling, "patch_size")
        wavelet = self.variant == "corrected"
        p = self.patch_size // 2 if wavelet else self.patch_size
        # 1. patch embedding of [x_t, cond] plus fixed 2-D position embedding
        x = jnp.concatenate([x_t, cond], axis=-1)  # [B, H, W, 2]
        if wavelet:
            x = dwt2(x)  # [B, H/2, W/2, 8]
        tokens = patchify(x, p)  # [B, H/P, W/P, 2P²] with P = self.patch_size
        b, gh, gw, _ = tokens.shape
        h = self.patch_norm_out(self.patch_proj(self.patch_norm_in(tokens)))
        h = h.reshape(b, gh * gw, self.dim)
        h = h + sincos_2d_embedding(gh, gw, self.dim).astype(h.dtype)
        # 2. log-SNR embedding c
        c = logsnr_embedding(logsnr, self.frequency_dim, cos_first=True, endpoint=False)
        c = self.time_mlp_out(nnx.silu(self.time_mlp_in(c)))  # [B, dim]
        # 3. adaLN-Zero transformer, 4. zero-initialised head
        for block in self.blocks:
            h = block(h, c)
        out = unpatchify(self.final(h, c).reshape(b, gh, gw, -1), p)
        if wavelet:
            out = idwt2(out)  # [B, H/2, W/2, 4] → [B, H, W, 1]
        return out.astype(jnp.float32)


# Token grids: paper 16×16 (256², 558M params); cpu 8×8 (64², 1.6M params, 7 GFLOP per train
# step at batch 16: the paper's 16×16 grid at this width costs 33 GFLOP, too slow for 2 CPU
# cores); smoke 8×8 (32²).
DIT_SIZES = {
    "paper": dict(patch_size=16, dim=1024, depth=24, heads=16, mlp_dim=4096),  # 256²
    # 64²: patch 4 keeps the paper's 16 × 16 token grid (patch 8 left 8 × 8 blocks in samples)
    "cpu": dict(patch_size=4, dim=128, depth=4, heads=4, mlp_dim=512),
    "smoke": dict(patch_size=4, dim=64, depth=2, heads=4, mlp_dim=256),  # 32²
}

