"""Building a model in a fresh process: its kernels drawn at their own shape, at rank 3, flat, or padded.

A model is built eagerly, one small XLA program per initialiser and parameter shape drawn, and
with no compilation cache (a first lesson in Colab, a fresh clone's first test) each is
compiled. Per model and profile, fresh worker processes alternate four ways of drawing the
kernels, with ``XMODALITY_JAX_CACHE=0``: ``flax`` (flax's initialisers at every kernel's own
shape, as the package first did), ``rank3`` (glorot conv kernels drawn as [k·k, C_in, C_out] and
reshaped, the rest as ``flax``), ``flat`` (glorot kernels drawn as one flat vector of their own
length, the rest as ``flax``) and ``padded`` (the package: every kernel, glorot, lecun or
truncated normal, the start of a flat draw of a padded length, one program per length;
:func:`xmodality_lite.models.layers.draw_flat`). Reported: the build's wall time, JAX's count of
backend compilations and their seconds, and whether the builds' parameters are equal bit for
bit.

Second table: the abstract build at the paper size (shapes only, what ``count_params``,
``model_flops`` and ``load_model`` start from), ``flax.nnx.eval_shape`` against the package's
:func:`xmodality_lite.models.eval_shape`, alternating in fresh processes as above, each after
one small warm-up build; reported with whether both give the same parameter paths and shapes.

    python -m benchmarks.bench_model_build [--quick] [--rounds 2] [--profiles smoke,cpu]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys

from benchmarks.common import BACKEND_COMPILE_EVENT, load, log, run_worker, write_result

MODELS = ("unet", "adm", "uvit", "dit")
WAYS = ("flax", "rank3", "flat", "padded")
ABSTRACT = ("nnx", "package")  # flax.nnx.eval_shape, xmodality_lite.models.eval_shape


def measure(name: str, profile: str, way: str) -> dict:
    """One process: build ``name`` at ``profile`` the ``way`` given (runs in the worker)."""
    import time

    import jax
    import numpy as np
    from flax import nnx

    from xmodality_lite.models import build_model, dit, layers, transformer

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: compiles.append(duration) if event == BACKEND_COMPILE_EVENT else None)
    if way != "padded":  # replace the package's padded draws wherever a model looks them up
        import math

        jnp = jax.numpy
        flax_glorot = layers.flax_glorot

        def rank3(key, shape, dtype=jnp.float32):
            if len(shape) < 4:
                return flax_glorot(key, shape, dtype)
            return flax_glorot(key, (shape[0] * shape[1], *shape[2:]), dtype).reshape(shape)

        def flat(key, shape, dtype=jnp.float32):  # exactly as many numbers as the kernel has
            receptive = math.prod(shape[:-2])
            variance = jnp.array(2.0 / (receptive * (shape[-2] + shape[-1])), dtype=dtype)
            u = jax.random.uniform(key, (math.prod(shape),), dtype, -1)
            return (u * jnp.sqrt(3 * variance).astype(dtype)).reshape(shape)

        draw = {"flax": flax_glorot, "rank3": rank3, "flat": flat}[way]
        for module in (layers, dit, transformer):
            module.glorot = draw
        dit.lecun, dit.trunc_normal = layers.flax_lecun, layers.flax_trunc_normal
        layers.MultiHeadSelfAttention.__init__.__kwdefaults__["kernel_init"] = draw
    jax.numpy.zeros(1).block_until_ready()  # backend start-up is not the build's
    compiles.clear()
    t0 = time.perf_counter()
    model = build_model(name, profile, rngs=nnx.Rngs(0))
    leaves = jax.block_until_ready(jax.tree.leaves(nnx.state(model, nnx.Param)))
    wall = time.perf_counter() - t0
    digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()
    return {"build_s": wall, "compiles": len(compiles), "compile_s": sum(compiles),
            "params_sha256": digest}


def measure_abstract(name: str, way: str) -> dict:
    """One process: the paper-size model with shapes only, traced the ``way`` given."""
    import time

    import jax
    from flax import nnx

    from xmodality_lite import models

    trace = nnx.eval_shape if way == "nnx" else models.eval_shape
    trace(lambda: models.build_model("unet", "smoke", rngs=nnx.Rngs(0)))  # imports, first trace
    t0 = time.perf_counter()
    model = trace(lambda: models.build_model(name, "paper", rngs=nnx.Rngs(0)))
    wall = time.perf_counter() - t0
    shapes = [(str(path), tuple(v.get_value().shape), str(v.get_value().dtype))
              for path, v in nnx.to_flat_state(nnx.state(model))]
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return {"trace_s": wall, "params": params,
            "shapes_sha256": hashlib.sha256(repr(shapes).encode()).hexdigest()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "PROFILE", "WAY"))
    parser.add_argument("--quick", action="store_true", help="smoke only, one round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profiles", default="smoke,cpu")
    args = parser.parse_args(argv)
    if args.worker:
        name, profile, way = args.worker
        print(json.dumps(measure_abstract(name, way) if way in ABSTRACT else measure(*args.worker)))
        return {}
    os.environ["XMODALITY_JAX_CACHE"] = "0"  # every build compiles, as in a fresh place
    profiles = ["smoke"] if args.quick else args.profiles.split(",")
    rounds = 1 if args.quick else args.rounds
    before = load()
    rows = []
    for profile in profiles:
        for name in MODELS:
            runs = {way: [] for way in WAYS}
            for _ in range(rounds):
                for way in WAYS:  # alternate, so a slower minute hits both
                    got = run_worker("benchmarks.bench_model_build", name, profile, way)
                    if "error" in got:
                        sys.exit(f"{name} {profile} {way}: {got['error']}")
                    runs[way].append(got)
            row = {"model": name, "profile": profile, "rounds": rounds,
                   "same_params": len({r["params_sha256"] for w in WAYS for r in runs[w]}) == 1}
            for way in WAYS:
                row[way] = {k: statistics.median(r[k] for r in runs[way])
                            for k in ("build_s", "compiles", "compile_s")}
            log(f"[model_build] {json.dumps(row)}")
            rows.append(row)
    abstract = []
    for name in MODELS:
        runs = {way: [] for way in ABSTRACT}
        for _ in range(rounds):
            for way in ABSTRACT:
                got = run_worker("benchmarks.bench_model_build", name, "paper", way)
                if "error" in got:
                    sys.exit(f"{name} paper {way}: {got['error']}")
                runs[way].append(got)
        row = {"model": name, "rounds": rounds, "params": runs["nnx"][0]["params"],
               "same_shapes": len({r["shapes_sha256"] for w in ABSTRACT for r in runs[w]}) == 1,
               **{way: statistics.median(r["trace_s"] for r in runs[way]) for way in ABSTRACT}}
        log(f"[model_build] abstract {json.dumps(row)}")
        abstract.append(row)
    result = {"rows": rows, "abstract": abstract, "load_before": before, "load_after": load()}
    write_result("model_build", result)
    return result


if __name__ == "__main__":
    main()
