"""Feature extractors for the Fréchet distance (paper §3.4): ViT-B/16 and an offline stand-in.

The paper's FD uses Google's ImageNet-21k ViT-B/16 (Dosovitskiy et al. 2021) exactly as the
authors' code does (their ``vit.py``): a 256² grayscale slice in [0, 1] is repeated to three
channels with **no** mean/std normalisation, the 14×14 position-embedding grid of the 224-px
checkpoint is interpolated to 16×16 (``scipy.ndimage.zoom``, order 1; class token kept), and the
feature is the 768-d class token after the final ``encoder_norm`` (no ``pre_logits``, no head).
The MLP uses Flax's default ``gelu``, the tanh approximation, as the official model does.

The checkpoint (~400 MB) is not shipped. Without it, ``extractor="standin"`` gives multi-scale
wavelet statistics that respond to blur, noise and texture; FDs from it are labelled and are
NOT comparable with the paper's numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
import zipfile
from pathlib import Path
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import pywt
import scipy.ndimage
from flax import nnx
from tqdm.auto import tqdm

from xmodality_lite.models import eval_shape

WEIGHTS_ENV = "XMODALITY_VIT_WEIGHTS"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "weights" / "ViT-B_16.npz"
WEIGHTS_URL = "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"
FD_IMAGE_SIZE = 256  # the authors' FD input: 256² slices, 16×16 patches + class token
# FD feature extractors by name: "auto" is "vit" when its weights are present, else "standin"
ExtractorName = Literal["auto", "vit", "standin"]
EXTRACTORS: tuple[ExtractorName, ...] = get_args(ExtractorName)


# --------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class ViTSize:
    """Sizes of a ViT with a class token (Dosovitskiy et al. 2021, Table 1)."""

    patch: int
    hidden: int
    depth: int
    heads: int
    mlp_dim: int


VIT_B16 = ViTSize(patch=16, hidden=768, depth=12, heads=12, mlp_dim=3072)


class EncoderBlock(nnx.Module):
    """Pre-LN transformer block: x += MHA(LN(x)); x += MLP(LN(x))."""

    def __init__(self, size: ViTSize, *, rngs: nnx.Rngs):
        self.norm_attn = nnx.LayerNorm(size.hidden, epsilon=1e-6, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(size.heads, size.hidden, decode=False, rngs=rngs)
        self.norm_mlp = nnx.LayerNorm(size.hidden, epsilon=1e-6, rngs=rngs)
        self.mlp_in = nnx.Linear(size.hidden, size.mlp_dim, rngs=rngs)
        self.mlp_out = nnx.Linear(size.mlp_dim, size.hidden, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D]
        x = x + self.attention(self.norm_attn(x))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm_mlp(x)), approximate=True))


class ViT(nnx.Module):
    """Vision Transformer returning the class token after ``encoder_norm``: [B, H, W, 3] → [B, D]."""

    def __init__(self, size: ViTSize = VIT_B16, *, image_size: int = FD_IMAGE_SIZE,
                 rngs: nnx.Rngs):
        if image_size % size.patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch {size.patch}")
        self.size, self.grid = size, image_size // size.patch
        p, d = size.patch, size.hidden
        self.embedding = nnx.Conv(3, d, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, d)))
        self.pos_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1 + self.grid**2, d)))
        self.blocks = nnx.List([EncoderBlock(size, rngs=rngs) for _ in range(size.depth)])
        self.encoder_norm = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:  # [B, H, W, 3] → [B, D]
        x = self.embedding(images)  # [B, g, g, D]
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        x = jnp.concatenate([jnp.broadcast_to(self.cls[...], (x.shape[0], 1, x.shape[-1])), x], 1)
        x = x + self.pos_embedding[...]
        for block in self.blocks:
            x = block(x)
        return self.encoder_norm(x)[:, 0]


# --------------------------------------------------------------------------- checkpoint
# Block sub-module names of the official (pre-Linen numbered) checkpoint → ours.
_BLOCK_NAMES = {"LayerNorm_0": "norm_attn", "MultiHeadDotProductAttention_1": "attention",
                "LayerNorm_2": "norm_mlp", "MlpBlock_3/Dense_0": "mlp_in",
                "MlpBlock_3/Dense_1": "mlp_out"}
_UNUSED_KEYS = ("pre_logits/kernel", "pre_logits/bias", "head/kernel", "head/bias")
_POS_KEY = "Transformer/posembed_input/pos_embedding"


def _checkpoint_key(path: tuple) -> str:
    """Our parameter path → the official ``.npz`` key."""
    head, *rest = path
    if head == "blocks":
        index, module, *leaf = rest
        official = {v: k for k, v in _BLOCK_NAMES.items()}[module]
        return "/".join(["Transformer", f"encoderblock_{index}", official, *leaf])
    if head == "pos_embedding":
        return _POS_KEY
    if head == "encoder_norm":
        return "/".join(["Transformer", "encoder_norm", *rest])
    return "/".join(map(str, path))


def checkpoint_shapes(size: ViTSize = VIT_B16, *, grid: int = 14) -> dict[str, tuple[int, ...]]:
    """Official key → shape for a checkpoint with a ``grid``×``grid`` position embedding."""
    abstract = eval_shape(lambda: ViT(size, image_size=grid * size.patch, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {_checkpoint_key(path): tuple(v.get_value().shape) for path, v in flat}


def interpolate_pos_embedding(pos: np.ndarray, grid: int) -> np.ndarray:
    """[1, 1+g², D] → [1, 1+grid², D]: bilinear zoom of the patch grid, class token kept."""
    g = int(round(np.sqrt(pos.shape[1] - 1)))
    if g == grid:
        return pos
    pos = np.asarray(pos, np.float64)  # ndimage.zoom rejects float16 checkpoints
    patches = scipy.ndimage.zoom(pos[0, 1:].reshape(g, g, -1), (grid / g, grid / g, 1), order=1)
    return np.concatenate([pos[:, :1], patches.reshape(1, grid * grid, -1)], axis=1)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"ViT weights {path}: no such file. Download the ImageNet-21k "
                                f"ViT-B/16 from {WEIGHTS_URL} (gs://vit_models/imagenet21k/"
                                f"ViT-B_16.npz) to {DEFAULT_WEIGHTS} or set ${WEIGHTS_ENV}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(f"ViT weights {path}: not a readable .npz archive ({err})") from err


def load_vit(path: str | os.PathLike, size: ViTSize = VIT_B16, *,
             image_size: int = FD_IMAGE_SIZE) -> ViT:
    """Load an official-layout ViT ``.npz``, checking every key and shape, for ``image_size`` input.

    The position embedding may have any square grid; it is interpolated to
    ``image_size // patch``. ``pre_logits`` and ``head`` are ignored if present.
    """
    path = Path(path)
    params = _read_npz(path)
    pos = params.get(_POS_KEY)
    g = int(round(np.sqrt(pos.shape[1] - 1))) if pos is not None and pos.ndim == 3 else 0
    if pos is not None and (pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] != 1 + g * g
                            or pos.shape[2] != size.hidden):
        raise ValueError(f"ViT weights {path}: {_POS_KEY} has shape {pos.shape}, expected "
                         f"(1, 1 + g², {size.hidden}) for a g×g patch grid")
    expected = checkpoint_shapes(size, grid=g or 14)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected) - set(_UNUSED_KEYS))
    wrong = sorted(k for k in expected.keys() & params.keys() if params[k].shape != expected[k])
    problems = ([f"missing {k} {expected[k]}" for k in missing] + [f"unexpected {k}" for k in extra]
                + [f"{k} has shape {params[k].shape}, expected {expected[k]}" for k in wrong])
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"ViT weights {path} do not match ViT{size}: {'; '.join(problems[:5])}{more}")

    params[_POS_KEY] = interpolate_pos_embedding(params[_POS_KEY], image_size // size.patch)
    abstract = eval_shape(lambda: ViT(size, image_size=image_size, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    for p, v in flat:
        v.set_value(jnp.asarray(params[_checkpoint_key(p)], jnp.float32))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def vit_weights_path(path: str | os.PathLike | None = None) -> Path:
    """Where the ViT-B/16 weights are: ``path``, else ``$XMODALITY_VIT_WEIGHTS``, else the default."""
    return Path(path or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)


def load_vit_b16(path: str | os.PathLike | None = None, *, image_size: int = FD_IMAGE_SIZE) -> ViT:
    """The ImageNet-21k ViT-B/16 of the paper's FD, from :func:`vit_weights_path`."""
    return load_vit(vit_weights_path(path), VIT_B16, image_size=image_size)


@functools.lru_cache(maxsize=1)
def _cached_vit_b16(path: Path) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(load_vit_b16(path))


@nnx.jit
def _vit_forward(model: ViT, images: jax.Array) -> jax.Array:
    return model(images)


# --------------------------------------------------------------------------- extractors
@dataclasses.dataclass(frozen=True)
class FDFeatures:
    """Features [N, D] for the FD, labelled with the extractor that produced them."""

    features: np.ndarray
    extractor: str

    @property
    def comparable_with_paper(self) -> bool:
        return self.extractor == "vit"


def _as_gray_batch(images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"images must be [N, H, W, 1] or [N, H, W] in [0, 1], got {x.shape}")
    return x  # [N, H, W]


def vit_features(images, *, weights: str | os.PathLike | None = None,
                 batch_size: int = 16) -> np.ndarray:
    """ViT-B/16 class-token features of grayscale images in [0, 1]: [N, H, W, 1] → [N, 768].

    Slices are resized to 256² with cubic splines (``scipy.ndimage.zoom``, order 3, as the
    authors' volume FD does) when needed, repeated to RGB, and not normalised.
    """
    x = _as_gray_batch(images)
    if x.shape[1:] != (FD_IMAGE_SIZE, FD_IMAGE_SIZE):
        x = scipy.ndimage.zoom(x, (1, FD_IMAGE_SIZE / x.shape[1], FD_IMAGE_SIZE / x.shape[2]),
                               order=3)
    model = nnx.merge(*_cached_vit_b16(vit_weights_path(weights).resolve()))
    batches = range(0, len(x), batch_size)
    out = [np.asarray(_vit_forward(model, jnp.repeat(jnp.asarray(x[i:i + batch_size, ..., None]), 3, -1)))
           for i in tqdm(batches, desc="ViT-B/16 features", disable=len(batches) < 4)]
    return np.concatenate(out).astype(np.float64)


def standin_features(images, *, levels: int = 3, wavelet: str = "haar") -> np.ndarray:
    """Offline stand-in features: wavelet and layout statistics, [N, H, W, 1] → [N, 6·levels + 18].

    Per detail band (horizontal, vertical, diagonal) of each level: the logs of mean |c| and of
    the RMS of the coefficients (fine levels drop under blur and rise with noise, by factors,
    hence the log; their ratio tracks edge sparsity); plus the image mean, standard deviation
    and 4×4 block means (coarse layout). Deterministic and weight-free; NOT comparable with
    the paper's ViT-B/16 FD.
    """
    x = _as_gray_batch(images).astype(np.float64)
    if min(x.shape[1:]) < 2**levels * 2:
        raise ValueError(f"images of {x.shape[1:]} px are too small for {levels} wavelet levels")
    coeffs = pywt.wavedec2(x, wavelet, level=levels, axes=(-2, -1))
    feats = []
    for bands in coeffs[1:]:
        for c in bands:
            l1, rms = np.abs(c).mean(axis=(-2, -1)), np.sqrt((c**2).mean(axis=(-2, -1)))
            feats += [np.log(l1 + 1e-4), np.log(rms + 1e-4)]  # 1e-4: finite for flat images
    feats += [x.mean(axis=(-2, -1)), x.std(axis=(-2, -1))]
    feats += [block.mean(axis=(-2, -1)) for rows in np.array_split(x, 4, axis=-2)
              for block in np.array_split(rows, 4, axis=-1)]
    return np.stack(feats, axis=-1)


def resolve_extractor(extractor: str, weights: str | os.PathLike | None = None) -> str:
    """Check ``extractor``; "auto" becomes "vit" if its weights exist, else "standin"."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown FD extractor {extractor!r}; choose one of {list(EXTRACTORS)}")
    if extractor == "auto":
        return "vit" if vit_weights_path(weights).is_file() else "standin"
    return extractor


def fd_features(images, *, extractor: ExtractorName = "vit",
                weights: str | os.PathLike | None = None) -> FDFeatures:
    """FD features of grayscale images in [0, 1] ([N, H, W, 1]), labelled with their extractor."""
    name = resolve_extractor(extractor, weights)
    if name == "vit":
        return FDFeatures(vit_features(images, weights=weights), "vit")
    if extractor == "auto":
        warnings.warn(f"no ViT-B/16 weights at {vit_weights_path(weights)}; using the stand-in "
                      "FD extractor (not comparable with the paper)", stacklevel=2)
    return FDFeatures(standin_features(images), "standin")
