"""Adam on one flat vector (``optax.flatten``) against Adam per parameter tensor (issue 17).

The train step's optimiser update is elementwise, but XLA compiles it per parameter tensor:
three or so small kernels for each of a model's 100–250 tensors, each compiled on its own and
each a separate launch when the step runs. ``optax.flatten`` concatenates the gradients into one
vector, keeps Adam's moments as one vector each and splits the update back, so the update is a
handful of kernels whatever the model. This measures what that would buy and cost, per model
and profile: the train step as ``training.make_train_step`` builds it (the profile's Adam
schedule and EMA), compiled with the compilation cache off and run, in fresh processes
alternating per-tensor and flat. Reported: compile seconds, kernels (fusions) in the compiled
program, the median step, and the largest difference of the weights after the same steps from
the same start, since the two programs round differently.

    python -m benchmarks.bench_flat_adam                  # smoke and cpu, four models (~8 min)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks.common import ROOT, load, log, write_result
from xmodality_lite.models import MODELS

SIDES = ("per tensor", "flat")
STEPS = 6  # steps run after compiling; the first is left out of the median


def _worker(name: str, profile: str, side: str) -> dict:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from xmodality_lite import training
    from xmodality_lite.config import get_profile

    prof = get_profile(profile)
    cfg = prof.train
    rng = np.random.default_rng(0)
    shape = (cfg.batch_size, prof.image_size, prof.image_size, 1)
    tof, cta = (jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32) for _ in range(2))
    key = jax.random.key(cfg.seed)
    run = training.start_run(name, prof, cfg.seed)  # the model, Adam, and the EMA's own copy
    model, optimizer, ema = run.model, run.optimizer, run.ema
    if side == "flat":
        adam = training.adam(cfg.learning_rate, cfg.warmup_steps, cfg.lr_decay, cfg.steps)
        optimizer = nnx.Optimizer(model, optax.flatten(adam), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer, ema))
    step = training.make_train_step(graphdef, gamma=cfg.min_snr_gamma, ema_decay=cfg.ema_decay,
                                    ema_warmup=cfg.ema_warmup)
    t0 = time.perf_counter()
    compiled = step.lower(state, tof, cta, key).compile()
    compile_s = time.perf_counter() - t0
    runs = []
    for i in range(STEPS):
        t0 = time.perf_counter()
        state, loss = compiled(state, tof, cta, jax.random.fold_in(key, i))
        jax.block_until_ready(loss)
        runs.append(time.perf_counter() - t0)
    nnx.update((model, optimizer, ema), state)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
    return {"compile_s": compile_s, "step_s": statistics.median(runs[1:]),
            "fusions": compiled.as_text().count(" fusion("),
            "tensors": len(jax.tree.leaves(nnx.state(model, nnx.Param))),
            "weights": flat[::97].astype(float).tolist(), "loss": float(loss)}


def _run(name: str, profile: str, side: str) -> dict:
    env = {**os.environ, "XMODALITY_JAX_CACHE": "0"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_flat_adam", "--worker", name,
                           profile, side], cwd=ROOT, env=env, text=True, capture_output=True)
    if proc.returncode:
        raise RuntimeError(f"worker {name} {profile} {side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "PROFILE", "SIDE"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--profiles", default="smoke,cpu")
    parser.add_argument("--rounds", type=int, default=1, help="fresh-process pairs per model")
    parser.add_argument("--quick", action="store_true", help="smoke profile, U-Net only")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return
    before = load()
    models = ["unet"] if args.quick else args.models.split(",")
    profiles = ["smoke"] if args.quick else args.profiles.split(",")
    rows = []
    for profile in profiles:
        for name in models:
            got = {side: [] for side in SIDES}
            for r in range(args.rounds):  # alternate, and start the other side every other round
                for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                    got[side].append(_run(name, profile, side))
            med = {side: {k: statistics.median(x[k] for x in got[side])
                          for k in ("compile_s", "step_s")} for side in SIDES}
            a, b = (got[side][0] for side in SIDES)
            diff = max(abs(x - y) for x, y in zip(a["weights"], b["weights"], strict=True))
            scale = max(abs(x) for x in a["weights"])
            row = {"model": name, "profile": profile, "tensors": a["tensors"],
                   "fusions": [a["fusions"], b["fusions"]],
                   "compile_s": [med[s]["compile_s"] for s in SIDES],
                   "step_s": [med[s]["step_s"] for s in SIDES],
                   "max_weight_diff": diff, "max_weight": scale,
                   "bit_equal": a["weights"] == b["weights"]}
            log(f"[flat_adam] {profile} {name}: compile {row['compile_s'][0]:.1f} → "
                f"{row['compile_s'][1]:.1f} s, step {1e3 * row['step_s'][0]:.1f} → "
                f"{1e3 * row['step_s'][1]:.1f} ms, fusions {row['fusions']}, max |Δθ| {diff:.1e}")
            rows.append(row)
    write_result("flat_adam", {"rows": rows, "rounds": args.rounds, "steps": STEPS,
                               "load_before": before, "load_after": load()})


if __name__ == "__main__":
    main()
