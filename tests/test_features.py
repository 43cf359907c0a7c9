"""FD feature extractors: the ViT-B/16 checkpoint layout, loader, forward pass and the stand-in."""

import numpy as np
import pytest
import scipy.ndimage

from xmodality_lite import features as F
from xmodality_lite import metrics as M

TINY = F.ViTSize(patch=4, hidden=16, depth=2, heads=2, mlp_dim=32)


def official_b16_layout():
    """The ViT-B/16 i21k key layout as listed in data-facts §5 (written out independently)."""
    d, h, hd, m = 768, 12, 64, 3072
    layout = {"embedding/kernel": (16, 16, 3, d), "embedding/bias": (d,), "cls": (1, 1, d),
              "Transformer/posembed_input/pos_embedding": (1, 197, d),
              "Transformer/encoder_norm/scale": (d,), "Transformer/encoder_norm/bias": (d,)}
    for i in range(12):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            layout |= {b + ln + "/scale": (d,), b + ln + "/bias": (d,)}
        for qkv in ("query", "key", "value"):
            a = b + f"MultiHeadDotProductAttention_1/{qkv}/"
            layout |= {a + "kernel": (d, h, hd), a + "bias": (h, hd)}
        layout |= {b + "MultiHeadDotProductAttention_1/out/kernel": (h, hd, d),
                   b + "MultiHeadDotProductAttention_1/out/bias": (d,),
                   b + "MlpBlock_3/Dense_0/kernel": (d, m), b + "MlpBlock_3/Dense_0/bias": (m,),
                   b + "MlpBlock_3/Dense_1/kernel": (m, d), b + "MlpBlock_3/Dense_1/bias": (d,)}
    return layout


def random_checkpoint(size, grid, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {k: (0.3 * rng.standard_normal(s, dtype=np.float32)).astype(dtype)
            for k, s in F.checkpoint_shapes(size, grid=grid).items()}


@pytest.fixture
def tiny_npz(tmp_path):
    params = random_checkpoint(TINY, grid=3)
    params |= {"head/kernel": np.zeros((16, 5), np.float32), "head/bias": np.zeros(5, np.float32)}
    path = tmp_path / "tiny.npz"
    np.savez(path, **params)
    return path, params


def test_b16_layout_matches_the_official_key_set_and_parameter_count():
    # Full-size check via eval_shape (no allocation): every key and shape of data-facts §5.
    shapes = F.checkpoint_shapes(F.VIT_B16, grid=14)
    assert shapes == official_b16_layout()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 85_798_656  # data-facts §5


def test_pos_embedding_interpolation_equals_scipy_zoom_and_keeps_class_token():
    pos = np.random.default_rng(1).normal(size=(1, 1 + 14 * 14, 8))
    out = F.interpolate_pos_embedding(pos, 16)
    ref = scipy.ndimage.zoom(pos[0, 1:].reshape(14, 14, 8), (16 / 14, 16 / 14, 1), order=1)
    assert out.shape == (1, 257, 8)
    np.testing.assert_array_equal(out[0, 0], pos[0, 0])
    np.testing.assert_allclose(out[0, 1:].reshape(16, 16, 8), ref)
    # order-1 zoom with aligned corners reproduces a linear ramp exactly
    i, j = np.meshgrid(np.arange(14), np.arange(14), indexing="ij")
    ramp = np.concatenate([[[[0.0]]], (2 * i + 3 * j).reshape(1, -1, 1)], axis=1)
    i2, j2 = np.meshgrid(np.linspace(0, 13, 16), np.linspace(0, 13, 16), indexing="ij")
    np.testing.assert_allclose(F.interpolate_pos_embedding(ramp, 16)[0, 1:, 0],
                               (2 * i2 + 3 * j2).ravel(), atol=1e-12)


def _layer_norm(x, p, eps=1e-6):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def numpy_vit(params, images, size):
    """Independent float64 numpy forward pass straight from the official keys."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    b, hgt, wid, _ = images.shape
    g, ps = hgt // size.patch, size.patch
    patches = images.reshape(b, g, ps, g, ps, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
    x = patches @ p["embedding/kernel"].reshape(-1, size.hidden) + p["embedding/bias"]
    x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, size.hidden)), x], axis=1)
    x = x + F.interpolate_pos_embedding(p[F._POS_KEY], g)
    for i in range(size.depth):
        def sub(module, i=i):
            prefix = f"Transformer/encoderblock_{i}/{module}/"
            return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}

        y = _layer_norm(x, sub("LayerNorm_0"))
        att = sub("MultiHeadDotProductAttention_1")
        q, k, v = (np.einsum("btd,dhk->bthk", y, att[f"{n}/kernel"]) + att[f"{n}/bias"]
                   for n in ("query", "key", "value"))
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = np.einsum("bhqs,bshk->bqhk", w, v)
        x = x + np.einsum("bqhk,hkd->bqd", o, att["out/kernel"]) + att["out/bias"]
        y = _layer_norm(x, sub("LayerNorm_2"))
        mlp = sub("MlpBlock_3")
        y = y @ mlp["Dense_0/kernel"] + mlp["Dense_0/bias"]
        y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)))  # flax nn.gelu
        x = x + y @ mlp["Dense_1/kernel"] + mlp["Dense_1/bias"]
    return _layer_norm(x, {"scale": p["Transformer/encoder_norm/scale"],
                           "bias": p["Transformer/encoder_norm/bias"]})[:, 0]


def test_loaded_model_equals_numpy_forward_with_interpolated_pos_embedding(tiny_npz):
    path, params = tiny_npz
    model = F.load_vit(path, TINY, image_size=16)  # checkpoint grid 3 → model grid 4
    images = np.random.default_rng(2).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    got = F._vit_forward(model, images)  # the jitted call vit_features uses
    np.testing.assert_allclose(got, numpy_vit(params, images, TINY), atol=2e-4)


def _save(tmp_path, params):
    path = tmp_path / "bad.npz"
    np.savez(path, **params)
    return path


def test_loader_errors_name_the_key_and_expected_shape(tmp_path, tiny_npz):
    _, params = tiny_npz
    q = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"
    with pytest.raises(ValueError, match=f"missing {q} \\(16, 2, 8\\)"):
        F.load_vit(_save(tmp_path, {k: v for k, v in params.items() if k != q}), TINY)
    with pytest.raises(ValueError, match="unexpected Transformer/extra"):
        F.load_vit(_save(tmp_path, params | {"Transformer/extra": np.zeros(1)}), TINY)
    with pytest.raises(ValueError, match=f"{q} has shape \\(16, 16\\), expected \\(16, 2, 8\\)"):
        F.load_vit(_save(tmp_path, params | {q: np.zeros((16, 16))}), TINY)
    with pytest.raises(ValueError, match="pos_embedding has shape .* expected \\(1, 1 \\+ g²"):
        F.load_vit(_save(tmp_path, params | {F._POS_KEY: np.zeros((1, 11, 16))}), TINY)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        F.load_vit(tmp_path / "junk.npz", TINY)
    with pytest.raises(FileNotFoundError, match="storage.googleapis.com/vit_models/imagenet21k"):
        F.load_vit(tmp_path / "nowhere.npz", TINY)


def test_missing_vit_weights_say_where_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv(F.WEIGHTS_ENV, str(tmp_path / "ViT-B_16.npz"))
    assert F.vit_weights_path() == tmp_path / "ViT-B_16.npz"
    with pytest.raises(FileNotFoundError, match="gs://vit_models/imagenet21k/ViT-B_16.npz"):
        F.vit_features(np.zeros((2, 32, 32, 1)))
    assert F.resolve_extractor("auto") == "standin"
    with pytest.warns(UserWarning, match="stand-in"):
        assert F.fd_features(np.zeros((2, 32, 32, 1)), extractor="auto").extractor == "standin"
    with pytest.raises(ValueError, match="unknown FD extractor 'inception'"):
        F.fd_features(np.zeros((2, 32, 32, 1)), extractor="inception")


@pytest.mark.slow
def test_full_size_b16_checkpoint_loads_and_gives_768d_features(tmp_path, monkeypatch):
    """Exact official layout at full size (float16 on disk to halve the ~350 MB), end to end."""
    path = tmp_path / "ViT-B_16.npz"
    np.savez(path, **random_checkpoint(F.VIT_B16, grid=14, dtype=np.float16))
    monkeypatch.setenv(F.WEIGHTS_ENV, str(path))
    feats = F.fd_features(np.random.default_rng(3).uniform(size=(2, 64, 64, 1)), extractor="vit")
    assert feats.extractor == "vit" and feats.comparable_with_paper
    assert feats.features.shape == (2, 768) and np.isfinite(feats.features).all()
    F._cached_vit_b16.cache_clear()


# --------------------------------------------------------------------------- stand-in
def _vessel_like(rng, n, size=32):
    """Smooth blobs plus thin bright lines: texture at several scales."""
    out = []
    for _ in range(n):
        x = scipy.ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
        x = (x - x.min()) / np.ptp(x) * 0.5
        for _ in range(3):
            r = rng.integers(2, size - 2)
            x[r, :] += 0.4 if rng.random() < 0.5 else 0
            x[:, r] += 0.4 if rng.random() < 0.5 else 0
        out.append(np.clip(x, 0, 1))
    return np.stack(out)[..., None]


def test_standin_fd_responds_to_blur_and_noise_more_than_to_resampling():
    rng = np.random.default_rng(4)
    a, b = _vessel_like(rng, 200), _vessel_like(rng, 200)
    blurred = scipy.ndimage.gaussian_filter(b, (0, 1, 1, 0))
    noisy = np.clip(b + 0.05 * rng.normal(size=b.shape), 0, 1)

    def fd(x, y):
        fx, fy = F.standin_features(x), F.standin_features(y)
        return M.frechet_distance(*M.feature_statistics(fx), *M.feature_statistics(fy))

    same = fd(a, b)
    assert F.standin_features(a).shape == (200, 6 * 3 + 18)
    # measured: blur ≈ 77×, noise ≈ 250× the FD between two samples of the same distribution
    assert fd(a, blurred) > 20 * same and fd(a, noisy) > 20 * same
