"""Benchmarks (see README.md). Every section but ``compilation`` measures with the persistent JAX
compilation cache off unless ``XMODALITY_JAX_CACHE`` is set, so a "first call" is always a real
compilation and results do not depend on what an earlier run left in the cache; the
``compilation`` section measures the cache itself (off, cold, warm) in folders of its own."""

import os

os.environ.setdefault("XMODALITY_JAX_CACHE", "0")
