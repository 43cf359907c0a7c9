"""Model compute beside the paper's Table 2: parameters, GFLOPs, forward and train-step time.

Each (model, profile) runs in its own process, so the peak RSS reported is that model's alone.
The forward is the package's pure function (``diffusion.functional``) under ``jax.jit``; the
train step is ``training.make_train_step`` — value_and_grad of the model's loss (v-target with
Min-SNR-γ = 5 for the diffusion models, MSE for the U-Net) plus the Adam(1e-4) update, jitted
with the whole state donated — exactly what ``xl.train`` runs. Float32 throughout.

    python -m benchmarks.bench_models [--quick] [--profiles paper,cpu] [--models unet,adm]
"""

from __future__ import annotations

import argparse
import datetime
import json

from benchmarks.common import log, peak_rss_mib, run_worker, time_call, write_result

MODELS = ("unet", "adm", "uvit", "dit")
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
    from xmodality_lite.training import make_optimizer, make_train_step

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
        optimizer = make_optimizer(model, prof)
        graphdef, tstate = nnx.split((model, optimizer, None))
        del model, optimizer, state
        step = make_train_step(graphdef, gamma=prof.train.min_snr_gamma, ema_decay=0.0)
        tof = jax.random.uniform(keys[0], (b_train, size, size, 1), minval=-1.0, maxval=1.0)
        cta = jax.random.uniform(keys[1], (b_train, size, size, 1), minval=-1.0, maxval=1.0)
        holder = {"state": tstate}
        del tstate

        def one_step():
            holder["state"], loss = step(holder["state"], tof, cta, keys[2])
            return loss

        out["train"] = time_call(one_step, repeats)
        log(f"[models] {name} @ {profile} train: {out['train']}")
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "PROFILE", "REPEATS", "TRAIN"))
    parser.add_argument("--quick", action="store_true",
                        help="cpu profile only (no paper-size models), 3 repeats")
    parser.add_argument("--profiles", default=None, help="comma list (default: paper,cpu)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls after the first; 0: parameters and GFLOPs only")
    args = parser.parse_args(argv)
    if args.worker:
        name, profile, repeats, train = args.worker
        print(json.dumps(measure(name, profile, int(repeats), train == "1")))
        return {}

    from benchmarks.common import load, merge_rows, read_result

    profiles = (args.profiles or ("cpu" if args.quick else "paper,cpu")).split(",")
    rows, load_before, payload = [], load(), {}
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
                       "reference": REFERENCE, "paper_table2": PAPER_TABLE2, "batch": BATCH,
                       "repeats": args.repeats, "load_before": load_before, "load_after": load()}
            write_result("models", payload)
    return payload


if __name__ == "__main__":
    main()
