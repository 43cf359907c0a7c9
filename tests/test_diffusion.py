"""Tests for xmodality_lite.diffusion against closed forms and independent numpy references."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny import normal, uniform
from flax import nnx
from scipy.special import expit

import xmodality_lite.diffusion as diff
from xmodality_lite import prng

KEY = jax.random.key(0)
# one compilation per loss instead of one per eager primitive keeps these tests fast
diffusion_loss = jax.jit(diff.diffusion_loss, static_argnums=0)


def _x0(shape=(2, 8, 8, 1), seed=1):
    # inside (-1, 1) so that the sampler's clipping never touches the true data
    return uniform(seed, shape, -0.9, 0.9)


def _oracle(z_t, x0, logsnr):
    """The exact v for data x0, passed as the condition so that one function (and one jit
    cache entry) serves every test: from z = α x0 + σ ε and v = α ε − σ x0, v = (α z − x0) / σ."""
    alpha, sigma = diff.alpha_sigma(logsnr.reshape(-1, 1, 1, 1))
    return ((alpha * z_t - x0) / sigma).astype(z_t.dtype)


def _zero_model(z_t, cond, logsnr):
    return jnp.zeros_like(z_t)


def _np_alpha_sigma(logsnr):
    logsnr = np.asarray(logsnr, np.float64)
    return np.sqrt(expit(logsnr)), np.sqrt(expit(-logsnr))


# ------------------------------------------------------------------------------------ schedules
T_FINE = np.linspace(0.0, 1.0, 1001)


def test_alpha_sigma_variance_preserving():
    alpha, sigma = diff.alpha_sigma(jnp.linspace(-20.0, 20.0, 401))
    # α² + σ² = sigmoid(λ) + sigmoid(−λ) = 1, to float32 rounding
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
    assert np.all(np.asarray(alpha) > 0) and np.all(np.asarray(sigma) > 0)


@pytest.mark.parametrize("name", ["cosine", "sigmoid"])
def test_schedule_monotone_bounded_endpoints(name):
    logsnr = np.asarray(diff.SCHEDULES[name](T_FINE))
    assert np.all(np.diff(logsnr) < 0), "λ(t) must be strictly decreasing"
    assert logsnr.min() >= -15.0 and logsnr.max() <= 15.0
    # λ(0) = λ_max and λ(1) = λ_min up to float32 rounding of tan/atan
    np.testing.assert_allclose(logsnr[[0, -1]], [15.0, -15.0], atol=1e-4)


def test_cosine_matches_formula_and_unclipped_cosine():
    t = np.linspace(0.0, 1.0, 101)
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    expected = -2.0 * np.log(np.tan(t_min + t * (t_max - t_min)))  # float64
    np.testing.assert_allclose(diff.logsnr_cosine(t), expected, atol=1e-4)
    # the time rescaling moves the angle θ = πt/2 by t_min (1 − 2t), t_min ≈ 5.5e-4, and
    # dλ/dθ = −4 / sin 2θ: away from the clip λ equals −2 log tan(πt/2) to first order in t_min
    inner = t[(t >= 0.05) & (t <= 0.95)]
    bound = 1.1 * 4 * t_min * np.abs(1 - 2 * inner) / np.sin(np.pi * inner) + 1e-5
    error = np.abs(diff.logsnr_cosine(inner) - (-2.0 * np.log(np.tan(np.pi * inner / 2))))
    assert np.all(error <= bound), (error / bound).max()
    np.testing.assert_allclose(diff.logsnr_cosine(0.5), 0.0, atol=1e-6)


@pytest.mark.parametrize(("image_size", "base_size"), [(256, 32), (64, 32), (64, 64)])
def test_shifted_cosine_is_cosine_plus_log_ratio(image_size, base_size):
    expected = diff.logsnr_cosine(T_FINE) + 2.0 * np.log(base_size / image_size)  # eq. A.1
    np.testing.assert_allclose(
        diff.logsnr_shifted_cosine(T_FINE, image_size, base_size), expected, atol=1e-5
    )


@pytest.mark.parametrize(("start", "end", "tau"), [(0.0, 3.0, 0.5), (-3.0, 3.0, 1.0), (0, 3, 0.1)])
def test_sigmoid_matches_float64_closed_form(start, end, tau):
    t = np.linspace(0.0, 1.0, 201)
    v_start, v_end = expit(start / tau), expit(end / tau)
    alpha2 = (v_end - expit((t * (end - start) + start) / tau)) / (v_end - v_start)
    with np.errstate(divide="ignore"):
        expected = np.clip(np.log(alpha2) - np.log1p(-alpha2), -15.0, 15.0)
    got = np.asarray(diff.logsnr_sigmoid(t, start, end, tau))
    # float32 vs float64 of a log-ratio; tolerance covers the steep ends
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
    assert np.all(np.diff(got) <= 0)


def test_get_schedule_binds_and_caches():
    f = diff.get_schedule("shifted_cosine", image_size=256, base_size=32)
    np.testing.assert_allclose(f(T_FINE), diff.logsnr_shifted_cosine(T_FINE, 256, 32))
    assert f is diff.get_schedule("shifted_cosine", base_size=32, image_size=256)


# ------------------------------------------------------------------------------ parametrisation
def test_conversions_invert_forward_process():
    x0 = uniform(1, (16, 4, 4, 1), -1.0, 1.0)
    eps = normal(2, x0.shape)
    logsnr = uniform(3, (16,), -15.0, 15.0)
    z_t, v = diff.q_sample(x0, eps, logsnr), diff.v_target(x0, eps, logsnr)
    # x0 = α z − σ v and ε = σ z + α v exactly; float32 rounding with |z|, |v| ≲ 5
    np.testing.assert_allclose(diff.x0_from_v(z_t, v, logsnr), x0, atol=1e-5)
    np.testing.assert_allclose(diff.eps_from_v(z_t, v, logsnr), eps, atol=1e-5)
    alpha, sigma = _np_alpha_sigma(logsnr)
    a, s = alpha[:, None, None, None], sigma[:, None, None, None]
    np.testing.assert_allclose(z_t, a * x0 + s * eps, atol=1e-5)
    np.testing.assert_allclose(v, a * eps - s * x0, atol=1e-5)


# ------------------------------------------------------------------------------------- losses
def test_min_snr_weight_closed_form():
    gamma = 5.0
    # SNR = 1 < γ: 1/2; SNR = γ: γ/(γ+1); SNR = e^5 > γ: γ/(e^5+1)
    logsnr = jnp.array([0.0, math.log(gamma), 5.0])
    expected = [0.5, gamma / (gamma + 1), gamma / (math.exp(5.0) + 1)]
    np.testing.assert_allclose(diff.min_snr_weight(logsnr, gamma), expected, rtol=1e-6)
    grid = np.linspace(-15.0, 15.0, 301)
    snr = np.exp(grid)
    np.testing.assert_allclose(
        diff.min_snr_weight(jnp.asarray(grid), gamma), np.minimum(snr, gamma) / (snr + 1), rtol=1e-5
    )


def test_diffusion_loss_oracle_vs_zero_model():
    x0 = _x0((4, 8, 8, 1))
    cond = -x0
    zero = diffusion_loss(_zero_model, x0, cond, KEY)
    oracle = diffusion_loss(_oracle, x0, x0, KEY)
    assert zero.dtype == jnp.float32 and oracle.dtype == jnp.float32
    assert np.isfinite(zero) and zero > 0.01  # E[v²] ≥ α²·E[ε²] ≈ weights of order 0.1–0.5
    # the oracle's v equals the target up to float32 division by σ ≥ 5.5e-4
    assert 0.0 <= oracle < 1e-6 * zero


def test_diffusion_loss_bfloat16_and_regression_loss():
    x0 = _x0((2, 8, 8, 1)).astype(jnp.bfloat16)
    loss = diffusion_loss(_zero_model, x0, x0, KEY)
    assert loss.dtype == jnp.float32 and np.isfinite(loss) and loss > 0
    tof, cta = _x0(seed=3), _x0(seed=4)
    expected = np.mean((np.tanh(np.asarray(tof)) - np.asarray(cta)) ** 2)
    np.testing.assert_allclose(diff.regression_loss(jnp.tanh, tof, cta), expected, rtol=1e-6)


# ------------------------------------------------------------------------------------ samplers
@pytest.mark.parametrize(("t", "s"), [(1.0, 0.99), (0.6, 0.5), (0.05, 0.0)])
def test_ddpm_posterior_matches_gaussian_posterior(t, s):
    x0 = _x0((2, 4, 4, 1))
    z_t = normal(0, x0.shape)
    logsnr_t = jnp.full((2,), diff.logsnr_cosine(t))
    logsnr_s = jnp.full((2,), diff.logsnr_cosine(s))
    x0_hat = diff.x0_from_v(z_t, _oracle(z_t, x0, logsnr_t), logsnr_t)
    mean, var = diff.ddpm_posterior(z_t, x0_hat, logsnr_t, logsnr_s)
    # q(z_s | z_t, x0) for the VP process, in float64 (Kingma et al. 2021, App. A)
    (a_t, s_t), (a_s, s_s) = _np_alpha_sigma(logsnr_t[0]), _np_alpha_sigma(logsnr_s[0])
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    mu = a_ts * s_s**2 / s_t**2 * np.asarray(z_t) + a_s * s2_ts / s_t**2 * np.asarray(x0)
    np.testing.assert_allclose(mean, mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var[:, 0, 0, 0], s2_ts * s_s**2 / s_t**2, rtol=1e-4)


def test_ddpm_step_draws_from_posterior():
    # one constant image of 128² pixels: the pixels are i.i.d. draws of the posterior
    n = 128 * 128
    z_t, x0_hat = jnp.full((1, 128, 128, 1), 0.3), jnp.full((1, 128, 128, 1), -0.5)
    logsnr_t, logsnr_s = jnp.array([-1.0]), jnp.array([0.5])
    mean, var = (float(a.ravel()[0]) for a in diff.ddpm_posterior(z_t, x0_hat, logsnr_t, logsnr_s))
    z_s = np.asarray(diff.ddpm_step(z_t, x0_hat, logsnr_t, logsnr_s, KEY, False))
    assert abs(z_s.mean() - mean) < 5 * math.sqrt(var / n)  # 5 standard errors
    assert abs(z_s.var() - var) < 5 * var * math.sqrt(2 / n)
    last = diff.ddpm_step(z_t, x0_hat, logsnr_t, logsnr_s, KEY, True)
    np.testing.assert_allclose(last, mean, rtol=1e-6)  # no noise on the final step


@pytest.mark.parametrize("steps", [1, 3, 20, diff.samplers.GRID_LENGTH + 1])  # last: a longer grid
def test_ddim_oracle_recovers_x0(steps):
    x0 = _x0()
    # default schedule: DDIM keeps z_t = α_t x0 + σ_t ε for the initial ε, so it ends at
    # clip(α(15) x0 + σ(15) ε), σ(15) ≈ 5.5e-4
    x, traj = diff.ddim_sample(_oracle, x0, KEY, steps=steps, return_trajectory=True)
    (a_1, s_1), (a_0, s_0) = _np_alpha_sigma(-15.0), _np_alpha_sigma(15.0)
    eps = (np.asarray(traj.z[0]) - a_1 * np.asarray(x0)) / s_1
    np.testing.assert_allclose(x, np.clip(a_0 * x0 + s_0 * eps, -1, 1), atol=2e-5)
    # with λ_max = 25 the residual noise σ(25) ≈ 3.7e-6 is below the 1e-4 tolerance
    sharp = diff.get_schedule("cosine", logsnr_max=25.0)
    x = diff.ddim_sample(_oracle, x0, KEY, steps=steps, schedule=sharp)
    np.testing.assert_allclose(x, x0, atol=1e-4)


@pytest.mark.parametrize("steps", [1, 20])
def test_ddpm_oracle_ends_at_x0(steps):
    x0 = _x0()
    x = diff.ddpm_sample(_oracle, x0, KEY, steps=steps)
    # last step is the posterior mean; its residual noise is e^{λ_t/2 − 15} ε ≤ 1e-5 |ε|
    np.testing.assert_allclose(x, x0, atol=1e-4)


@pytest.mark.parametrize("name", list(diff.SAMPLERS))
def test_sampling_is_deterministic_in_key(name):
    cond = _x0((2, 8, 16, 1))
    a = diff.sample(name, _zero_model, cond, KEY, steps=4)
    b = diff.sample(name, _zero_model, cond, KEY, steps=4)
    c = diff.sample(name, _zero_model, cond, jax.random.key(7), steps=4)
    assert a.shape == cond.shape
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.abs(np.asarray(a)) <= 1.0)


@pytest.mark.parametrize("name", list(diff.SAMPLERS))
def test_sampling_bfloat16(name):
    x0 = _x0()
    x = diff.sample(name, _oracle, x0.astype(jnp.bfloat16), KEY, steps=5)
    assert x.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(x, np.float32)))
    # the model sees z in bf16 (relative rounding 2^-9, |z| ≲ 4 at the end) and DDIM keeps
    # σ(15) ε ≈ 5.5e-4 |ε| of noise: 1e-2 covers both
    np.testing.assert_allclose(np.asarray(x, np.float32), x0, atol=1e-2)


def test_trajectory_shapes():
    cond = _x0((2, 8, 16, 1))
    x, traj = diff.ddpm_sample(_zero_model, cond, KEY, steps=4, return_trajectory=True)
    assert traj.z.shape == (5, 2, 8, 16, 1) and traj.x0_hat.shape == (4, 2, 8, 16, 1)
    np.testing.assert_array_equal(x, jnp.clip(traj.z[-1], -1, 1))
    np.testing.assert_array_equal(x, diff.ddpm_sample(_zero_model, cond, KEY, steps=4))


class _TinyDenoiser(nnx.Module):
    traces = 0

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(2, 1, kernel_size=(1, 1), rngs=rngs)

    def __call__(self, z_t, cond, logsnr):
        _TinyDenoiser.traces += 1  # Python side effect: runs once per trace, not per call
        return self.conv(jnp.concatenate([z_t, cond], -1)) * jnp.tanh(logsnr)[:, None, None, None]


def test_nnx_module_path_compiles_once():
    model = _TinyDenoiser(rngs=nnx.Rngs(0))
    cond = _x0()
    _TinyDenoiser.traces = 0
    a = diff.ddim_sample(model, cond, KEY, steps=3)
    traced = _TinyDenoiser.traces
    assert traced >= 1
    b = diff.ddim_sample(model, cond, KEY, steps=3)
    np.testing.assert_array_equal(a, b)
    # new weights, and a second instance of the same structure, reuse the compilation
    model.conv.kernel.value = model.conv.kernel.value * 0.5
    c = diff.ddim_sample(model, cond, KEY, steps=3)
    d = diff.ddim_sample(_TinyDenoiser(rngs=nnx.Rngs(1)), cond, KEY, steps=3)
    assert _TinyDenoiser.traces == traced
    assert not np.allclose(a, c) and not np.allclose(c, d)
    # same result as calling the module eagerly through a plain function
    e = diff.ddim_sample(lambda z, y, l: model(z, y, l), cond, KEY, steps=3)
    np.testing.assert_allclose(c, e, atol=1e-6)
    pure_fn, state = diff.functional(model)
    logsnr = jnp.zeros((2,))
    np.testing.assert_allclose(pure_fn(state, cond, cond, logsnr), model(cond, cond, logsnr))


def _scan_sample(model, cond, key, steps, sampler):
    """The sampler written as one ``lax.scan`` over the steps: the independent reference."""
    step_fn = diff.get_sampler(sampler)
    logsnr = diff.logsnr_cosine(jnp.linspace(1.0, 0.0, steps + 1))
    key_init, key_steps = jax.random.split(key)
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state):
        def body(z_t, xs):
            lam_t, lam_s, k, last = xs
            lam_t, lam_s = jnp.full((cond.shape[0],), lam_t), jnp.full((cond.shape[0],), lam_s)
            v_hat = nnx.merge(graphdef, state)(z_t, cond, lam_t)
            x0_hat = jnp.clip(diff.x0_from_v(z_t, v_hat, lam_t), -1.0, 1.0)
            z_s = step_fn(z_t, x0_hat, lam_t, lam_s, k, last)
            return z_s, (z_s, x0_hat)

        z_1 = jax.random.normal(key_init, cond.shape, jnp.float32)
        xs = (logsnr[:-1], logsnr[1:], jax.random.split(key_steps, steps),
              jnp.arange(steps) == steps - 1)
        z_0, (zs, x0s) = jax.lax.scan(body, z_1, xs)
        return jnp.clip(z_0, -1.0, 1.0), jnp.concatenate([z_1[None], zs]), x0s

    return run(state)


@pytest.mark.parametrize("name", list(diff.SAMPLERS))
def test_loop_and_trajectory_equal_a_scan_over_the_steps(name):
    """Same grid, keys and steps as one scan, for the loop (the sample) and the step-by-step
    path (the trajectory). XLA may fuse a scan's body, a fori_loop's body and a standalone step
    differently, so float32 rounding may differ (1.5e-7 here; the shipped models at the smoke
    profile: bit for bit at 3 steps, 6e-8 at 1 step): a wrong key or λ would move it by ~1."""
    model = _TinyDenoiser(rngs=nnx.Rngs(0))
    cond = _x0((2, 8, 8, 1))
    for steps in (1, 2, 5):
        want, want_z, want_x0 = _scan_sample(model, cond, KEY, steps, name)
        got = diff.sample(name, model, cond, KEY, steps=steps)
        end, path = diff.sample(name, model, cond, KEY, steps=steps, return_trajectory=True)
        for a, b in ((got, want), (end, want), (path.z, want_z), (path.x0_hat, want_x0)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_one_compiled_loop_serves_every_step_count_and_sampler():
    model = _TinyDenoiser(rngs=nnx.Rngs(0))
    cond = _x0((3, 8, 8, 1))
    _TinyDenoiser.traces = 0
    diff.ddpm_sample(model, cond, KEY, steps=2)
    traced, drawn = _TinyDenoiser.traces, diff.samplers._start._cache_size()
    assert traced >= 1
    for steps in (7, 1, diff.samplers.GRID_LENGTH):
        diff.ddpm_sample(model, cond, KEY, steps=steps)
    diff.ddim_sample(model, cond, KEY, steps=4)  # the other sampler is a branch of that program
    assert _TinyDenoiser.traces == traced  # the model was not traced again
    assert diff.samplers._start._cache_size() == drawn  # nor were z_1 and the keys' program
    diff.ddpm_sample(model, cond, KEY, steps=3, return_trajectory=True)  # step by step
    traced = _TinyDenoiser.traces
    diff.ddpm_sample(model, cond, KEY, steps=5, return_trajectory=True)
    diff.ddim_sample(model, cond, KEY, steps=2, return_trajectory=True)
    assert _TinyDenoiser.traces == traced


def test_start_draws_the_keys_of_a_split_in_steps():
    """z_1 and the step keys come from one program per padded length, the step count an
    argument: the keys are ``split(key_steps, steps)`` (JAX's partitionable threefry numbers a
    split's children by index), zero beyond ``steps``, and z_1 is the normal draw of the first
    key at its shape, the start of a flat draw of a padded length. Other key schemes split in
    ``steps`` itself, a program per step count, with the same keys."""
    key_init, key_steps = jax.random.split(KEY)
    assert prng.draw_size(32, KEY) == prng.MIN_DRAW
    start = partial(diff.samplers._start, size=prng.MIN_DRAW, length=1024, per_key=False)
    assert diff.samplers._key_draws(KEY, 5, 1024) == 1024
    for steps in (1, 5, 300):
        z_1, data = start(KEY, np.int32(steps), draws=1024)
        np.testing.assert_array_equal(data[:steps],
                                      jax.random.key_data(jax.random.split(key_steps, steps)))
        assert data.shape == (1024, 2) and not np.any(data[steps:])
        assert z_1.shape == (prng.MIN_DRAW,)
        for shape in ((2, 4, 4, 1), (3, 8, 5, 2)):  # one program, every shape: the same numbers
            np.testing.assert_array_equal(prng.cut(z_1, shape),
                                          jax.random.normal(key_init, shape))
    np.testing.assert_array_equal(start(KEY, np.int32(steps), draws=steps)[1], data)
    rbg = jax.random.key(0, impl="rbg")
    assert diff.samplers._key_draws(rbg, 5, 1024) == 5
    assert prng.draw_size(32, rbg) == 32
    with jax.threefry_partitionable(False):  # where split(k, n)[:m] != split(k, m)
        assert diff.samplers._key_draws(KEY, 5, 1024) == 5
        assert prng.draw_size(32, KEY) == 32
        assert not np.array_equal(jax.random.key_data(jax.random.split(key_steps, 1024))[:5],
                                  jax.random.key_data(jax.random.split(key_steps, 5)))
        # and a draw of n numbers is not the start of a longer one: no padding there
        assert not np.array_equal(jax.random.normal(key_init, (64,))[:32],
                                  jax.random.normal(key_init, (32,)))


def test_a_sampler_registered_later_is_a_branch_of_a_new_program(monkeypatch):
    """The loop computes every registered step function and keeps the chosen one: a new entry
    in SAMPLERS compiles a new program that includes it, and it is the one kept."""

    def to_estimate(z_t, x0_hat, logsnr_t, logsnr_s, key, is_last):  # jump to x̂0 at once
        return x0_hat

    model = _TinyDenoiser(rngs=nnx.Rngs(0))
    cond = _x0((2, 8, 8, 1))
    ddim = diff.sample("ddim", model, cond, KEY, steps=3)
    monkeypatch.setitem(diff.SAMPLERS, "estimate", to_estimate)
    _TinyDenoiser.traces = 0
    got = diff.sample("estimate", model, cond, KEY, steps=1)
    assert _TinyDenoiser.traces >= 1  # a new registry, a new program
    # one step from t = 1: x̂0 = clip(α_1 z_1 − σ_1 v̂), which the trajectory records
    _, path = diff.sample("estimate", model, cond, KEY, steps=1, return_trajectory=True)
    np.testing.assert_array_equal(got, np.clip(path.x0_hat[0], -1, 1))
    np.testing.assert_array_equal(diff.sample("ddim", model, cond, KEY, steps=3), ddim)


@pytest.mark.parametrize("name", list(diff.SAMPLERS))
def test_sample_slices_is_one_chain_per_slice(name):
    model = _TinyDenoiser(rngs=nnx.Rngs(2))
    cond = _x0((3, 8, 8, 1), seed=4)
    keys = jax.random.split(KEY, 3)
    got = diff.sample_slices(name, model, cond, keys, steps=3)
    assert got.shape == cond.shape
    for i in range(3):  # batched with others or alone: the same chain
        alone = diff.sample(name, model, cond[i:i + 1], keys[i], steps=3)[0]
        np.testing.assert_allclose(got[i], alone, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"keys must be one key per slice, shape \(3,\)"):
        diff.sample_slices(name, model, cond, keys[:2], steps=3)


# -------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: diff.ddpm_sample(_zero_model, _x0(), KEY, steps=0), "steps must be"),
        (lambda: diff.ddim_sample(_zero_model, _x0(), KEY, steps=2.0), "steps must be"),
        (lambda: diff.sample("euler", _zero_model, _x0(), KEY, steps=2), "unknown sampler 'euler'"),
        (lambda: diff.ddpm_sample(_zero_model, _x0()[0], KEY, steps=2), "cond must be NHWC"),
        (lambda: diff.get_schedule("linear"), r"unknown schedule 'linear'; choose one of \["),
        (lambda: diff.get_schedule("cosine", size=3), "bad arguments for schedule 'cosine'"),
        (lambda: diff.logsnr_cosine(jnp.array([0.5, 1.1])), r"t must lie in \[0, 1\]"),
        (lambda: diff.logsnr_sigmoid(-0.1), r"t must lie in \[0, 1\]"),
        (lambda: diff.logsnr_sigmoid(0.5, start=3.0, end=0.0), "start < end"),
        (lambda: diff.q_sample(_x0(), jnp.zeros((2, 8, 8, 2)), jnp.zeros(2)), "eps must have"),
        (lambda: diff.v_target(_x0(), _x0(), jnp.zeros(3)), r"logsnr must have shape \(2,\)"),
        (lambda: diff.x0_from_v(_x0(), _x0(), jnp.zeros((2, 1))), r"logsnr must have shape"),
        (lambda: diff.diffusion_loss(_zero_model, _x0(), _x0((2, 8, 4, 1)), KEY), "cond must"),
        (lambda: diff.diffusion_loss(_zero_model, _x0()[..., 0], _x0()[..., 0], KEY), "x0 must"),
        (lambda: diff.regression_loss(jnp.tanh, _x0(), _x0((1, 8, 8, 1))), "cta must"),
        (lambda: diff.min_snr_weight(jnp.zeros(2), gamma=0.0), "gamma must be > 0"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", list(diff.SAMPLERS))
def test_sampler_steps_share_one_typed_signature(name):
    """Every registered step function has the driver's signature, fully annotated."""
    import inspect
    import typing

    step = diff.get_sampler(name)
    assert step is diff.SAMPLERS[name]
    hints = typing.get_type_hints(step)
    params = list(inspect.signature(step).parameters)
    assert params == ["z_t", "x0_hat", "logsnr_t", "logsnr_s", "key", "is_last"]
    assert all(hints[p] is jax.Array for p in params) and hints["return"] is jax.Array


def test_unknown_sampler_is_one_check():
    with pytest.raises(ValueError, match=r"unknown sampler 'euler'; choose one of \['ddim', 'ddpm'\]"):
        diff.get_sampler("euler")
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        diff.sample("euler", _zero_model, _x0(), KEY, steps=2)
