"""Sampler efficiency: sampling time ÷ (steps × one network forward at the same batch).

1.0 means the driver (one compiled loop, its step count an argument) adds nothing to the
network's own cost; the target is ≤ 1.05. Measured for DDPM and DDIM at 16 and 32 steps on the
``cpu``-profile diffusion models (random weights: the cost does not depend on them), two ways:
``diffusion.sample`` on a batch, and ``translation.translate_slices`` (one vmapped chain per
slice, the volume pipeline's path).

    python -m benchmarks.bench_sampler [--quick]
"""

from __future__ import annotations

import argparse
import json
from functools import partial

from benchmarks.common import (
    load,
    log,
    merge_rows,
    peak_rss_mib,
    read_result,
    run_worker,
    time_call,
    write_result,
)
from xmodality_lite.diffusion import SAMPLERS as SAMPLER_STEPS
from xmodality_lite.models import MODELS as ARCHITECTURES

# the diffusion models of the registry (the U-Net is not sampled: it regresses in one pass)
MODELS = tuple(name for name, arch in ARCHITECTURES.items() if arch.cls.kind == "diffusion")
SAMPLERS = tuple(SAMPLER_STEPS)
STEPS = (16, 32)


def measure(name: str, profile: str, batch: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from xmodality_lite.config import get_profile
    from xmodality_lite.diffusion import functional, sample
    from xmodality_lite.models import build_model
    from xmodality_lite.translation import translate_slices

    prof = get_profile(profile)
    size = prof.image_size
    model = build_model(name, prof, rngs=nnx.Rngs(0), dtype=jnp.float32)
    cond = jax.random.uniform(jax.random.key(1), (batch, size, size, 1), minval=-1.0, maxval=1.0)
    key = jax.random.key(2)
    logsnr = jnp.zeros((batch,))
    pure_fn, state = functional(model)
    forward = jax.jit(pure_fn)
    fwd = time_call(lambda: forward(state, cond, cond, logsnr), repeats)
    out = {"model": name, "profile": profile, "batch": batch, "forward": fwd, "runs": []}
    for sampler in SAMPLERS:
        for steps in STEPS:
            for path in ("sample", "translate_slices"):
                if path == "sample":
                    fn = partial(sample, sampler, model, cond, key, steps=steps)
                else:
                    fn = partial(translate_slices, model, cond, sampler=sampler, steps=steps,
                                 batch_size=batch, seed=0, progress=False, profile=prof)
                t = time_call(fn, repeats)
                out["runs"].append({
                    "sampler": sampler, "steps": steps, "path": path, **t,
                    "efficiency": t["median_s"] / (steps * fwd["median_s"]),
                    "cpu_efficiency": t["cpu_median_s"] / (steps * fwd["cpu_median_s"])})
                log(f"[sampler] {name} {sampler} {steps} {path}: "
                    f"{out['runs'][-1]['efficiency']:.3f}")
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "PROFILE", "BATCH", "REPEATS"))
    parser.add_argument("--quick", action="store_true", help="ADM only")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.worker:
        name, profile, batch, repeats = args.worker
        print(json.dumps(measure(name, profile, int(batch), int(repeats))))
        return {}
    rows, load_before, payload = [], load(), {}
    for name in ("adm",) if args.quick else args.models.split(","):
        log(f"[sampler] {name} @ cpu ...")
        row = run_worker("benchmarks.bench_sampler", name, "cpu", str(args.batch),
                         str(args.repeats))
        row.setdefault("model", name)
        rows.append(row)
        # merged after every model, so a long run keeps what it has measured
        old = (read_result("sampler") or {}).get("rows", [])
        payload = {"rows": merge_rows(old, [row], ("model",)), "batch": args.batch,
                   "repeats": args.repeats, "target": 1.05, "load_before": load_before,
                   "load_after": load()}
        write_result("sampler", payload)
    return payload


if __name__ == "__main__":
    main()
