"""Compilation: the first train-step call with the persistent JAX compilation cache off, cold, warm.

Per model, three fresh processes build the same ``cpu``-profile train step
(``training.make_train_step``, as ``benchmarks.bench_models``) and call it ``1 + repeats`` times:

- ``off``: ``XMODALITY_JAX_CACHE=0``, what every process paid before the cache;
- ``cold``: an empty cache folder: compile, and write what was compiled;
- ``warm``: the same folder again, as a second run of a lesson or of the tests: load, not compile.

Reported per run: the first call (compilation or cache load included), the steady call (median
of the later ones), their difference (the compile or load overhead), the whole process's wall
time (interpreter start, imports, model initialisation, the calls), and JAX's own count of cache
hits and writes (``jax.monitoring`` events) with the files and bytes in the folder.

    python -m benchmarks.bench_compilation [--quick] [--profile cpu] [--models unet,adm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    load,
    log,
    peak_rss_mib,
    portable_path,
    run_worker,
    time_call,
    train_step_call,
    write_result,
)

MODES = ("off", "cold", "warm")
EVENTS = {"/jax/compilation_cache/cache_hits": "hits",
          "/jax/compilation_cache/cache_misses": "writes"}


def measure(name: str, profile: str, repeats: int) -> dict:
    """One process: build the train step, time its first and later calls (runs in the worker)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.bench_models import BATCH
    from xmodality_lite.compilation import compilation_cache_dir
    from xmodality_lite.config import get_profile
    from xmodality_lite.models import build_model

    counts = dict.fromkeys(EVENTS.values(), 0)

    def on_event(event: str, **_) -> None:
        if event in EVENTS:
            counts[EVENTS[event]] += 1

    jax.monitoring.register_event_listener(on_event)
    prof = get_profile(profile)
    b = BATCH[profile][1]
    size = prof.image_size
    one_step = train_step_call(build_model(name, prof, rngs=nnx.Rngs(0), dtype=jnp.float32),
                               prof, b)

    before = dict(counts)
    timing = time_call(one_step, repeats)
    folder = compilation_cache_dir()
    return {"model": name, "profile": profile, "image_size": size, "batch": b, **timing,
            "overhead_s": timing["first_s"] - timing["median_s"],
            "step_hits": counts["hits"] - before["hits"],
            "step_writes": counts["writes"] - before["writes"], **counts,
            "cache_dir": portable_path(folder) if folder else None, "peak_rss_mib": peak_rss_mib()}


def _folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def run_model(name: str, profile: str, repeats: int) -> dict:
    """The three processes for one model; the cold/warm folder is temporary."""
    folder = Path(tempfile.mkdtemp(prefix="bench-jax-cache-"))
    saved = os.environ.get("XMODALITY_JAX_CACHE")
    row: dict = {"model": name, "profile": profile}
    try:
        for mode in MODES:
            os.environ["XMODALITY_JAX_CACHE"] = "0" if mode == "off" else str(folder)
            t0 = time.perf_counter()
            result = run_worker("benchmarks.bench_compilation", name, profile, str(repeats))
            result["process_s"] = time.perf_counter() - t0
            result["files"], result["bytes"] = _folder_size(folder)
            log(f"[compilation] {name} @ {profile} {mode}: {result}")
            row[mode] = result
            if "error" in result:
                row["error"] = f"{mode}: {result['error']}"
                break
    finally:
        if saved is None:
            os.environ.pop("XMODALITY_JAX_CACHE", None)
        else:
            os.environ["XMODALITY_JAX_CACHE"] = saved
        shutil.rmtree(folder, ignore_errors=True)
    row["load_after"] = load()
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "PROFILE", "REPEATS"))
    parser.add_argument("--quick", action="store_true", help="smoke profile, U-Net only")
    parser.add_argument("--profile", default=None, help="smoke | cpu (default cpu)")
    parser.add_argument("--models", default=None, help="comma list (default: all four)")
    parser.add_argument("--repeats", type=int, default=2, help="calls after the first")
    args = parser.parse_args(argv)
    if args.worker:
        name, profile, repeats = args.worker
        print(json.dumps(measure(name, profile, int(repeats))))
        return {}

    from benchmarks.bench_models import MODELS

    profile = args.profile or ("smoke" if args.quick else "cpu")
    models = (args.models or ("unet" if args.quick else ",".join(MODELS))).split(",")
    load_before = load()
    rows = [run_model(name, profile, args.repeats) for name in models]
    payload = {"rows": rows, "profile": profile, "repeats": args.repeats,
               "load_before": load_before, "load_after": load()}
    write_result("compilation", payload)
    return payload


if __name__ == "__main__":
    main()
