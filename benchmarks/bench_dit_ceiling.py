"""DiT-L/16 at the paper size against this CPU's ceilings, its train step taken apart (issue 17).

In one fresh worker process: the float32 GEMM rate (the forward's own shapes at batch 1, and
batch 2's) and the memory bandwidth (a STREAM-style triad, a ← a + ½ b, donated), then the
DiT-L/16's forward (batch 1), its gradient alone (``value_and_grad`` of the training loss,
batch 2), the Adam update alone (``training.adam`` on 558 M parameters, donated) and the whole
train step (``training.make_train_step``, as §1). Reported: each one's time, its GFLOP/s
(XLA's forward FLOPs; × 3 × 2 for the batch-2 gradient) against the best GEMM, and the Adam
update against its memory bound (parameters, gradients and two moments read, parameters and
moments written: 7 × 4 bytes a parameter at the triad's bandwidth).

    python -m benchmarks.bench_dit_ceiling [--repeats 3]
"""

from __future__ import annotations

import argparse

from benchmarks.common import load, log, run_worker, write_result

GEMMS = [(256, 1024, 3072), (256, 1024, 1024), (256, 1024, 4096), (256, 4096, 1024),
         (512, 1024, 4096), (512, 4096, 1024)]  # [M, K] × [K, N]: DiT-L/16's, 256 tokens an image
TRIAD_FLOATS = 256 * 2**20  # 1 GiB an array: far beyond every cache


def measure(repeats: int) -> dict:
    """Everything, in this process (the worker)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from benchmarks.common import fastest_s, gemm_gflops, time_call, train_step_call
    from xmodality_lite import training
    from xmodality_lite.config import get_profile
    from xmodality_lite.diffusion import functional
    from xmodality_lite.models import build_model, model_flops

    out = {"gemm_gflops": gemm_gflops(GEMMS, repeats)}
    out["gemm_best_gflops"] = max(out["gemm_gflops"].values())

    arrays = {"a": jnp.ones(TRIAD_FLOATS), "b": jnp.ones(TRIAD_FLOATS)}
    triad = jax.jit(lambda a, b: a + 0.5 * b, donate_argnums=0)

    def one_triad():
        arrays["a"] = triad(arrays["a"], arrays["b"])
        return arrays["a"]

    out["triad_gb_s"] = 3 * 4 * TRIAD_FLOATS / fastest_s(one_triad, repeats) / 1e9
    arrays.clear()  # 2 GiB back before the model
    log(f"[dit_ceiling] GEMM {out['gemm_best_gflops']:.0f} GFLOP/s, triad {out['triad_gb_s']:.1f} GB/s")

    prof = get_profile("paper")
    size = prof.image_size
    out["gflops_b1"] = model_flops("dit", prof, batch=1) / 1e9
    keys = jax.random.split(jax.random.key(1), 3)
    model = build_model("dit", prof, rngs=nnx.Rngs(0), dtype=jnp.float32)
    x, cond = (jax.random.uniform(k, (1, size, size, 1), minval=-1.0, maxval=1.0) for k in keys[:2])
    pure_fn, state = functional(model)
    forward = jax.jit(pure_fn)
    out["forward_s"] = time_call(lambda: forward(state, x, cond, jnp.zeros((1,))), repeats)["median_s"]
    state = None  # the forward's view of the weights, freed
    log(f"[dit_ceiling] forward {out['forward_s']:.3f} s")

    graphdef, params = nnx.split(model, nnx.Param)
    tof, cta = (jax.random.uniform(k, (2, size, size, 1), minval=-1.0, maxval=1.0) for k in keys[:2])
    grad = jax.jit(jax.value_and_grad(lambda p: training.loss_fn(
        nnx.merge(graphdef, p), tof, cta, keys[2], prof.train.min_snr_gamma)))
    out["grad_s"] = time_call(lambda: grad(params), repeats)["median_s"]
    grads = grad(params)[1]
    log(f"[dit_ceiling] gradient {out['grad_s']:.3f} s")

    tx = training.adam(prof.train.learning_rate)
    adam = jax.jit(lambda p, o, g: (lambda u, o: (optax.apply_updates(p, u), o))(
        *tx.update(g, o, p)), donate_argnums=(0, 1))
    opt = {"p": params, "o": tx.init(params)}
    params = None

    def one_update():
        opt["p"], opt["o"] = adam(opt["p"], opt["o"], grads)
        return opt["o"]

    out["adam_s"] = time_call(one_update, repeats)["median_s"]
    out["params"] = sum(g.size for g in jax.tree.leaves(grads))
    opt.clear()
    grads = model = None
    log(f"[dit_ceiling] Adam {out['adam_s']:.3f} s")

    model = build_model("dit", prof, rngs=nnx.Rngs(0), dtype=jnp.float32)
    out["train_s"] = time_call(train_step_call(model, prof, 2), repeats)["median_s"]
    log(f"[dit_ceiling] train step {out['train_s']:.3f} s")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=1, metavar="REPEATS")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="accepted for run_all; same run")
    args = parser.parse_args(argv)
    if args.worker:
        import json

        print(json.dumps(measure(int(args.worker[0]))))
        return {}
    before = load()
    result = run_worker("benchmarks.bench_dit_ceiling", str(args.repeats))
    if "error" in result:
        raise SystemExit(f"[dit_ceiling] {result['error']}")
    path = write_result("dit_ceiling", {"repeats": args.repeats, "load_before": before,
                                        "load_after": load(), **result})
    log(f"[dit_ceiling] wrote {path}")
    return result


if __name__ == "__main__":
    main()
