"""Model compute beside the paper's Table 2: parameters, GFLOPs, forward and train-step time.

Each (model, profile) runs in its own process, so the peak RSS reported is that model's alone.
The forward is the package's pure function (``diffusion.functional``) under ``jax.jit``; the
train step is ``training.make_train_step`` — value_and_grad of the model's loss (v-target with
Min-SNR-γ = 5 for the diffusion models, MSE for the U-Net) plus the Adam(1e-4) update, jitted
with the whole state donated — exactly what ``xl.train`` runs. Float32 throughout.

    python -m benchmarks.bench_models [--quick] [--profiles paper,cpu] [--models unet,adm]

Before the models, a ``kernels`` worker measures what this CPU can do in float32 — a 4096³ GEMM,
the 3×3 convolution that dominates the conv models at 256² — and the two kernels the package
replaces, each against the XLA/JAX operation it replaces, in one process (ratios, not absolute
timings, are what carry over between machines): the convolution's kernel gradient
(``models.convolution``) and attention (``models.attention``).
"""

from __future__ import annotations

import argparse
import datetime
import json

from benchmarks.common import (
    fastest_s,
    gemm_gflops,
    log,
    peak_rss_mib,
    run_worker,
    time_call,
    train_step_call,
    write_result,
)
from xmodality_lite.models import MODELS as ARCHITECTURES

MODELS = tuple(ARCHITECTURES)  # the registry's names, in its order
# batch of the forward and of the train step per profile (the reference measured paper at 1 / 2)
BATCH = {"paper": (1, 2), "cpu": (16, 16), "smoke": (4, 4)}
# The reference's second, careful measurement on this machine kind (facts §14): the bar.
REFERENCE = {  # model: (fwd b=1 median s, fwd first s, train b=2 median s, train first s)
    "unet": (1.105, 1.6, 15.09, 20.7),
    "adm": (2.193, 3.6, 28.83, 52.4),
    "uvit": (1.079, 3.5, 11.35, 31.8),
    "dit": (0.763, 2.3, 7.28, 18.6),
}
PAPER_TABLE2 = {  # model: (params, A40 bf16 it/s at batch 16, GFLOPs) as printed
    "unet": ("15M", 14.14, 3), "adm": ("35M", 5.65, 22),
    "uvit": ("125M", 5.62, 120), "dit": ("558M", 6.49, 46),
}


def measure(name: str, profile: str, repeats: int, train: bool) -> dict:
    """Everything for one model at one profile (runs in the worker process)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from xmodality_lite.config import get_profile
    from xmodality_lite.diffusion import functional
    from xmodality_lite.models import build_model, count_params, model_flops

    prof = get_profile(profile)
    b_fwd, b_train = BATCH[profile]
    size = prof.image_size
    out = {"model": name, "profile": profile, "image_size": size, "batch_forward": b_fwd,
           "batch_train": b_train, "params": count_params(name, prof),
           "gflops_b1": model_flops(name, prof, batch=1) / 1e9}

    if repeats == 0:  # counts only: no weights allocated, nothing timed
        return {**out, "peak_rss_mib": peak_rss_mib()}
    model = build_model(name, prof, rngs=nnx.Rngs(0), dtype=jnp.float32)
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.uniform(keys[0], (b_fwd, size, size, 1), minval=-1.0, maxval=1.0)
    cond = jax.random.uniform(keys[1], (b_fwd, size, size, 1), minval=-1.0, maxval=1.0)
    logsnr = jnp.linspace(-10.0, 10.0, b_fwd)
    pure_fn, state = functional(model)
    forward = jax.jit(pure_fn)
    out["forward"] = time_call(lambda: forward(state, x, cond, logsnr), repeats)
    log(f"[models] {name} @ {profile} forward: {out['forward']}")

    if train:
        del state  # the forward's view of the weights: the train step donates them
        out["train"] = time_call(train_step_call(model, prof, b_train), repeats)
        log(f"[models] {name} @ {profile} train: {out['train']}")
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def kernels(repeats: int) -> dict:
    """GFLOP/s of the CPU's float32 GEMM and 3×3 convolution, and our two kernels vs XLA's."""
    import jax
    import jax.numpy as jnp

    from xmodality_lite.models.attention import dot_product_attention
    from xmodality_lite.models.convolution import conv_kernel_grad

    def normal(seed, shape):
        return jax.random.normal(jax.random.key(seed), shape, jnp.float32)

    def timed(fn, *args):
        return time_call(lambda: fn(*args), repeats)["median_s"]

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    out = {}
    # [M, K] × [K, N]: square, and DiT-L/16's MLP at batch 2 (512 tokens, 1024 → 4096)
    gemms = gemm_gflops([(4096, 4096, 4096), (512, 1024, 4096), (512, 4096, 1024)], repeats)
    out["gemm_gflops"] = gemms
    out["gemm_best_gflops"] = max(gemms.values())
    x, w = normal(0, (1, 256, 256, 128)), normal(1, (3, 3, 128, 128))
    conv_jit = jax.jit(conv)
    out["conv3x3_256_gflops"] = 2 * 256**2 * 9 * 128**2 / fastest_s(lambda: conv_jit(x, w), repeats) / 1e9
    log(f"[models] kernels: {out}")

    grads = []  # (batch, size, c_in, c_out): layers of the paper-size U-Net/ADM at batch 2
    for bsz, size, c_in, c_out in [(2, 256, 128, 128), (2, 128, 256, 256), (2, 64, 512, 512)]:
        x, g = normal(0, (bsz, size, size, c_in)), normal(1, (bsz, size, size, c_out))
        shape = (3, 3, c_in, c_out)
        xla = jax.jit(lambda x, g, shape=shape: jax.vjp(lambda k: conv(x, k), jnp.zeros(shape))[1](g)[0])
        ours = jax.jit(lambda x, g, shape=shape: conv_kernel_grad(x, g, shape))
        flops = 2 * bsz * size * size * 9 * c_in * c_out
        t_xla, t_ours = timed(xla, x, g), timed(ours, x, g)
        grads.append({"shape": [bsz, size, size, c_in, c_out], "xla_s": t_xla, "ours_s": t_ours,
                      "xla_gflops": flops / t_xla / 1e9, "ours_gflops": flops / t_ours / 1e9})
        log(f"[models] kernel gradient {grads[-1]}")
    out["conv_kernel_grad"] = grads

    attn = []  # [B, T, heads, d]: ADM's row attention at 256², U-ViT's middle, DiT-L/16
    for where, shape in [("row attention @256² (ADM/U-ViT, b=1)", (256, 256, 4, 32)),
                         ("U-ViT transformer (b=2)", (2, 1024, 4, 128)),
                         ("DiT-L/16 (b=2)", (2, 256, 16, 64))]:
        q, k, v, g = (normal(i, shape) for i in range(4))
        row = {"where": where, "shape": list(shape)}
        for name, fn in [("jax", jax.nn.dot_product_attention), ("ours", dot_product_attention)]:
            row[f"{name}_fwd_s"] = timed(jax.jit(fn), q, k, v)
            row[f"{name}_vjp_s"] = timed(jax.jit(lambda q, k, v, g, fn=fn: jax.vjp(fn, q, k, v)[1](g)),
                                         q, k, v, g)
        attn.append(row)
        log(f"[models] attention {row}")
    out["attention"] = attn
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "PROFILE", "REPEATS", "TRAIN"))
    parser.add_argument("--quick", action="store_true",
                        help="cpu profile only (no paper-size models), 3 repeats")
    parser.add_argument("--profiles", default=None, help="comma list (default: paper,cpu)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--kernels-only", action="store_true",
                        help="re-measure only the CPU ceilings and the two kernels; keep the rows")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls after the first; 0: parameters and GFLOPs only")
    args = parser.parse_args(argv)
    if args.worker:
        name, profile, repeats, train = args.worker
        if name == "kernels":
            print(json.dumps(kernels(int(repeats))))
        else:
            print(json.dumps(measure(name, profile, int(repeats), train == "1")))
        return {}

    from benchmarks.common import load, merge_rows, read_result

    profiles = (args.profiles or ("cpu" if args.quick else "paper,cpu")).split(",")
    rows, load_before, payload = [], load(), {}
    previous = read_result("models") or {}
    kernel_result = previous.get("kernels")
    if args.kernels_only or ("paper" in profiles and args.repeats > 0):
        log("[models] kernels ...")
        kernel_result = run_worker("benchmarks.bench_models", "kernels", "-", str(args.repeats), "0")
        kernel_result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        kernel_result["load_after"] = load()
    if args.kernels_only:
        payload = {**{k: v for k, v in previous.items() if k not in ("section", "date", "commit")},
                   "kernels": kernel_result}
        write_result("models", payload)
        return payload
    for profile in profiles:
        for name in args.models.split(","):
            log(f"[models] {name} @ {profile} ...")
            row = run_worker("benchmarks.bench_models", name, profile, str(args.repeats), "1")
            row.setdefault("model", name)
            row.setdefault("profile", profile)
            row["load_after"] = load()
            row["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            log(f"[models] {name} @ {profile}: {row}")
            rows.append(row)
            # merged after every model, so a long run keeps what it has measured
            old = (read_result("models") or {}).get("rows", [])
            payload = {"rows": merge_rows(old, [row], ("model", "profile")),
                       "kernels": kernel_result, "reference": REFERENCE, "paper_table2": PAPER_TABLE2, "batch": BATCH,
                       "repeats": args.repeats, "load_before": load_before, "load_after": load()}
            write_result("models", payload)
    return payload


if __name__ == "__main__":
    main()
