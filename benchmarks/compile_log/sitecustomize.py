"""Log every XLA compilation, and every load from the persistent cache, of this process and its children.

For ``bench_suite_census``: with this folder on ``PYTHONPATH`` and ``$XMODALITY_COMPILE_LOG``
naming a folder, every Python process started below (pytest workers, the CLI and fresh
interpreters the tests start, the book's notebook kernels) appends one JSON line per program
to ``<folder>/<pid>.jsonl``: the program's name, the seconds JAX spent getting its executable
(compiling it, or loading it from the persistent cache: ``hit``), and the test that was running
(``$PYTEST_CURRENT_TEST``, which child processes inherit). A notebook kernel also writes one
line when it starts, so kernels can be matched to the notebooks the book executed in order.
Without ``$XMODALITY_COMPILE_LOG`` it does nothing. It wraps ``jax._src.compiler.
compile_or_get_cached`` (private: written against JAX 0.10), as soon as JAX imports it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import sys
import time

_TARGET = "jax._src.compiler"
_FOLDER = os.environ.get("XMODALITY_COMPILE_LOG")


def _write(record: dict) -> None:
    record = {"pid": os.getpid(), "ppid": os.getppid(), "t": round(time.time(), 3),
              "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0], **record}
    with open(os.path.join(_FOLDER, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def _wrap(compiler) -> None:
    from jax._src import monitoring

    hits = [0]  # JAX's persistent-cache hits so far in this process

    def count_hit(name: str, **_) -> None:
        if name == "/jax/compilation_cache/cache_hits":
            hits[0] += 1

    monitoring.register_event_listener(count_hit)
    compile_or_get_cached = compiler.compile_or_get_cached

    def logged(backend, computation, *args, **kwargs):
        before, t0 = hits[0], time.perf_counter()
        executable = compile_or_get_cached(backend, computation, *args, **kwargs)
        seconds = time.perf_counter() - t0
        try:
            name = str(computation.operation.attributes["sym_name"]).strip('"')
        except Exception:  # noqa: BLE001 - a name is a nicety
            name = "?"
        try:  # the program's text: the same text compiled twice is work the cache did not save
            text = computation.operation.get_asm(enable_debug_info=False)
            fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        except Exception:  # noqa: BLE001
            fingerprint = None
        _write({"program": name, "s": round(seconds, 4), "hit": hits[0] > before,
                "fingerprint": fingerprint})
        return executable

    compiler.compile_or_get_cached = logged


class _WrapOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _wrap(module)

        spec.loader.exec_module = exec_and_wrap
        return spec


if _FOLDER and _TARGET not in sys.modules:
    sys.meta_path.insert(0, _WrapOnImport())
    if any("ipykernel" in arg for arg in sys.orig_argv):  # sys.argv is not set up yet
        _write({"kernel_start": True})
