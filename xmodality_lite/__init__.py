"""xmodality_lite: diffusion-based TOF-MRA → CTA synthesis (Koch et al. 2024), for teaching.

For teaching and research only; not for clinical use.

Submodules load on first use, so ``import xmodality_lite as xl`` is instant and
``xl.diffusion``, ``xl.models``, ``xl.preprocessing`` ... import what they need when touched.
The import also turns on JAX's persistent compilation cache (:mod:`xmodality_lite.compilation`;
off with ``XMODALITY_JAX_CACHE=0``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from xmodality_lite.compilation import configure_from_environment as _configure_compilation_cache
from xmodality_lite.config import PROFILES, Profile, get_profile

__version__ = "0.1.0"

# The persistent JAX compilation cache (<user cache>/jax; XMODALITY_JAX_CACHE=<dir> or 0): a
# program compiled once is loaded from disk by every later process. Never raises; JAX stays
# unimported until a submodule needs it.
_configure_compilation_cache()

_SUBMODULES = (
    "allocator",
    "bootstrap",
    "checkpoint",
    "cli",
    "colab",
    "compilation",
    "config",
    "data",
    "diffusion",
    "evaluation",
    "features",
    "findings",
    "io",
    "metrics",
    "models",
    "parallel",
    "plotting",
    "preprocessing",
    "prng",
    "reconstruction",
    "regions",
    "registration",
    "training",
    "translation",
    "vessels",
)

# Public functions re-exported at the top level: name -> submodule.
_FUNCTIONS = {
    "build_model": "models",
    "count_params": "models",
    "make_pair": "data.phantom",
    "train": "training",
    "translate_slices": "translation",
    "translate_volume": "reconstruction",
    "register_tof_to_cta": "registration",
}

if TYPE_CHECKING:  # pragma: no cover: what editors and type checkers see of the lazy names
    from xmodality_lite import (  # noqa: F401
        allocator,
        bootstrap,
        checkpoint,
        cli,
        colab,
        compilation,
        config,
        data,
        diffusion,
        evaluation,
        features,
        findings,
        io,
        metrics,
        models,
        parallel,
        plotting,
        preprocessing,
        prng,
        reconstruction,
        regions,
        registration,
        training,
        translation,
        vessels,
    )
    from xmodality_lite.data.phantom import make_pair  # noqa: F401
    from xmodality_lite.models import build_model, count_params  # noqa: F401
    from xmodality_lite.reconstruction import translate_volume  # noqa: F401
    from xmodality_lite.registration import register_tof_to_cta  # noqa: F401
    from xmodality_lite.training import train  # noqa: F401
    from xmodality_lite.translation import translate_slices  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"xmodality_lite.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"xmodality_lite.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'xmodality_lite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_FUNCTIONS])


__all__ = ["PROFILES", "Profile", "get_profile", "__version__", *_SUBMODULES, *_FUNCTIONS]
