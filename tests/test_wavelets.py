"""The U-ViT wavelet front end against pywt (the reference implementation of bior4.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from xmodality_lite.models.wavelets import WAVELET, dwt2, idwt2


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)


def test_constant_image_goes_to_low_band():
    # Paper §3.2: CDF 9/7 = bior4.4. Its low-pass analysis filter sums to √2 and the high-pass
    # to 0 (facts §6), so a constant c maps to LL = 2c and zero detail bands.
    assert WAVELET == "bior4.4"
    y = dwt2(jnp.full((1, 16, 16, 2), 0.5))
    np.testing.assert_allclose(y[..., :2], 1.0, atol=1e-6)
    np.testing.assert_allclose(y[..., 2:], 0.0, atol=1e-6)


def test_round_trip(x):
    y = dwt2(jnp.asarray(x))
    assert y.shape == (2, 32, 32, 12)
    np.testing.assert_allclose(idwt2(y), x, atol=1e-5)


def test_round_trip_non_square():
    x = np.random.default_rng(1).standard_normal((1, 24, 40, 2)).astype(np.float32)
    np.testing.assert_allclose(idwt2(dwt2(jnp.asarray(x))), x, atol=1e-5)


def test_matches_pywt_periodization(x):
    # Channel order is subband-major; LH/HL/HH are pywt's cH/cV/cD. No circular shift needed.
    y = np.asarray(dwt2(jnp.asarray(x)))
    c = x.shape[-1]
    for b in range(x.shape[0]):
        for ch in range(c):
            ca, (ch_, cv, cd) = pywt.dwt2(x[b, ..., ch], WAVELET, mode="periodization")
            for s, ref in enumerate([ca, ch_, cv, cd]):
                np.testing.assert_allclose(y[b, ..., s * c + ch], ref, atol=1e-5)


def test_inverse_matches_pywt_periodization(x):
    y = np.asarray(dwt2(jnp.asarray(x)))
    c = x.shape[-1]
    ca, ch, cv, cd = (y[0, ..., s * c + 1] for s in range(4))
    ref = pywt.idwt2((ca, (ch, cv, cd)), WAVELET, mode="periodization")
    np.testing.assert_allclose(np.asarray(idwt2(jnp.asarray(y)))[0, ..., 1], ref, atol=1e-5)


def test_energy_in_low_band_for_smooth_image():
    # A smooth ramp is almost entirely low-pass: the detail bands are near zero away from the
    # periodic seam.
    ramp = np.sin(np.linspace(0, 2 * np.pi, 64, endpoint=False))
    x = jnp.asarray(np.outer(ramp, ramp)[None, :, :, None], jnp.float32)
    y = dwt2(x)
    assert float(jnp.abs(y[..., 1:]).max()) < 1e-2 * float(jnp.abs(y[..., 0]).max())


def test_gradient_finite(x):
    grad = jax.grad(lambda v: jnp.sum(idwt2(dwt2(v) ** 2)))(jnp.asarray(x))
    assert grad.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_gradient_of_round_trip_is_identity(x):
    # d/dx ½‖idwt2(dwt2(x))‖² = x because the composition is the identity.
    grad = jax.grad(lambda v: 0.5 * jnp.sum(idwt2(dwt2(v)) ** 2))(jnp.asarray(x))
    np.testing.assert_allclose(grad, x, atol=1e-4)


def test_bfloat16_runs(x):
    y = dwt2(jnp.asarray(x, jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(idwt2(y), np.float32), x, atol=0.1)


@pytest.mark.parametrize("shape", [(1, 63, 64, 1), (1, 64, 65, 1), (64, 64, 1)])
def test_bad_shape_raises(shape):
    with pytest.raises(ValueError, match="x"):
        dwt2(jnp.zeros(shape))


def test_bad_coefficients_raise():
    with pytest.raises(ValueError, match="4C"):
        idwt2(jnp.zeros((1, 8, 8, 6)))


# --- the matrix form against the convolution it replaced (values and gradients) ---------------
def _conv_dwt2(x):
    """The DWT as XLA's depthwise convolution: periodic pad 4, 9×9 flipped analysis kernels,
    stride 2 (the package's implementation before the matrix form)."""
    from xmodality_lite.models.wavelets import _BANK

    lo, hi = _BANK[0, ::-1], _BANK[1, ::-1]
    kernels = np.stack([np.outer(a, b) for a, b in [(lo, lo), (hi, lo), (lo, hi), (hi, hi)]], -1)
    b, h, w, c = x.shape
    kernel = jnp.tile(jnp.asarray(kernels, x.dtype)[:, :, None, :], (1, 1, 1, c))
    padded = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="wrap")
    y = jax.lax.conv_general_dilated(padded, kernel, (2, 2), "VALID", feature_group_count=c,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision="highest")
    return y.reshape(b, h // 2, w // 2, c, 4).swapaxes(-1, -2).reshape(b, h // 2, w // 2, 4 * c)


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 24, 40, 2), (1, 4, 4, 1)])
def test_matrix_dwt_equals_the_depthwise_convolution(shape):
    x = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    np.testing.assert_allclose(dwt2(x), _conv_dwt2(x), atol=3e-6)
    probe = jnp.asarray(np.random.default_rng(3).standard_normal(dwt2(x).shape), jnp.float32)
    ours, ref = (jax.grad(lambda v, f=f: jnp.sum(f(v) * probe))(x) for f in (dwt2, _conv_dwt2))
    np.testing.assert_allclose(ours, ref, atol=3e-6)


@pytest.mark.parametrize("n", [4, 16, 64, 256])
def test_synthesis_inverts_analysis_exactly(n):
    """S_lo A_lo + S_hi A_hi = I (perfect reconstruction) and A S = I (biorthogonality)."""
    from xmodality_lite.models.wavelets import analysis_matrix, synthesis_matrix

    a, s = analysis_matrix(n), synthesis_matrix(n)
    np.testing.assert_allclose(s[0] @ a[0] + s[1] @ a[1], np.eye(n), atol=1e-12)
    for p in range(2):
        for q in range(2):
            np.testing.assert_allclose(a[p] @ s[q], np.eye(n // 2) * (p == q), atol=1e-12)
