"""Volume translation (paper §3.6): time and peak RSS for a ~256×256×160 phantom TOF volume.

A ``cpu``-profile diffusion model (a shipped checkpoint from ``xmodality_lite/checkpoints/`` if
there is one, else random weights — the cost is the same) translates every axial slice with 16 DDIM
steps through ``reconstruction.translate_volume``. Target: under 60 s. Runs in its own process.

    python -m benchmarks.bench_volume [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import ROOT, load, log, peak_rss_mib, run_worker, write_result

SHAPE = (256, 256, 160)
SPACING = (0.6, 0.6, 0.7)  # a 154 × 154 × 112 mm TOF slab
PREFERRED = ("adm", "uvit", "dit")


def find_checkpoint():
    """The first shipped cpu-profile diffusion checkpoint, ADM preferred, or None."""
    from xmodality_lite.checkpoint import SHIPPED_DIR, read_metadata

    found = {}
    for path in sorted(SHIPPED_DIR.rglob("*.safetensors")):
        try:
            meta = read_metadata(path)
        except (OSError, ValueError, KeyError):
            continue
        if meta.get("profile", {}).get("name") == "cpu" and meta.get("kind") == "diffusion":
            found.setdefault(meta.get("model"), path)
    return next((found[m] for m in PREFERRED if m in found), None)


def measure(shape: tuple[int, int, int], steps: int) -> dict:
    import jax.numpy as jnp
    from flax import nnx

    from xmodality_lite.checkpoint import load_model, read_metadata
    from xmodality_lite.data.phantom import make_pair
    from xmodality_lite.models import build_model
    from xmodality_lite.reconstruction import nonconstant_span, translate_volume

    t0 = time.perf_counter()
    tof = make_pair(0, "cpu", mr_shape=shape, mr_spacing=SPACING).tof
    phantom_s = time.perf_counter() - t0
    ckpt = find_checkpoint()
    if ckpt is not None:
        model, name = load_model(ckpt), read_metadata(ckpt)["model"]
        weights = str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt)
    else:
        name = "adm"
        model, weights = build_model(name, "cpu", rngs=nnx.Rngs(0), dtype=jnp.float32), "random"
    span = nonconstant_span(tof.get_fdata(dtype="float32"))
    rss_before = peak_rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    out = translate_volume(model, tof, sampler="ddim", steps=steps, profile="cpu", seed=0,
                           progress=False)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"model": name, "weights": weights, "shape": list(tof.shape),
            "slices_translated": span.stop - span.start, "sampler": "ddim", "steps": steps,
            "phantom_s": phantom_s, "seconds": seconds, "cpu_s": cpu_s,
            "per_slice_s": seconds / max(span.stop - span.start, 1),
            "hu_range": [float(out.get_fdata().min()), float(out.get_fdata().max())],
            "peak_rss_mib_before_translation": rss_before, "peak_rss_mib": peak_rss_mib(),
            "note": "time includes the one compilation of the sampler (a real run pays it too)"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("X", "Y", "Z", "STEPS"))
    parser.add_argument("--quick", action="store_true", help="a 128×128×40 volume")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args(argv)
    if args.worker:
        *shape, steps = map(int, args.worker)
        print(json.dumps(measure(tuple(shape), steps)))
        return {}
    shape = (128, 128, 40) if args.quick else SHAPE
    load_before = load()
    log(f"[volume] {shape} ...")
    row = run_worker("benchmarks.bench_volume", *map(str, shape), str(args.steps))
    log(f"[volume] {row}")
    payload = {"row": row, "target_s": 60.0, "load_before": load_before, "load_after": load()}
    write_result("volume", payload)
    return payload


if __name__ == "__main__":
    main()
