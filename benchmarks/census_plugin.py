"""A pytest plugin for ``bench_suite_census``: per test, its wall time and JAX's compile events.

Loaded with ``-p benchmarks.census_plugin``; every worker appends one JSON line per test to
``$XMODALITY_CENSUS_DIR/<pid>.jsonl``: the test's id, its wall time (set-up, call and tear-down)
and the seconds JAX reported for each ``/jax/core/compile/*`` and ``/jax/compilation_cache/*``
duration event in this process during the test. Work done in child processes (the CLI, notebooks,
fresh interpreters) is in the wall time only.
"""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import jax.monitoring
import pytest

_EVENTS: collections.Counter = collections.Counter()
_START: dict[str, float] = {}


def _on_duration(name: str, seconds: float, **_) -> None:
    _EVENTS[name] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_duration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _EVENTS.clear()
    _START[item.nodeid] = time.perf_counter()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    record = {"id": item.nodeid, "wall_s": time.perf_counter() - _START.pop(item.nodeid),
              **{k: round(v, 4) for k, v in _EVENTS.items()}}
    folder = Path(os.environ["XMODALITY_CENSUS_DIR"])
    with open(folder / f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
