"""Metrics of paper §3.4 against scikit-image, scipy and closed forms."""

import csv
import io
import math

import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from xmodality_lite import metrics as M

SKIMAGE_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _textured(rng, shape, smooth=1.5):
    """Smooth random field in [0, 1]: realistic local variance, so no SSIM clamp is active."""
    x = scipy.ndimage.gaussian_filter(rng.normal(size=shape), smooth)
    return (x - x.min()) / (x.max() - x.min())


@pytest.fixture
def slice_pair():
    rng = np.random.default_rng(0)
    target = np.stack([_textured(rng, (32, 40)) for _ in range(3)])[..., None]
    pred = np.clip(target + 0.1 * rng.normal(size=target.shape), 0, 1)
    return pred.astype(np.float32), target.astype(np.float32)


def test_to_unit_range_maps_and_clips():
    y = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(M.to_unit_range(y), [0, 0, 0.5, 0.75, 1, 1])


def test_slice_metrics_match_skimage_per_image(slice_pair):
    pred, target = slice_pair
    got = {f.__name__: f(pred, target) for f in (M.mse, M.mae, M.psnr, M.ssim)}
    for i in range(len(pred)):
        p, t = pred[i, ..., 0].astype(np.float64), target[i, ..., 0].astype(np.float64)
        np.testing.assert_allclose(got["mse"][i], mean_squared_error(t, p), rtol=1e-5)
        np.testing.assert_allclose(got["mae"][i], np.abs(t - p).mean(), rtol=1e-5)
        np.testing.assert_allclose(got["psnr"][i],
                                   peak_signal_noise_ratio(t, p, data_range=1.0), rtol=1e-5)
        # skimage filters with reflect padding, then crops (11 - 1) / 2 = 5 px from each border
        # before averaging: exactly the "valid" map dm-pix averages. Only float32 vs float64
        # rounding separates them.
        ref = structural_similarity(t, p, data_range=1.0, **SKIMAGE_SSIM)
        np.testing.assert_allclose(got["ssim"][i], ref, atol=2e-5)


def test_ssim_of_identical_images_is_one_and_drops_with_noise(slice_pair):
    pred, target = slice_pair
    np.testing.assert_allclose(M.ssim(target, target), 1.0, atol=1e-6)
    assert np.all(M.ssim(pred, target) < 0.95)


def test_nd_ssim_in_2d_equals_dm_pix(slice_pair):
    pred, target = slice_pair
    ours = M._ssim_nd(pred[0, ..., 0], target[0, ..., 0], 1.0)
    np.testing.assert_allclose(ours, M.ssim(pred[:1], target[:1])[0], atol=1e-6)  # dm-pix


def test_ssim_3d_matches_skimage_3d():
    rng = np.random.default_rng(1)
    target = -50 + 400 * _textured(rng, (20, 24, 22))
    pred = np.clip(target + 40 * rng.normal(size=target.shape), -50, 350)
    ref = structural_similarity(target, pred, data_range=400.0, **SKIMAGE_SSIM)
    # Same valid-interior argument as in 2D, now along three axes; float32 in HU leaves ~1e-5.
    np.testing.assert_allclose(M.ssim_3d(pred, target, data_range=400.0), ref, atol=5e-5)


def test_gaussian_window_matches_dm_pix_taps():
    x = np.arange(11) - 5
    w = np.exp(-0.5 * (x / 1.5) ** 2)
    np.testing.assert_allclose(M.gaussian_window(), w / w.sum())


def test_volume_metrics_in_hu_match_skimage_after_clipping():
    rng = np.random.default_rng(2)
    target = -50 + 400 * _textured(rng, (16, 18, 20))
    target[0] = -1000.0  # air outside the window counts as -50 HU
    pred = target + 30 * rng.normal(size=target.shape)
    got = M.volume_metrics(pred, target)
    p, t = np.clip(pred, -50, 350), np.clip(target, -50, 350)
    np.testing.assert_allclose(got["mse"], mean_squared_error(t, p), rtol=1e-5)
    np.testing.assert_allclose(got["mae"], np.abs(t - p).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["psnr"], peak_signal_noise_ratio(t, p, data_range=400.0),
                               rtol=1e-5)
    np.testing.assert_allclose(got["ssim"],
                               structural_similarity(t, p, data_range=400.0, **SKIMAGE_SSIM),
                               atol=5e-5)
    assert M.volume_metrics(target, target)["psnr"] == math.inf


def test_transverse_slices_for_fd_window_and_axis():
    vol = np.zeros((4, 5, 3))
    vol[..., 1], vol[..., 2] = 150.0, 1000.0  # mid-window, above the window
    s = M.transverse_slices_for_fd(vol)
    assert s.shape == (3, 4, 5, 1)
    np.testing.assert_allclose(s[:, 0, 0, 0], [50 / 400, 200 / 400, 1.0])


@pytest.mark.parametrize("fn, args, match", [
    (M.mse, (np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 5, 1))), "differ in shape"),
    (M.ssim, (np.zeros((4, 4, 1)), np.zeros((4, 4, 1))), "rank-4"),
    (M.ssim, (np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1))), "at least 11"),
    (M.ssim_3d, (np.zeros((8, 20, 20)), np.zeros((8, 20, 20))), "11 voxels"),
])
def test_bad_shapes_raise(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


# --------------------------------------------------------------------------- Fréchet distance
def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(3).normal(size=(200, 5))
    mu, sigma = M.feature_statistics(x)
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fd_diagonal_gaussians_closed_form():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)  # = 5 + 10
    np.testing.assert_allclose(M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected)


def test_fd_general_gaussians_closed_form_with_commuting_covariances():
    # Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ commute, so FD = Σ(√a − √b)² + ‖Δμ‖² still holds.
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(4, 4)))
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 1.0, 0.5, 2.0])
    fd = M.frechet_distance(np.zeros(4), q @ np.diag(a) @ q.T, np.ones(4), q @ np.diag(b) @ q.T)
    np.testing.assert_allclose(fd, np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + 4.0, rtol=1e-10)


def test_fd_grows_with_a_shift_exactly_as_the_squared_shift():
    x = np.random.default_rng(5).normal(size=(300, 3))
    mu, sigma = M.feature_statistics(x)
    fds = [M.frechet_distance(mu, sigma, *M.feature_statistics(x + s)) for s in (0.5, 1.0, 2.0)]
    np.testing.assert_allclose(fds, [3 * 0.25, 3 * 1.0, 3 * 4.0], rtol=1e-8)


def test_fd_retries_with_diagonal_offset_when_sqrtm_fails(monkeypatch):
    calls = []

    def flaky_sqrtm(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else np.sqrt(np.abs(m))

    monkeypatch.setattr(M.scipy.linalg, "sqrtm", flaky_sqrtm)
    fd = M.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
    np.testing.assert_allclose(calls[1], (1 + 1e-6) ** 2 * np.eye(2))
    np.testing.assert_allclose(fd, 4 - 2 * 2 * (1 + 1e-6))


def test_feature_statistics_validates():
    with pytest.raises(ValueError, match="N ≥ 2"):
        M.feature_statistics(np.zeros((1, 3)))


def test_accumulator_merges_batches_like_one_pass_and_resets():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(90, 4)), rng.normal(1.0, 2.0, size=(90, 4))
    acc = M.FDAccumulator()
    for i in range(0, 90, 16):  # uneven last batch
        acc.update(real[i:i + 16], fake[i:i + 16])
    one_pass = M.frechet_distance(*M.feature_statistics(real), *M.feature_statistics(fake))
    np.testing.assert_allclose(acc.compute(), one_pass, rtol=1e-10)
    assert acc.count == 90

    # The reference evaluator leaks statistics from one step count into the next; ours not.
    acc.reset()
    assert acc.count == 0
    with pytest.raises(ValueError, match="at least 2"):
        acc.compute()
    acc.update(real[:40], real[40:80])
    fresh = M.FDAccumulator()
    fresh.update(real[:40], real[40:80])
    assert acc.compute() == fresh.compute()


def test_accumulator_labels_and_warns_for_standin_features():
    from xmodality_lite.features import FDFeatures

    x = np.random.default_rng(7).normal(size=(10, 3))
    acc = M.FDAccumulator()
    acc.update(FDFeatures(x, "standin"), FDFeatures(x + 1, "standin"))
    assert acc.extractor == "standin"
    with pytest.warns(M.StandinFDWarning, match="NOT comparable"):
        acc.compute()
    with pytest.raises(ValueError, match="mix feature extractors"):
        acc.update(FDFeatures(x, "vit"), FDFeatures(x, "vit"))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        M.FDAccumulator().update(x, x[:, :2])


# --------------------------------------------------------------------------- Table 1
def test_evaluate_slices_maps_to_unit_range_and_reports_fd(slice_pair):
    pred, target = slice_pair  # in [0, 1]; evaluate_slices takes [-1, 1]
    with pytest.warns(M.StandinFDWarning):
        got = M.evaluate_slices(2 * pred - 1, 2 * target - 1, extractor="standin")
    assert got["fd_extractor"] == "standin" and got["fd"] > 0
    np.testing.assert_allclose(got["mse"], np.mean((pred - target) ** 2), rtol=1e-5)
    np.testing.assert_allclose(got["ssim"], float(np.mean(M.ssim(pred, target))), rtol=1e-6)
    same = M.evaluate_slices(2 * target - 1, 2 * target - 1, extractor=None)
    assert same["mse"] == 0 and same["psnr"] == math.inf and "fd" not in same
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-6)


def test_format_table_csv_round_trips_and_markdown_rounds():
    rows = [
        {"model": "U-Net", "sampler": "–", "mse": 0.0236, "mae": 0.0712, "psnr": 18.3,
         "ssim": 0.5, "fd": None},
        {"model": "ADM", "sampler": "DDPM", "steps": 1000, "mse": 0.025, "mae": 0.07,
         "psnr": 17.94912, "ssim": 0.458, "fd": 1.2346, "fd_extractor": "standin"},
    ]
    csv_text, md = M.format_table(rows)
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert list(parsed[0]) == list(M.TABLE_COLUMNS)
    assert parsed[1]["PSNR"] == "17.94912" and parsed[0]["FD"] == "" and parsed[1]["Steps"] == "1000"
    lines = md.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| Model | Sampler | Steps | MSE")
    assert "| ADM | DDPM | 1000 | 0.025 | 0.070 | 17.949 | 0.458 | 1.235 | standin |" == lines[3]
    with pytest.raises(ValueError, match="lacks"):
        M.format_table([{"model": "ADM"}])
    with pytest.raises(ValueError, match="unknown columns"):
        M.format_table([{**rows[0], "lpips": 0.1}])


# --------------------------------------------------------------------------- masked metrics
def _sphere(shape, centre, radius):
    grid = np.indices(shape).astype(float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


@pytest.mark.parametrize("shape", [(40, 36), (24, 26, 22)])
def test_masked_metrics_match_skimage_on_the_masked_voxels(shape):
    rng = np.random.default_rng(3)
    target = -50 + 400 * _textured(rng, shape)
    target[:3] = -1000.0  # air: clipped to a flat −50 HU, where skimage's variances are 0
    pred = target + 30 * rng.normal(size=shape)
    mask = _sphere(shape, [n / 2 for n in shape], min(shape) / 2.5)
    got = M.masked_metrics(pred, target, mask)
    p, t = np.clip(pred, -50, 350), np.clip(target, -50, 350)
    np.testing.assert_allclose(got["mse"], mean_squared_error(t[mask], p[mask]), rtol=1e-5)
    np.testing.assert_allclose(got["mae"], np.abs(t[mask] - p[mask]).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["psnr"],
                               peak_signal_noise_ratio(t[mask], p[mask], data_range=400.0),
                               rtol=1e-5)
    # skimage's full map (reflect-padded) equals the valid map wherever the 11-tap window fits,
    # i.e. 5 voxels in from every border: compare the mask's mean there. float32 vs float64 in
    # HU: ~1e-5, as for the whole-volume SSIM above.
    _, full = structural_similarity(t, p, data_range=400.0, full=True, **SKIMAGE_SSIM)
    inner = tuple(slice(5, n - 5) for n in shape)
    np.testing.assert_allclose(got["ssim"], full[inner][mask[inner]].mean(), atol=5e-5)
    # and the mask really selects: the mean over all interior voxels is a different number
    assert abs(full[inner].mean() - got["ssim"]) > 1e-3


def test_masked_metrics_with_a_full_mask_are_the_volume_metrics():
    rng = np.random.default_rng(4)
    target = -50 + 400 * _textured(rng, (16, 18, 20))
    pred = target + 30 * rng.normal(size=target.shape)
    full = M.masked_metrics(pred, target, np.ones(target.shape, bool))
    whole = M.volume_metrics(pred, target)
    for k in ("mse", "mae", "psnr", "ssim"):
        np.testing.assert_allclose(full[k], whole[k], rtol=1e-5)


def test_masked_metrics_empty_mask_is_nan_and_shapes_checked():
    x = np.zeros((12, 12, 12))
    assert all(math.isnan(v) for v in M.masked_metrics(x, x, np.zeros_like(x, bool)).values())
    edge = np.zeros_like(x, bool)
    edge[0, 0, 0] = True  # a voxel no valid SSIM window is centred on
    got = M.masked_metrics(x + 1, x, edge)
    assert got["mse"] == 1.0 and math.isnan(got["ssim"])
    with pytest.raises(ValueError, match="one shape"):
        M.masked_metrics(x, x, np.ones((12, 12), bool))
