"""Suite-wide set-up: one persistent JAX compilation cache for every run of the suite.

Every test process, and the child processes tests start (CLI, notebooks, fresh interpreters),
loads programs compiled by an earlier run instead of compiling them again: the folder is
``$XMODALITY_JAX_CACHE`` if set (``0`` turns the cache off), else ``$XMODALITY_CACHE/jax``
(``make test`` sets ``XMODALITY_CACHE`` to the checkout's git-ignored ``data/cache``, which
``make clean`` removes), else the per-user cache. It is enabled here, before any test module
imports JAX, and exported through ``JAX_COMPILATION_CACHE_DIR`` so children inherit it. Tests of
the cache itself (tests/test_compilation.py) use temporary folders of their own.
"""

from __future__ import annotations

from xmodality_lite.compilation import enable_compilation_cache

enable_compilation_cache()

import os  # noqa: E402

# The suite runs on the embedded phantom: a researcher's XMODALITY_DATA (real TopCoW) in the
# shell must not switch the tests to real data. Tests of the real-data path set it themselves.
os.environ.pop("XMODALITY_DATA", None)
# Our attention kernel wherever it applies (>= OURS_MIN_TOKENS), as the shipped models were trained,
# instead of a per-shape timing on the first use of each shape (models.attention.kernel_for):
# results do not hang on a measurement, and a fresh clone's suite does not pay for one. The
# choice itself, and both kernels' equality, are tested in tests/test_kernels.py.
os.environ.setdefault("XMODALITY_ATTENTION", "ours")

# The notebook clients tests start themselves (nbclient) wait in polls of <= 1 s, as the book's
# build does (book/_ext/kernel_waits.py): a missed ZeroMQ wake-up must not cost a cell timeout.
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import kernel_waits  # noqa: E402

kernel_waits.install()


def pytest_collection_modifyitems(config, items):
    """Longest work first, so that the two xdist workers finish together.

    ``make test`` hands out whole files (``--dist loadfile --no-loadscope-reorder``) in this
    order: the book build (every notebook, the suite's longest piece) first, then the files
    holding ``slow`` tests, then the rest by number of tests, the small files last to fill the
    gaps. xdist's own order (most tests first) started the book late, and the other worker
    then sat idle while it finished.
    """
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def rank(tests):
        if any(t.get_closest_marker("book") for t in tests):
            return (0, 0)
        return (1 if any(t.get_closest_marker("slow") for t in tests) else 2, -len(tests))

    items[:] = [t for tests in sorted(files.values(), key=rank) for t in tests]
