"""DiT-L/16 in pixel space, as published by Koch et al. (paper §3.2; Peebles & Xie 2023).

A plain vision transformer over 16×16 patches of [x_t, TOF] whose blocks are conditioned on the
log-SNR by adaptive normalisation (adaLN-Zero). Departures from vanilla DiT that the published
model makes (facts §5, §15.7), all kept here:

* RMSNorm with a learnable scale instead of LayerNorm without affine;
* SwiGLU MLPs instead of GELU MLPs; fixed 2-D sin-cos position embedding;
* the patch embedding is LayerNorm → Dense → LayerNorm, not a strided conv;
* the input is concat[x_t, cond] (x first; ADM and U-ViT put the condition first);
* log-SNR features are [cos, sin] with divisor ``half`` (the conv models use [sin, cos], half−1).

``variant="corrected"`` applies the fix the paper proposes for DiT's patch artefacts (§4.1):
run the transformer on the one-level bior4.4 wavelet coefficients, as U-ViT does. [x_t, cond]
goes through :func:`dwt2` (8 channels at half resolution), is patchified with p/2, and the head's
4 coefficient channels go back through :func:`idwt2`. Token grid, patch vector widths and so all
parameter shapes are the same as ``"published"``, so the two variants share one layout. (The
published code's unused ``in_channels`` argument is simply absent here.)

Published key → our path, for loading ``dit.safetensors`` (facts §12):
``LayerNorm_0``/``Dense_0``/``LayerNorm_1`` → ``patch_norm_in``/``patch_proj``/``patch_norm_out``;
``Dense_1``/``Dense_2`` → ``time_mlp_in``/``time_mlp_out``; ``DiTBlock_i`` → ``blocks/i`` with
``Dense_0`` → ``adaln``, ``RMSNorm_{0,1}`` → ``attention_norm``/``mlp_norm``,
``MultiHeadDotProductAttention_0`` → ``attention``, ``SwiGLU_0/Dense_{0,1,2}`` →
``mlp/{gate,value,out}``; ``FinalLayer_0/{Dense_0,RMSNorm_0,Dense_1}`` →
``final/{adaln,norm,proj}``. See :func:`dit_published_mapping`.
"""

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.transformer import (
    MultiHeadSelfAttention,
    Path,
    SwiGLU,
    attention_published_mapping,
    glorot,
    lecun,
    modulate,
    sincos_2d_embedding,
    swiglu_published_mapping,
)
from xmodality_lite.models.wavelets import dwt2, idwt2

Variant = Literal["published", "corrected"]
zeros = nnx.initializers.zeros_init()
trunc_normal = nnx.initializers.truncated_normal(0.02)


# --- embeddings -------------------------------------------------------------------------------

def logsnr_frequency_features(logsnr: jax.Array, dim: int = 256) -> jax.Array:
    """DiT's sinusoidal features of λ: [cos(λf), sin(λf)], f_k = 10000^(−k/half), [B] → [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args = logsnr.astype(jnp.float32)[:, None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


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

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs):
        self.adaln = nnx.Linear(hidden, 6 * hidden, kernel_init=zeros, dtype=dtype, rngs=rngs)
        self.attention_norm = nnx.RMSNorm(hidden, dtype=dtype, rngs=rngs)
        self.attention = MultiHeadSelfAttention(
            hidden, num_heads, kernel_init=lecun, dtype=dtype, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(hidden, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(hidden, mlp_ratio * hidden, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        # x: [B, N, hidden]; c: [B, hidden]
        mods = jnp.split(self.adaln(nnx.silu(c))[:, None, :], 6, axis=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa * self.attention(modulate(self.attention_norm(x), shift_msa, scale_msa))
        return x + gate_mlp * self.mlp(modulate(self.mlp_norm(x), shift_mlp, scale_mlp))


class FinalLayer(nnx.Module):
    """mod(RMSNorm(x)) with zero-initialised (shift, scale), then a zero-initialised patch head."""

    def __init__(self, hidden: int, patch_dim: int, *, dtype, rngs: nnx.Rngs):
        self.adaln = nnx.Linear(hidden, 2 * hidden, kernel_init=zeros, dtype=dtype, rngs=rngs)
        self.norm = nnx.RMSNorm(hidden, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(hidden, patch_dim, kernel_init=zeros, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.adaln(nnx.silu(c))[:, None, :], 2, axis=-1)
        return self.proj(modulate(self.norm(x), shift, scale))  # [B, N, p·p·1]


# --- model ------------------------------------------------------------------------------------

class DiT(nnx.Module):
    """Diffusion transformer predicting v̂ from (x_t, TOF condition, log-SNR λ)."""

    kind = "diffusion"

    def __init__(self, *, patch_size: int = 16, hidden_size: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: int = 4, frequency_dim: int = 256,
                 variant: Variant = "published", dtype=jnp.float32, rngs: nnx.Rngs):
        if variant not in ("published", "corrected"):
            raise ValueError(f"unknown variant {variant!r}; choose one of ['corrected', 'published']")
        if variant == "corrected" and patch_size % 2:
            raise ValueError(f"variant 'corrected' needs an even patch_size; got {patch_size}")
        self.patch_size, self.hidden_size, self.frequency_dim = patch_size, hidden_size, frequency_dim
        self.variant = variant
        dense = dict(kernel_init=glorot, dtype=dtype, rngs=rngs)
        time = dict(kernel_init=trunc_normal, dtype=dtype, rngs=rngs)
        in_dim = patch_size * patch_size * 2  # x_t and the condition
        self.patch_norm_in = nnx.LayerNorm(in_dim, dtype=dtype, rngs=rngs)
        self.patch_proj = nnx.Linear(in_dim, hidden_size, **dense)
        self.patch_norm_out = nnx.LayerNorm(hidden_size, dtype=dtype, rngs=rngs)
        self.time_mlp_in = nnx.Linear(frequency_dim, hidden_size, **time)
        self.time_mlp_out = nnx.Linear(hidden_size, hidden_size, **time)
        self.blocks = nnx.List([
            DiTBlock(hidden_size, num_heads, mlp_ratio, dtype=dtype, rngs=rngs)
            for _ in range(depth)
        ])
        self.final = FinalLayer(hidden_size, patch_size * patch_size, dtype=dtype, rngs=rngs)

    def _check(self, x_t: jax.Array, cond: jax.Array, logsnr: jax.Array) -> None:
        p = self.patch_size
        if x_t.ndim != 4 or x_t.shape[-1] != 1 or x_t.shape[1] % p or x_t.shape[2] % p:
            raise ValueError(
                f"x_t must be [B, H, W, 1] with H and W divisible by patch_size {p}; "
                f"got shape {x_t.shape}")
        if cond.shape != x_t.shape:
            raise ValueError(f"cond must have x_t's shape {x_t.shape}; got {cond.shape}")
        if logsnr.shape != x_t.shape[:1]:
            raise ValueError(f"logsnr must be [B] = {x_t.shape[:1]}; got shape {logsnr.shape}")

    def __call__(self, x_t: jax.Array, cond: jax.Array, logsnr: jax.Array) -> jax.Array:
        """x_t, cond: [B, H, W, 1]; logsnr: [B] → v̂ [B, H, W, 1] (float32)."""
        self._check(x_t, cond, logsnr)
        wavelet = self.variant == "corrected"
        p = self.patch_size // 2 if wavelet else self.patch_size
        # 1. patch embedding of [x_t, cond] plus fixed 2-D position embedding
        x = jnp.concatenate([x_t, cond], axis=-1)  # [B, H, W, 2]
        if wavelet:
            x = dwt2(x)  # [B, H/2, W/2, 8]
        tokens = patchify(x, p)  # [B, H/P, W/P, 2P²] with P = self.patch_size
        b, gh, gw, _ = tokens.shape
        h = self.patch_norm_out(self.patch_proj(self.patch_norm_in(tokens)))
        h = h.reshape(b, gh * gw, self.hidden_size)
        h = h + sincos_2d_embedding(gh, gw, self.hidden_size).astype(h.dtype)
        # 2. log-SNR embedding c
        c = logsnr_frequency_features(logsnr, self.frequency_dim)
        c = self.time_mlp_out(nnx.silu(self.time_mlp_in(c)))  # [B, hidden]
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
    "paper": dict(patch_size=16, hidden_size=1024, depth=24, num_heads=16, mlp_ratio=4),  # 256²
    # 64²: patch 4 keeps the paper's 16 × 16 token grid (patch 8 left 8 × 8 blocks in samples)
    "cpu": dict(patch_size=4, hidden_size=128, depth=4, num_heads=4, mlp_ratio=4),
    "smoke": dict(patch_size=4, hidden_size=64, depth=2, num_heads=4, mlp_ratio=4),  # 32²
}


def dit_published_mapping(depth: int = 24) -> dict[str, Path]:
    """Published ``dit.safetensors`` keys → our NNX param paths (facts §12)."""
    def dense(published: str, ours: Path) -> dict[str, Path]:
        return {f"{published}/{w}": (*ours, w) for w in ("bias", "kernel")}

    def norm(published: str, ours: Path, *, bias: bool = False) -> dict[str, Path]:
        ws = ("bias", "scale") if bias else ("scale",)
        return {f"{published}/{w}": (*ours, w) for w in ws}

    mapping = (
        norm("LayerNorm_0", ("patch_norm_in",), bias=True)
        | dense("Dense_0", ("patch_proj",))
        | norm("LayerNorm_1", ("patch_norm_out",), bias=True)
        | dense("Dense_1", ("time_mlp_in",))
        | dense("Dense_2", ("time_mlp_out",))
        | dense("FinalLayer_0/Dense_0", ("final", "adaln"))
        | norm("FinalLayer_0/RMSNorm_0", ("final", "norm"))
        | dense("FinalLayer_0/Dense_1", ("final", "proj"))
    )
    for i in range(depth):
        pub, ours = f"DiTBlock_{i}", ("blocks", i)
        mapping |= dense(f"{pub}/Dense_0", (*ours, "adaln"))
        mapping |= norm(f"{pub}/RMSNorm_0", (*ours, "attention_norm"))
        mapping |= norm(f"{pub}/RMSNorm_1", (*ours, "mlp_norm"))
        mapping |= attention_published_mapping(
            f"{pub}/MultiHeadDotProductAttention_0", (*ours, "attention"))
        mapping |= swiglu_published_mapping(f"{pub}/SwiGLU_0", (*ours, "mlp"), with_time=False)
    return mapping
