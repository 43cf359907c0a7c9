"""Run profiles: one switch (``smoke`` | ``cpu`` | ``paper``) for the whole project.

A run is fully described by one frozen :class:`Profile`. ``get_profile()`` reads the
``XMODALITY_PROFILE`` environment variable (default ``cpu``); the ``paper`` profile is the
recipe of Koch et al. 2024, §3.5 (256² crops, C = 128, Adam 1e-4, batch 16, bf16, 150K steps).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Literal

ProfileName = Literal["smoke", "cpu", "paper"]
ENV_VAR = "XMODALITY_PROFILE"
DEFAULT_PROFILE: ProfileName = "cpu"


@dataclass(frozen=True)
class DataConfig:
    """Phantom geometry, preprocessing and split (paper §3.1)."""

    # phantom grids (voxels, mm); TopCoW native: CT ~0.45×0.45×0.7 mm, MR ~0.3×0.3×0.6 mm
    ct_shape: tuple[int, int, int] = (128, 128, 96)  # 205 × 205 × 173 mm: the whole head
    ct_spacing: tuple[float, float, float] = (1.6, 1.6, 1.8)
    mr_shape: tuple[int, int, int] = (120, 152, 64)  # 144 × 182 × 102 mm slab, as TopCoW MR 066
    mr_spacing: tuple[float, float, float] = (1.2, 1.2, 1.6)
    n_subjects: int = 6  # phantom patients generated for the dataset
    # preprocessing (paper §3.1; reference prepare.py)
    hu_window: tuple[float, float] = (-50.0, 350.0)
    min_foreground_px: int = 200
    min_overlap_dice: float = 0.3
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe (paper §3.3, §3.5)."""

    batch_size: int = 16
    steps: int = 3000
    learning_rate: float = 1e-4
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.0  # 0 disables the EMA (as in the paper's runs)
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; params stay float32
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 42


@dataclass(frozen=True)
class SampleConfig:
    """Sampling defaults (paper §4.1–4.2)."""

    sampler: Literal["ddpm", "ddim"] = "ddpm"
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
    # The book's default: minutes on a 2-core CPU.
    "cpu": Profile(
        name="cpu",
        image_size=64,
        data=DataConfig(min_foreground_px=50),
        train=TrainConfig(batch_size=16, steps=500, checkpoint_every=100),
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
