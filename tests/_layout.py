"""The reference code's parameter layout (``tests/data/xmodality-param-layout.txt``), parsed once.

Generated from the published flax models: key and shape of every parameter of the four models,
in the released files' key scheme. In the repository, so tests that use it are never skipped.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

LAYOUT = Path(__file__).resolve().parent / "data" / "xmodality-param-layout.txt"


@functools.cache
def _layouts() -> dict[str, dict[str, tuple[int, ...]]]:
    layouts, current = {}, None
    for line in LAYOUT.read_text().splitlines():
        if header := re.match(r"# =+ model (\w+):", line):
            current = layouts.setdefault(header.group(1), {})
        elif current is not None and line and not line.startswith("#"):
            key, shape = line.rsplit(" ", 1)
            current[key] = tuple(int(d) for d in shape.strip("()").split(",") if d)
    return layouts


def published_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of model ``name`` (``unet``, ``adm``, ``uvit``, ``dit``) in the reference."""
    return dict(_layouts()[name])
