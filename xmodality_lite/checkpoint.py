"""Checkpoints: safetensors tensors + JSON metadata, verified on load, never pickled.

One ``.safetensors`` file holds everything a bit-identical resume needs (paper §3.5 runs
150K steps, so runs must survive a crash): the model state, the optimiser state, the optional
EMA weights and the PRNG key, under ``"model/…"``, ``"opt/…"``, ``"ema/…"`` and ``"rng/key"``.
Its metadata (a str→str dict inside the file) records the profile JSON, model name, variant,
step, data seed, git commit and a sha256 of the tensor bytes, which :func:`load_checkpoint`
checks. A ``.json`` sidecar repeats the metadata with the sha256 of the whole file, for people
and for shipped checkpoints; it is optional on load but verified when present.

Trees are flattened to ``"/"``-joined paths; on load the arrays are poured back into the
structure of a freshly built template (model / ``nnx.Optimizer``), so no pickled tree
definitions are ever read.
"""

from __future__ import annotations

import hashlib
import html
import importlib.resources
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors import numpy as st_numpy

from xmodality_lite.config import Profile, get_profile
from xmodality_lite.io import atomic_write_bytes, atomic_write_text, git_commit

FORMAT = "xmodality_lite.checkpoint/1"
SUFFIX = ".safetensors"
# `make checkpoints` writes the models the book uses here (one per architecture, cpu profile):
# package data, so they travel with the wheel and are found from any folder, offline
SHIPPED_DIR = Path(str(importlib.resources.files("xmodality_lite") / "checkpoints"))
UNTRAINED = "UNTRAINED"  # what load_shipped reports for a model without shipped weights
SHIPPED_PROFILE = "cpu"  # the profile `make checkpoints` trains the shipped models at
# Training steps of each shipped model (the rest of the recipe is the profile's). Chosen for a
# 2-core CPU, about an hour for all four: the DiT, the best teacher per CPU-second, gets the
# most; the ADM, 3× slower per step than the U-ViT, the fewest.
SHIPPED_STEPS = {"unet": 2000, "adm": 3000, "uvit": 8000, "dit": 3000}
# One diffusion model also ships weights from part-way through its run, so a lesson can show
# samples improving with training: SNAPSHOT_DIR/<model>_step<NNNNN>.safetensors (EMA weights).
SNAPSHOT_MODEL, SNAPSHOT_STEPS = "dit", (100, 500, 1500)
SNAPSHOT_DIR = SHIPPED_DIR / "snapshots"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns besides filling the model/optimiser in place."""

    step: int
    key: jax.Array  # typed PRNG key of the run
    ema: nnx.State | None  # EMA of the nnx.Param state, when the run kept one
    meta: dict[str, Any]


# ------------------------------------------------------------------ flattening
def _flat(tree) -> dict[str, Any]:
    """``nnx.State`` → ``{"a/b/0/kernel": array}``."""
    return {"/".join(map(str, path)): leaf for path, leaf in nnx.to_flat_state(tree)}


def _leaf_value(leaf):
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def _to_numpy(x) -> np.ndarray:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.ascontiguousarray(np.asarray(x))


def _from_numpy(arr: np.ndarray, like) -> jax.Array:
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(like))
    return jax.numpy.asarray(arr)


def _tensors(prefix: str, state) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": _to_numpy(_leaf_value(v)) for k, v in _flat(state).items()}


def _fill(path: Path, prefix: str, template, tensors: dict[str, np.ndarray]):
    """Pour ``tensors[prefix/…]`` into a copy of ``template`` (an ``nnx.State``)."""
    expected = _flat(template)
    found = {k[len(prefix) + 1:] for k in tensors if k.startswith(prefix + "/")}
    if found != set(expected):
        missing, extra = sorted(set(expected) - found)[:3], sorted(found - set(expected))[:3]
        raise ValueError(f"{path}: {prefix} tensors do not match this model "
                         f"(missing {missing}, unexpected {extra}); wrong model or variant?")
    leaves = []
    for name, leaf in nnx.to_flat_state(template):
        key = "/".join(map(str, name))
        like = _leaf_value(leaf)
        arr = tensors[f"{prefix}/{key}"]
        like_shape = jax.random.key_data(like).shape if jax.dtypes.issubdtype(
            like.dtype, jax.dtypes.prng_key) else like.shape
        if arr.shape == (1,) and like_shape == ():  # safetensors stores scalars as [1]
            arr = arr.reshape(())
        if arr.shape != tuple(like_shape):
            raise ValueError(f"{path}: tensor {prefix}/{key} has shape {arr.shape}, "
                             f"the model expects {tuple(like_shape)}; wrong model or profile?")
        value = _from_numpy(arr, like)
        leaves.append((name, leaf.replace(value) if isinstance(leaf, nnx.Variable) else value))
    return nnx.from_flat_state(leaves)


# ------------------------------------------------------------------ file level
def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(SUFFIX) + ".json")


def _digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = tensors[name]
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _header_metadata(path: Path, blob: bytes) -> dict[str, str]:
    """Safetensors layout: u64 header length, JSON header (with ``__metadata__``), tensors."""
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        return json.loads(blob[8:8 + n]).get("__metadata__", {})
    except (struct.error, ValueError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable checkpoint (corrupted header: {err})") from None


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    blob = path.read_bytes()
    try:
        meta = {k: json.loads(v) for k, v in _header_metadata(path, blob).items()}
    except ValueError as err:
        raise ValueError(f"{path}: not a readable checkpoint (metadata: {err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an xmodality_lite checkpoint (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        tensors = st_numpy.load(blob)
    except SafetensorError as err:
        raise ValueError(f"{path}: corrupted or truncated checkpoint ({err})") from None
    if _digest(tensors) != meta.get("tensors_sha256"):
        raise ValueError(f"{path}: checksum mismatch; the file is corrupted")
    side = sidecar_path(path)
    if side.is_file() and json.loads(side.read_text()).get("sha256") != hashlib.sha256(
            blob).hexdigest():
        raise ValueError(f"{path}: sha256 differs from {side.name}; the file was modified")
    return meta, tensors


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's metadata (profile dict, model, variant, step, …), checksum verified."""
    return _read(path)[0]


def save_checkpoint(path: str | os.PathLike, model: nnx.Module, optimizer: nnx.Optimizer | None,
                    step: int, key: jax.Array, meta: dict[str, Any], *,
                    ema: nnx.State | None = None) -> Path:
    """Write model, optimiser, EMA, step and PRNG key atomically; return the path.

    ``meta`` must contain ``model`` (registry name) and ``profile`` (a :class:`Profile` or its
    dict); ``variant`` and ``data_seed`` are recommended. Values must be JSON-serialisable.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"{path}: a checkpoint path must end in {SUFFIX}")
    meta = dict(meta)
    if isinstance(meta.get("profile"), Profile):
        meta["profile"] = meta["profile"].to_dict()
    if "model" not in meta or "profile" not in meta:
        raise ValueError("save_checkpoint: meta needs 'model' and 'profile'")
    tensors = _tensors("model", nnx.state(model))
    if optimizer is not None:
        tensors |= _tensors("opt", nnx.state(optimizer))
    if ema is not None:
        tensors |= _tensors("ema", ema)
    tensors["rng/key"] = _to_numpy(key)
    meta |= {"format": FORMAT, "step": int(step), "git_commit": git_commit(),
             "has_optimizer": optimizer is not None, "has_ema": ema is not None}
    text = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
    blob = st_numpy.save(tensors, metadata={**text, "tensors_sha256": json.dumps(_digest(tensors))})
    atomic_write_bytes(path, blob)
    side = {**meta, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    atomic_write_text(sidecar_path(path), json.dumps(side, indent=2, sort_keys=True) + "\n")
    return path


def _check_identity(path: Path, meta: dict, model_name: str | None, profile) -> None:
    have = (meta.get("model"), meta.get("profile", {}).get("name"))
    want_profile = None if profile is None else get_profile(profile).name
    if (model_name is not None and have[0] != model_name) or (
            want_profile is not None and have[1] != want_profile):
        raise ValueError(f"{path}: checkpoint holds model {have[0]!r} at profile {have[1]!r}, "
                         f"expected model {model_name or have[0]!r} at profile "
                         f"{want_profile or have[1]!r}")


def load_checkpoint(path: str | os.PathLike, model: nnx.Module,
                    optimizer: nnx.Optimizer | None = None, *, model_name: str | None = None,
                    profile: Profile | str | None = None) -> Checkpoint:
    """Fill ``model`` (and ``optimizer``) in place from ``path``; return step, key, EMA, meta.

    ``model``/``optimizer`` are freshly built templates: their tree structure is the one
    restored. With ``model_name``/``profile`` given, a checkpoint of another model or profile
    is refused with an error naming both.
    """
    path = Path(path)
    meta, tensors = _read(path)
    _check_identity(path, meta, model_name, profile)
    nnx.update(model, _fill(path, "model", nnx.state(model), tensors))
    if optimizer is not None:
        if not meta.get("has_optimizer"):
            raise ValueError(f"{path}: holds no optimiser state; cannot resume training from it")
        nnx.update(optimizer, _fill(path, "opt", nnx.state(optimizer), tensors))
    ema = _fill(path, "ema", nnx.state(model, nnx.Param), tensors) if meta.get("has_ema") else None
    key = jax.random.wrap_key_data(tensors["rng/key"])
    return Checkpoint(step=int(meta["step"]), key=key, ema=ema, meta=meta)


def load_model(path: str | os.PathLike, *, use_ema: bool = True) -> nnx.Module:
    """Rebuild the model named in the metadata and load its weights (EMA ones if present)."""
    from xmodality_lite.models import build_model, eval_shape

    path = Path(path)
    meta = read_metadata(path)
    profile = profile_from_dict(meta["profile"])
    model = eval_shape(lambda: build_model(meta["model"], profile, rngs=nnx.Rngs(0),
                                           variant=meta.get("variant", "published")))
    ckpt = load_checkpoint(path, model)
    if use_ema and ckpt.ema is not None:
        nnx.update(model, ckpt.ema)
    model.eval()
    return model


def shipped_checkpoint(name: str, profile: Profile | str,
                       folder: str | os.PathLike = SHIPPED_DIR) -> Path | None:
    """``folder/<name>.safetensors`` if it exists and was trained at ``profile``, else None."""
    path = Path(folder) / f"{name}{SUFFIX}"
    if path.is_file() and read_metadata(path)["profile"]["name"] == get_profile(profile).name:
        return path
    return None


def ema_only(path: str | os.PathLike) -> Path:
    """Rewrite a weights-only checkpoint so that its model tensors are its EMA weights and no
    second copy is kept (half the bytes; what the shipped files hold). Metadata is kept, with
    ``"weights": "ema"`` added; a checkpoint without an EMA is left as it is."""
    path = Path(path)
    meta = read_metadata(path)
    if not meta.get("has_ema"):
        return path
    if meta.get("has_optimizer"):
        raise ValueError(f"{path}: holds optimiser state; ema_only is for shipped weights")
    model = load_model(path, use_ema=True)
    keep = {k: v for k, v in meta.items() if k not in (
        "format", "step", "git_commit", "has_optimizer", "has_ema", "tensors_sha256")}
    commit = meta.get("git_commit")
    out = save_checkpoint(path, model, None, meta["step"], jax.random.key(0), {**keep, "weights": "ema"})
    if commit is not None:  # the weights were trained at that commit, not rewritten at this one
        side = json.loads(sidecar_path(out).read_text())
        side["trained_at_commit"] = commit
        atomic_write_text(sidecar_path(out), json.dumps(side, indent=2, sort_keys=True) + "\n")
    return out


def snapshot_name(name: str, step: int) -> str:
    return f"{name}_step{step:05d}{SUFFIX}"


def shipped_snapshots(name: str = SNAPSHOT_MODEL, profile: Profile | str = SHIPPED_PROFILE,
                      folder: str | os.PathLike = SNAPSHOT_DIR) -> list[tuple[int, Path]]:
    """``[(step, path), …]`` of the shipped intermediate weights of ``name``, by step, then the
    final shipped checkpoint; only those trained at ``profile``. Empty when none ship."""
    found = sorted(Path(folder).glob(f"{name}_step*{SUFFIX}")) if Path(folder).is_dir() else []
    want = get_profile(profile).name
    metas = [(read_metadata(p), p) for p in found]  # each file checksummed once
    out = [(int(m["step"]), p) for m, p in metas if m["profile"]["name"] == want]
    final = shipped_checkpoint(name, profile)
    if out and final is not None:
        out.append((int(read_metadata(final)["step"]), final))
    return sorted(out)


def load_shipped(name: str, profile: Profile | str, *, seed: int | None = None,
                 folder: str | os.PathLike = SHIPPED_DIR) -> tuple[nnx.Module, str]:
    """The shipped model ``name`` at ``profile`` and where it came from, for the lessons.

    Without a matching checkpoint: the untrained architecture (initialised from ``seed``, by
    default the profile's training seed), described as "UNTRAINED" so no one mistakes it.
    """
    from xmodality_lite.models import build_model

    profile = get_profile(profile)
    path = shipped_checkpoint(name, profile, folder)
    if path is not None:
        return load_model(path), f"shipped, {read_metadata(path)['step']} training steps"
    seed = profile.train.seed if seed is None else seed
    return build_model(name, profile, rngs=nnx.Rngs(seed)), UNTRAINED


def warn_untrained(sources: Mapping[str, str], profile: Profile | str | None = None) -> bool:
    """Say loudly when a lesson runs untrained models; True if any source is untrained.

    ``sources`` maps model names to :func:`load_shipped`'s descriptions. In a notebook the
    warning is an HTML admonition box in the output (what a reader of the rendered book sees,
    not just a plot title); elsewhere one plain line is printed.
    """
    untrained = [name for name, source in sources.items() if source.startswith(UNTRAINED)]
    if not untrained:
        return False
    names = ", ".join(untrained)
    text = (f"{names} {'is' if len(untrained) == 1 else 'are'} UNTRAINED: the package ships "
            f"no checkpoint for the {get_profile(profile).name!r} profile (its models are "
            f"trained at {SHIPPED_PROFILE!r}). Every code path runs, but the images and numbers "
            "below come from untrained networks and show no result. Set "
            f"XMODALITY_PROFILE={SHIPPED_PROFILE} for the trained teaching models.")
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(f"WARNING: {text}")
        return True
    box = ('<div class="admonition warning" style="border-left: 4px solid #d97706; '
           'background: #fff7e6; color: #3d2c00; padding: 0.4em 1em; margin: 0.5em 0;">'
           '<p class="admonition-title" style="font-weight: bold; margin: 0;">Warning: '
           f'untrained models</p><p style="margin: 0.3em 0;">{html.escape(text)}</p></div>')
    display({"text/html": box, "text/plain": f"WARNING: {text}"}, raw=True)
    return True


def profile_from_dict(d: dict[str, Any]) -> Profile:
    """Rebuild the exact :class:`Profile` stored in a checkpoint (JSON lists → tuples)."""
    from xmodality_lite.config import DataConfig, SampleConfig, TrainConfig

    def build(cls, fields):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    return Profile(name=d["name"], image_size=d["image_size"], data=build(DataConfig, d["data"]),
                   train=build(TrainConfig, d["train"]), sample=build(SampleConfig, d["sample"]))


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}{SUFFIX}"


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The highest-step ``step_*.safetensors`` in ``folder``, or None."""
    found = sorted(Path(folder).glob(f"step_*{SUFFIX}")) if Path(folder).is_dir() else []
    return found[-1] if found else None


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` highest-step checkpoints (and sidecars) in ``folder``."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1; got {keep}")
    for old in sorted(Path(folder).glob(f"step_*{SUFFIX}"))[:-keep]:
        sidecar_path(old).unlink(missing_ok=True)
        old.unlink()
