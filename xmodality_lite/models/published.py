"""Read and write the authors' released weights (``*.safetensors``, flax linen key layout).

Where to get them: the Hugging Face repository ``alexander-koch/xmodality`` holds
``unet.safetensors``, ``adm.safetensors``, ``uvit.safetensors`` and ``dit.safetensors``
(the raw training parameters, not an EMA, all float32, as the authors' export script writes
them). Check a download with ``md5sum uvit.safetensors`` against the sums in that repository's
README. The README's uvit
line has a typo: it reads ``md6ed96a0f…``; the sum is the part after ``md``, ``6ed96a0f…``.

Key layout: each tensor is named by its flax linen module path joined with "/", e.g.
``ResNetBlock_3/Block_0/Conv_0/kernel``; linen names each child ``<Class>_<n>``, n counting
that class's calls under the same parent. :func:`published_mapping` rebuilds those names by
walking our NNX model in the published call order, and maps each to our parameter path.
Kernels already share flax's layouts (Conv HWIO, Dense [in, out], attention q/k/v
[in, heads, head_dim]), so loading is a rename: no transposes. This module is the only place
that knows the published names (published → ours):

* conv models (:func:`_conv_model_mapping`), in call order: ``Dense_{0,1}`` → ``time_mlp``,
  ``Conv_0`` → ``stem``, ``ResNetBlock_n`` → ``encoder``/middle/``decoder`` blocks, a top-level
  ``RMSNorm_n`` + ``MultiHeadDotProductAttention_n`` → ``…/attn/{norm, query, query_bias, …}``,
  ``PixelShuffle{Down,Up}sample_n/Dense_0`` → ``…/resample/dense``, then ``final_block``,
  (U-ViT) ``to_wavelet`` and ``final``;
* U-ViT's ``Transformer_0`` (:func:`transformer_mapping`): ``RMSNorm_{2i}``, ``RMSNorm_{2i+1}``
  → ``blocks/i/{attention_norm, mlp_norm}``; ``MultiHeadDotProductAttention_i`` →
  ``blocks/i/attention``; ``SwiGLU_i/Dense_{0,1,2,3}`` → ``blocks/i/mlp/{time_proj, gate,
  value, out}``; ``RMSNorm_{2·depth}`` → ``final_norm``;
* DiT (:func:`dit_mapping`): ``LayerNorm_0``/``Dense_0``/``LayerNorm_1`` →
  ``patch_norm_in``/``patch_proj``/``patch_norm_out``; ``Dense_{1,2}`` →
  ``time_mlp_{in,out}``; ``DiTBlock_i/{Dense_0, RMSNorm_0, RMSNorm_1}`` →
  ``blocks/i/{adaln, attention_norm, mlp_norm}``; ``DiTBlock_i/MultiHeadDotProductAttention_0``
  → ``blocks/i/attention``; ``DiTBlock_i/SwiGLU_0/Dense_{0,1,2}`` → ``blocks/i/mlp/{gate,
  value, out}``; ``FinalLayer_0/{Dense_0, RMSNorm_0, Dense_1}`` → ``final/{adaln, norm, proj}``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file

from xmodality_lite.config import Profile
from xmodality_lite.io import atomic_path
from xmodality_lite.models import ADM, DiT, UNet, UViT, abstract_model
from xmodality_lite.models.layers import PixelShuffleDown, ResNetBlock, RowAttention
from xmodality_lite.models.normalization import GroupNorm

ParamPath = tuple[str | int, ...]
DENSE = ("bias", "kernel")
SCALE = ("scale",)  # RMSNorm
AFFINE = ("bias", "scale")  # LayerNorm, GroupNorm


class _LinenNames:
    """Flax linen's automatic child names: ``<Class>_<n>`` in call order, per class."""

    def __init__(self):
        self.counts = Counter()

    def __call__(self, cls: str) -> str:
        self.counts[cls] += 1
        return f"{cls}_{self.counts[cls] - 1}"


def _leaves(published: str, ours: ParamPath, names=DENSE) -> dict[str, ParamPath]:
    return {f"{published}/{w}": (*ours, w) for w in names}


def _resnet_block(published: str, ours: ParamPath, block: ResNetBlock) -> dict[str, ParamPath]:
    """Children in call order: time Dense, Block_0, Block_1, then the 1×1 skip Dense."""
    names, m = _LinenNames(), {}
    if block.time is not None:
        m |= _leaves(f"{published}/{names('Dense')}", (*ours, "time"))
    for attr in ("block_0", "block_1"):
        sub = f"{published}/{names('Block')}"
        m |= _leaves(f"{sub}/Conv_0", (*ours, attr, "conv"))
        if isinstance(getattr(block, attr).norm, GroupNorm):
            m |= _leaves(f"{sub}/GroupNorm_0", (*ours, attr, "norm"), AFFINE)
        else:
            m |= _leaves(f"{sub}/RMSNorm_0", (*ours, attr, "norm"), SCALE)
    if block.proj is not None:
        m |= _leaves(f"{published}/{names('Dense')}", (*ours, "proj"))
    return m


def _row_attention(names: _LinenNames, ours: ParamPath) -> dict[str, ParamPath]:
    """A top-level ``RMSNorm_n`` and ``MultiHeadDotProductAttention_n`` pair (RowAttention)."""
    m = _leaves(names("RMSNorm"), (*ours, "norm"), SCALE)
    mha = names("MultiHeadDotProductAttention")
    for p in ("query", "key", "value", "out"):
        m[f"{mha}/{p}/kernel"] = (*ours, p)
        m[f"{mha}/{p}/bias"] = (*ours, f"{p}_bias")
    return m


def _attention(published: str, ours: ParamPath) -> dict[str, ParamPath]:
    """Flax linen MHA keys under ``published`` → MultiHeadSelfAttention paths under ``ours``."""
    return {f"{published}/{p}/{w}": (*ours, p, w)
            for p in ("key", "out", "query", "value") for w in DENSE}


def _swiglu(published: str, ours: ParamPath, *, with_time: bool) -> dict[str, ParamPath]:
    """``SwiGLU_n/Dense_j`` keys → our paths; Dense_0 is the time projection iff ``with_time``."""
    names = (["time_proj"] if with_time else []) + ["gate", "value", "out"]
    return {f"{published}/Dense_{j}/{w}": (*ours, name, w)
            for j, name in enumerate(names) for w in DENSE}


def transformer_mapping(depth: int, *, with_time: bool = True,
                        prefix: str = "Transformer_0") -> dict[str, ParamPath]:
    """Published U-ViT transformer keys (``prefix/...``) → :class:`~.transformer.Transformer`
    param paths."""
    mapping = {f"{prefix}/RMSNorm_{2 * depth}/scale": ("final_norm", "scale")}
    for i in range(depth):
        block: ParamPath = ("blocks", i)
        mapping[f"{prefix}/RMSNorm_{2 * i}/scale"] = (*block, "attention_norm", "scale")
        mapping[f"{prefix}/RMSNorm_{2 * i + 1}/scale"] = (*block, "mlp_norm", "scale")
        mapping |= _attention(f"{prefix}/MultiHeadDotProductAttention_{i}", (*block, "attention"))
        mapping |= _swiglu(f"{prefix}/SwiGLU_{i}", (*block, "mlp"), with_time=with_time)
    return mapping


def dit_mapping(depth: int = 24) -> dict[str, ParamPath]:
    """Published ``dit.safetensors`` keys → :class:`~.dit.DiT` param paths."""
    mapping = (
        _leaves("LayerNorm_0", ("patch_norm_in",), AFFINE)
        | _leaves("Dense_0", ("patch_proj",))
        | _leaves("LayerNorm_1", ("patch_norm_out",), AFFINE)
        | _leaves("Dense_1", ("time_mlp_in",))
        | _leaves("Dense_2", ("time_mlp_out",))
        | _leaves("FinalLayer_0/Dense_0", ("final", "adaln"))
        | _leaves("FinalLayer_0/RMSNorm_0", ("final", "norm"), SCALE)
        | _leaves("FinalLayer_0/Dense_1", ("final", "proj"))
    )
    for i in range(depth):
        pub, ours = f"DiTBlock_{i}", ("blocks", i)
        mapping |= _leaves(f"{pub}/Dense_0", (*ours, "adaln"))
        mapping |= _leaves(f"{pub}/RMSNorm_0", (*ours, "attention_norm"), SCALE)
        mapping |= _leaves(f"{pub}/RMSNorm_1", (*ours, "mlp_norm"), SCALE)
        mapping |= _attention(f"{pub}/MultiHeadDotProductAttention_0", (*ours, "attention"))
        mapping |= _swiglu(f"{pub}/SwiGLU_0", (*ours, "mlp"), with_time=False)
    return mapping


def _conv_model_mapping(model: UNet | ADM | UViT) -> dict[str, ParamPath]:
    """Time MLP, stem, encoder, middle, decoder, head: the order the reference code calls them."""
    names, m = _LinenNames(), {}

    def block(ours: ParamPath, rb: ResNetBlock):
        m.update(_resnet_block(names("ResNetBlock"), ours, rb))

    def stages(attr: str):
        for i, stage in enumerate(getattr(model, attr).stages):
            for j, rb in enumerate(stage.blocks):
                block((attr, "stages", i, "blocks", j), rb)
            if stage.attn is not None:
                m.update(_row_attention(names, (attr, "stages", i, "attn")))
            if stage.resample is not None:
                cls = "Down" if isinstance(stage.resample, PixelShuffleDown) else "Up"
                m.update(_leaves(f"{names(f'PixelShuffle{cls}sample')}/Dense_0",
                                 (attr, "stages", i, "resample", "dense")))

    if hasattr(model, "time_mlp"):
        m |= _leaves(names("Dense"), ("time_mlp", "dense_0"))
        m |= _leaves(names("Dense"), ("time_mlp", "dense_1"))
    m |= _leaves(names("Conv"), ("stem",))
    stages("encoder")
    if isinstance(model, UNet):
        block(("middle",), model.middle)
    elif isinstance(model, ADM):
        block(("middle_0",), model.middle_0)
        assert isinstance(model.middle_attn, RowAttention)
        m |= _row_attention(names, ("middle_attn",))
        block(("middle_1",), model.middle_1)
    else:
        depth = len(model.transformer.blocks)
        sub = transformer_mapping(depth, prefix=names("Transformer"))
        m |= {k: ("transformer", *p) for k, p in sub.items()}
    stages("decoder")
    block(("final_block",), model.final_block)
    if isinstance(model, UViT):
        m |= _leaves(names("Dense"), ("to_wavelet",))
    m |= _leaves(names("Dense"), ("final",))
    return m


def published_mapping(model: nnx.Module) -> dict[str, ParamPath]:
    """Published key → our parameter path, for a ``variant="published"`` model."""
    if getattr(model, "variant", None) != "published":
        raise ValueError("published weights exist only for variant='published'; "
                         f"got variant={getattr(model, 'variant', None)!r}")
    if isinstance(model, UNet | ADM | UViT):
        return _conv_model_mapping(model)
    if isinstance(model, DiT):
        return dit_mapping(len(model.blocks))
    raise ValueError(f"no published layout for {type(model).__name__}")


def published_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Published key → tensor shape (works on an abstract ``nnx.eval_shape`` model)."""
    params = flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return {k: tuple(params[p].shape) for k, p in published_mapping(model).items()}


def _check_complete(model: nnx.Module, mapping: dict[str, ParamPath]) -> None:
    ours = set(flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    unmapped = ours - set(mapping.values())
    if unmapped:
        raise ValueError(f"parameters without a published key: {sorted(unmapped)[:5]}")


def load_published(name: str, path: str | os.PathLike, *, profile: str | Profile = "paper",
                   dtype=np.float32) -> nnx.Module:
    """Model ``name`` (published variant, ``profile`` size) with weights read from ``path``.

    Raises FileNotFoundError for a missing file and ValueError naming the first missing,
    unexpected or mis-shaped key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    abstract = abstract_model(name, profile, dtype=dtype)
    graphdef, params = nnx.split(abstract, nnx.Param)
    mapping = published_mapping(abstract)
    _check_complete(abstract, mapping)
    shapes = published_shapes(abstract)
    try:
        tensors = load_file(path)
    except Exception as err:  # safetensors raises its own error type for corrupt headers
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    for key in sorted(set(tensors) - set(mapping)):
        raise ValueError(f"{path}: unexpected key {key!r} for {name} at this profile")
    flat = {}
    for key, ours in mapping.items():
        if key not in tensors:
            raise ValueError(f"{path}: missing key {key!r} (expected shape {shapes[key]})")
        if tuple(tensors[key].shape) != shapes[key]:
            raise ValueError(f"{path}: key {key!r} has shape {tuple(tensors[key].shape)}, "
                             f"expected {shapes[key]}")
        flat[ours] = np.asarray(tensors[key], np.float32)
    nnx.replace_by_pure_dict(params, unflatten_dict(flat))
    return nnx.merge(graphdef, params)


def export_published(model: nnx.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s parameters to ``path`` in the published key layout (float32, atomic)."""
    mapping = published_mapping(model)
    _check_complete(model, mapping)
    params = flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tensors = {k: np.ascontiguousarray(np.asarray(params[p], np.float32))
               for k, p in sorted(mapping.items())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return Path(path)
