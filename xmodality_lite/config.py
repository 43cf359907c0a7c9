"""Run profiles: one switch (``smoke`` | ``cpu`` | ``paper``) for the whole project.

A run is fully described by one frozen :class:`Profile`. ``get_profile()`` reads the
``XMODALITY_PROFILE`` environment variable (default ``cpu``); the ``paper`` profile is the
recipe of Koch et al. 2024, §3.5 (256² crops, C = 128, Adam 1e-4, batch 16, bf16, 150K steps).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

ProfileName = Literal["smoke", "cpu", "paper"]
ENV_VAR = "XMODALITY_PROFILE"
CACHE_ENV_VAR = "XMODALITY_CACHE"  # the base folder of every cache (datasets, runs, JAX)
DEFAULT_PROFILE: ProfileName = "cpu"

# The CTA window of the paper (§3.1), HU: training targets are windowed to it, synthetic CTAs
# live in it, and the Table 3 metrics clip to it. Every module imports this one object.
HU_WINDOW: tuple[float, float] = (-50.0, 350.0)
HU_WINDOW_TEXT = "[{:g}, {:g}] HU".format(*HU_WINDOW).replace("-", "\u2212")  # "[−50, 350] HU"

# How a trainer and a translator call a model (its ``kind`` attribute): a "diffusion" model
# predicts v from (z_t, TOF, λ) and is sampled (paper §3.3); the "regression" U-Net maps TOF →
# CTA in one pass (paper §3.2). Written once here; ``model_kind`` is the one check.
ModelKind = Literal["diffusion", "regression"]
MODEL_KINDS: tuple[ModelKind, ...] = get_args(ModelKind)
# The sampler names as a type for the config's field; the registry of step functions is
# ``diffusion.SAMPLERS`` (JAX code), whose keys tests/test_config.py checks equal these.
SamplerName = Literal["ddpm", "ddim"]


def model_kind(model: Any) -> ModelKind:
    """``model.kind``, checked: one of :data:`MODEL_KINDS`, else a ValueError naming the model."""
    kind = getattr(model, "kind", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"model {type(model).__name__} has kind {kind!r}; "
                         f"expected one of {MODEL_KINDS}")
    return kind


@dataclass(frozen=True)
class DataConfig:
    """Phantom geometry, preprocessing and split (paper §3.1)."""

    # phantom grids (voxels, mm); TopCoW native: CT ~0.45×0.45×0.7 mm, MR ~0.3×0.3×0.6 mm
    ct_shape: tuple[int, int, int] = (128, 128, 96)  # 205 × 205 × 173 mm: the whole head
    ct_spacing: tuple[float, float, float] = (1.6, 1.6, 1.8)
    mr_shape: tuple[int, int, int] = (120, 152, 64)  # 144 × 182 × 102 mm slab, as TopCoW MR 066
    mr_spacing: tuple[float, float, float] = (1.2, 1.2, 1.6)
    n_subjects: int = 6  # phantom patients generated for the dataset
    # in-plane side every kept slice is resampled to before cropping (None: native, as the
    # paper). Set, the models train at the scale the volume pipeline feeds them (§3.6 resamples
    # whole slices to the model's size), so anatomy arrives at the size it was learnt at.
    slice_size: int | None = None
    # preprocessing (paper §3.1; reference prepare.py)
    hu_window: tuple[float, float] = HU_WINDOW
    min_foreground_px: int = 200
    min_overlap_dice: float = 0.3
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe (paper §3.3, §3.5)."""

    batch_size: int = 16
    steps: int = 3000
    learning_rate: float = 1e-4  # the peak rate when a warm-up or decay is set
    warmup_steps: int = 0  # linear warm-up to ``learning_rate`` (0: none, as the paper)
    lr_decay: Literal["constant", "cosine"] = "constant"  # cosine: to 1 % of the peak at ``steps``
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.0  # 0 disables the EMA (as in the paper's runs)
    ema_warmup: bool = False  # decay min(d, (1 + k)/(10 + k)) at step k, so early steps count
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; params stay float32
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 42


@dataclass(frozen=True)
class SampleConfig:
    """Sampling defaults (paper §4.1–4.2)."""

    sampler: SamplerName = "ddpm"
    steps: int = 128
    batch_size: int = 32
    seed: int = 42


@dataclass(frozen=True)
class Profile:
    """Everything a run needs. ``image_size`` is the side of the square training crop."""

    name: ProfileName
    image_size: int
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> Profile:
        """A copy with top-level fields changed, e.g. ``profile.replace(image_size=32)``."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    # CI: every code path in seconds.
    "smoke": Profile(
        name="smoke",
        image_size=32,
        data=DataConfig(ct_shape=(48, 48, 40), ct_spacing=(4.0, 4.0, 4.4),
                        mr_shape=(44, 56, 24), mr_spacing=(3.2, 3.2, 4.2),
                        n_subjects=3, min_foreground_px=20),
        train=TrainConfig(batch_size=4, steps=20, log_every=5, checkpoint_every=10),
        sample=SampleConfig(steps=4, batch_size=8),
    ),
    # The book's default: minutes on a 2-core CPU. Whole slices resampled to 64² (the scale
    # translate_volume feeds the models), 16 phantom patients (11 train / 2 val / 3 test), and
    # a recipe for a CPU budget instead of §3.5's constant 1e-4 for 150K steps: a 10× higher
    # peak rate with warm-up and cosine decay, and an EMA of the weights (measured in
    # benchmarks/RESULTS.md, "Teaching models"). The shipped models' step counts are in
    # checkpoint.SHIPPED_STEPS.
    "cpu": Profile(
        name="cpu",
        image_size=64,
        data=DataConfig(min_foreground_px=50, n_subjects=16, slice_size=64),
        train=TrainConfig(batch_size=16, steps=3000, learning_rate=1e-3, warmup_steps=100,
                          lr_decay="cosine", ema_decay=0.999, ema_warmup=True,
                          checkpoint_every=250),
        sample=SampleConfig(steps=32, batch_size=32),
    ),
    # The paper's exact recipe (§3.5): for a GPU.
    "paper": Profile(
        name="paper",
        image_size=256,
        data=DataConfig(ct_shape=(512, 512, 300), ct_spacing=(0.45, 0.45, 0.7),
                        mr_shape=(480, 620, 174), mr_spacing=(0.3, 0.3, 0.6), n_subjects=10),
        train=TrainConfig(batch_size=16, steps=150_000, dtype="bfloat16",
                          log_every=20, checkpoint_every=1000),
        sample=SampleConfig(steps=128, batch_size=32),
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, or the one ``$XMODALITY_PROFILE`` selects (default ``cpu``)."""
    if name is None:
        name = os.environ.get(ENV_VAR, DEFAULT_PROFILE)
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]


def user_cache_dir() -> Path:
    """``$XMODALITY_CACHE``, else the platform's per-user cache folder; never inside the package.

    Linux ``$XDG_CACHE_HOME/xmodality_lite`` (default ``~/.cache/xmodality_lite``), macOS
    ``~/Library/Caches/xmodality_lite``, Windows ``%LOCALAPPDATA%\\xmodality_lite\\Cache``; an
    installed package's folder may be read-only and is shared by every user. The base of every
    cache the package keeps: datasets (``data.dataset.default_cache_dir``), training runs, and
    compiled JAX programs (``<this>/jax``, :mod:`xmodality_lite.compilation`).
    """
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local"
        return Path(base) / "xmodality_lite" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "xmodality_lite"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else home / ".cache") / "xmodality_lite"
