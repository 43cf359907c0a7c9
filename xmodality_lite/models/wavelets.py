"""One-level 2-D discrete wavelet transform, the U-ViT front end (paper §3.2).

The paper uses the Cohen-Daubechies-Feauveau 9/7 wavelet (pywt's ``bior4.4``) with one level
of decomposition and periodic boundaries. The transform is separable and linear, so along each
axis it is one small matrix — the 9-tap filters centred on every second sample and wrapped
around the ends (:func:`analysis_matrix`, :func:`synthesis_matrix`) — and the 2-D transform of a
batch is two matrix products, differentiable and batched over images and channels:

* ``dwt2``: c_{pq} = A_p · X · A_qᵀ for the bands p (along H) and q (along W);
* ``idwt2``: X = Σ_{pq} S_p · c_{pq} · S_qᵀ.

``dwt2`` equals ``pywt.dwt2(x, "bior4.4", mode="periodization")`` exactly, with no circular
shift (tested), and ``idwt2`` is its exact inverse. The same operator as a 9×9 depthwise
convolution at stride 2 (tested equal) runs 20–60× slower on XLA's CPU backend, forward and
backward, at the U-ViT's shapes (``benchmarks/RESULTS.md``, cpu profile).

Channel layout is subband-major: ``[LL_0..LL_{C-1}, LH_0.., HL_0.., HH_0..]`` where LH is
high-pass along H (pywt's ``cH``), HL high-pass along W (``cV``), HH both (``cD``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pywt

WAVELET = "bior4.4"


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
_PAD = (_TAPS - 1) // 2  # 4


@functools.cache
def analysis_matrix(n: int) -> np.ndarray:
    """[2, n/2, n]: the periodic one-level analysis along one axis, low then high band.

    Row i of band s is the filter centred on sample 2i and wrapped around the ends,
    c_s[i] = Σ_t f_s[L−1−t] · x[(2i + t − P) mod n] (a correlation with the flipped filter).
    """
    bank = np.zeros((2, n // 2, n))
    for s in range(2):
        flipped = _BANK[s, ::-1]
        for i in range(n // 2):
            for t in range(_TAPS):
                bank[s, i, (2 * i + t - _PAD) % n] += flipped[t]
    return bank


@functools.cache
def synthesis_matrix(n: int) -> np.ndarray:
    """[2, n, n/2]: the periodic one-level synthesis, x = S_lo c_lo + S_hi c_hi.

    The transposed convolution of the zero-stuffed coefficients with the flipped synthesis
    filters: sample m gathers the coefficients j with 2j = m + P + 1 + t (mod 2·n/2) over
    taps t, shifted by P + 1 so that it inverts :func:`analysis_matrix` exactly.
    """
    half = n // 2
    bank = np.zeros((2, n, half))
    for s in range(2):
        flipped = _BANK[2 + s, ::-1]
        for m in range(n):
            for t in range(_TAPS):
                if (m + _PAD + 1 + t) % 2 == 0:
                    bank[s, m, ((m + _PAD + 1 + t) // 2 - _PAD - 1) % half] += flipped[t]
    return bank


def _check_even(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [B, H, W, C]; got shape {x.shape}")
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"{name} needs even H and W for a one-level DWT; got shape {x.shape}")


def dwt2(x: jax.Array) -> jax.Array:
    """One-level periodic bior4.4 DWT: [B, H, W, C] → [B, H/2, W/2, 4C], subband-major.

    Separable, so two small matrix products, A_H · X · A_Wᵀ per channel, with the band of H as
    the fast index of the subband: s = p_H + 2·p_W (LL, LH, HL, HH).
    """
    _check_even(x, "x")
    b, h, w, c = x.shape
    a_h, a_w = (jnp.asarray(analysis_matrix(n), x.dtype) for n in (h, w))
    t = jnp.einsum("pih,bhwc->bpiwc", a_h, x, precision="highest")  # [B, 2, H/2, W, C]
    y = jnp.einsum("qjw,bpiwc->bijqpc", a_w, t, precision="highest")  # [B, H/2, W/2, 2 (W band), 2 (H band), C]
    return y.reshape(b, h // 2, w // 2, 4 * c)


def idwt2(y: jax.Array) -> jax.Array:
    """Inverse of :func:`dwt2`: [B, h, w, 4C] subband-major → [B, 2h, 2w, C]."""
    if y.ndim != 4 or y.shape[-1] % 4:
        raise ValueError(f"y must be [B, h, w, 4C] wavelet coefficients; got shape {y.shape}")
    b, h, w, c4 = y.shape
    s_h, s_w = (jnp.asarray(synthesis_matrix(2 * n), y.dtype) for n in (h, w))
    y = y.reshape(b, h, w, 2, 2, c4 // 4)  # [B, h, w, W band, H band, C]
    t = jnp.einsum("pmi,bijqpc->bmjqc", s_h, y, precision="highest")  # [B, 2h, w, 2, C]
    return jnp.einsum("qnj,bmjqc->bmnc", s_w, t, precision="highest")  # [B, 2h, 2w, C]
