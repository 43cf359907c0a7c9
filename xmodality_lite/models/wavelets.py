"""One-level 2-D discrete wavelet transform, the U-ViT front end (paper §3.2).

The paper uses the Cohen-Daubechies-Feauveau 9/7 wavelet (pywt's ``bior4.4``) with one level
of decomposition and periodic boundaries. Both directions are depthwise convolutions with 9×9
separable kernels (outer products of the 1-D filters), so they are batched, multi-channel and
differentiable:

* ``dwt2``: pad periodically by 4, correlate with the flipped analysis kernels at stride 2;
* ``idwt2``: pad the coefficients periodically by (5, 4), correlate the 2×-dilated coefficients
  with the flipped synthesis kernels, crop (5, 4).

With these offsets ``dwt2`` equals ``pywt.dwt2(x, "bior4.4", mode="periodization")`` exactly,
with no circular shift (tested), and ``idwt2`` is its exact inverse.

Channel layout is subband-major: ``[LL_0..LL_{C-1}, LH_0.., HL_0.., HH_0..]`` where LH is
high-pass along H (pywt's ``cH``), HL high-pass along W (``cV``), HH both (``cD``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pywt

WAVELET = "bior4.4"

_DIMS = ("NHWC", "HWIO", "NHWC")


def _filter_bank(name: str = WAVELET) -> np.ndarray:
    """pywt's (dec_lo, dec_hi, rec_lo, rec_hi) as a [4, L] array; bior4.4 → L = 9.

    pywt pads the bior filters to an even length with a leading zero column; it is dropped so
    the filters are centred (odd length) and the periodic offsets below are symmetric.
    """
    bank = np.asarray(pywt.Wavelet(name).filter_bank, dtype=np.float64)
    if np.all(bank[:, 0] == 0):
        bank = bank[:, 1:]
    return bank


def _subband_kernels(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[L, L, 4] kernels in subband order LL, LH, HL, HH (first factor acts along H).

    Filters are flipped because ``lax.conv`` computes a correlation.
    """
    lo, hi = lo[::-1], hi[::-1]
    pairs = [(lo, lo), (hi, lo), (lo, hi), (hi, hi)]
    return np.stack([np.outer(a, b) for a, b in pairs], axis=-1)


_BANK = _filter_bank()
_TAPS = _BANK.shape[1]  # 9
_ANALYSIS = _subband_kernels(_BANK[0], _BANK[1])  # [9, 9, 4]
_SYNTHESIS = _subband_kernels(_BANK[2], _BANK[3])  # [9, 9, 4]
_PAD = (_TAPS - 1) // 2  # 4


def _check_even(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [B, H, W, C]; got shape {x.shape}")
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"{name} needs even H and W for a one-level DWT; got shape {x.shape}")


def _wrap(x: jax.Array, before: int, after: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode="wrap")


def dwt2(x: jax.Array) -> jax.Array:
    """One-level periodic bior4.4 DWT: [B, H, W, C] → [B, H/2, W/2, 4C], subband-major."""
    _check_even(x, "x")
    b, h, w, c = x.shape
    # Grouped conv: group ch yields output channels 4·ch .. 4·ch+3 (channel-major).
    kernel = jnp.tile(jnp.asarray(_ANALYSIS, x.dtype)[:, :, None, :], (1, 1, 1, c))
    y = jax.lax.conv_general_dilated(
        _wrap(x, _PAD, _PAD), kernel, (2, 2), "VALID",
        dimension_numbers=_DIMS, feature_group_count=c,
    )  # [B, H/2, W/2, C·4]
    y = y.reshape(b, h // 2, w // 2, c, 4).swapaxes(-1, -2)
    return y.reshape(b, h // 2, w // 2, 4 * c)


def idwt2(y: jax.Array) -> jax.Array:
    """Inverse of :func:`dwt2`: [B, h, w, 4C] subband-major → [B, 2h, 2w, C]."""
    if y.ndim != 4 or y.shape[-1] % 4:
        raise ValueError(f"y must be [B, h, w, 4C] wavelet coefficients; got shape {y.shape}")
    b, h, w, c4 = y.shape
    c = c4 // 4
    y = y.reshape(b, h, w, 4, c).swapaxes(-1, -2).reshape(b, h, w, c4)  # channel-major groups
    kernel = jnp.tile(jnp.asarray(_SYNTHESIS, y.dtype)[:, :, :, None], (1, 1, 1, c))
    # Zero-stuffed (lhs-dilated) coefficients correlated with the synthesis filters: a
    # transposed convolution. The periodic pad (P+1, P) and crop align it with dwt2's phase.
    x = jax.lax.conv_general_dilated(
        _wrap(y, _PAD + 1, _PAD), kernel, (1, 1), ((0, 0), (0, 0)),
        lhs_dilation=(2, 2), dimension_numbers=_DIMS, feature_group_count=c,
    )  # [B, 2h + 2P + 1, 2w + 2P + 1, C]
    return x[:, _PAD + 1 : _PAD + 1 + 2 * h, _PAD + 1 : _PAD + 1 + 2 * w]
