"""Data: the embedded TOF/CTA phantom, the TopCoW layout (writer and loader), figure helpers.

Submodules import on first use (the phantom loads nilearn's MNI templates, the loader only
nibabel), so ``from xmodality_lite.data import make_pair`` costs only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "make_pair": "phantom",
    "PhantomPair": "phantom",
    "write_topcow_layout": "layout",
    "find_pairs": "topcow",
    "validate_pair": "topcow",
    "data_root": "topcow",
    "TopCowPair": "topcow",
}
_SUBMODULES = ("anatomy", "dataset", "layout", "phantom", "slices", "topcow", "views")

if TYPE_CHECKING:  # pragma: no cover: what editors and type checkers see of the lazy names
    from xmodality_lite.data import (  # noqa: F401
        anatomy,
        dataset,
        layout,
        phantom,
        slices,
        topcow,
        views,
    )
    from xmodality_lite.data.layout import write_topcow_layout  # noqa: F401
    from xmodality_lite.data.phantom import PhantomPair, make_pair  # noqa: F401
    from xmodality_lite.data.topcow import (  # noqa: F401
        TopCowPair,
        data_root,
        find_pairs,
        validate_pair,
    )


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"xmodality_lite.data.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"xmodality_lite.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'xmodality_lite.data' has no attribute {name!r}")


__all__ = [*_EXPORTS, *_SUBMODULES]
