"""A sweep over step counts, as lesson 7 runs it: one loop program against a scan per count.

Lesson 7 translates the same test slices with DDPM and DDIM at 1, 4, 8 and 32 steps. The
package runs the steps in one compiled loop per (model, sampler, shape) whose trip count is an
argument (``diffusion.samplers``); the baseline commit ran them in a ``lax.scan``, one program
per step count. Each side runs in a fresh process per model with the compilation cache off, the
two sides alternating: per (sampler, steps) the first call (compilation included), which is
what a reader waits for, and one call after it, which is the sampling alone.

    python -m benchmarks.bench_sampler_sweep [--baseline REV] [--models adm,uvit,dit]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    ROOT,
    extract_package,
    load,
    log,
    portable_path,
    run_side,
    write_result,
)

BASELINE = "2cbc01b"  # the last commit with the scan driver
MODELS = ("adm", "uvit", "dit")
SAMPLERS = ("ddpm", "ddim")
STEPS = (1, 4, 8, 32)  # lesson 7's sweep at the cpu profile
SLICES, BATCH = 16, 8  # two batches, as translate_slices runs a volume


def _worker(name: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import xmodality_lite
    from xmodality_lite.config import get_profile
    from xmodality_lite.models import build_model
    from xmodality_lite.translation import translate_slices

    profile = get_profile("cpu")
    size = profile.image_size
    model = build_model(name, profile, rngs=nnx.Rngs(0), dtype=jnp.float32)
    tof = np.random.default_rng(1).uniform(-1, 1, (SLICES, size, size, 1)).astype(np.float32)
    rows = []
    for sampler in SAMPLERS:
        for steps in STEPS:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                y = translate_slices(model, tof, sampler=sampler, steps=steps, batch_size=BATCH,
                                     seed=0, progress=False, profile=profile)
                jax.block_until_ready(y)
                times.append(time.perf_counter() - t0)
            rows.append({"sampler": sampler, "steps": steps, "first_s": times[0],
                         "run_s": times[1], "checksum": float(np.abs(y).sum())})
            log(f"[sampler_sweep] {name} {sampler} {steps}: first {times[0]:.2f} s, "
                f"then {times[1]:.2f} s")
    return {"model": name, "rows": rows, "package": portable_path(Path(xmodality_lite.__file__).parent)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="MODEL")
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision (default {BASELINE})")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="ADM only")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker)))
        return {}
    before = load()
    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                         text=True, capture_output=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"scan": extract_package(args.baseline, Path(tmp)), "loop": ROOT}
        for i, name in enumerate(["adm"] if args.quick else args.models.split(",")):
            sides = {}
            for side in ("scan", "loop") if i % 2 == 0 else ("loop", "scan"):
                log(f"[sampler_sweep] {name}: {side} driver ({roots[side]})")
                sides[side] = run_side("benchmarks.bench_sampler_sweep", roots[side], name)
            results.append({"model": name, **{side: sides[side]["rows"] for side in sides}})
    payload = {"baseline": rev, "steps": STEPS, "samplers": SAMPLERS, "slices": SLICES,
               "batch": BATCH, "profile": "cpu", "models": results, "load_before": before,
               "load_after": load()}
    path = write_result("sampler_sweep", payload)
    log(f"[sampler_sweep] wrote {path}")
    return payload


if __name__ == "__main__":
    main()
