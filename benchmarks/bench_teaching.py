"""Teaching models: which CPU recipe makes a diffusion model draw the anatomy (issue: the paper's
constant Adam 1e-4 learns almost nothing in a CPU budget of a few thousand steps).

Each row trains one model from its seed with one recipe on the ``cpu`` profile's data (whole
slices resampled to 64², 16 phantom patients, 11 for training) and scores DDIM samples of
``--n-eval`` held-out test slices (Table 1 metrics on [0, 1] of the [−50, 350] HU window). Rows
are merged into ``results/teaching.json`` by (model, recipe), so a grid can be run in pieces:

    python -m benchmarks.bench_teaching --model dit --steps 1500 --lr 1e-3 --ema 0.999
    python -m benchmarks.bench_teaching --grid        # the rows RESULTS.md shows (about 45 min)

``make checkpoints`` records the shipped models' own metrics (``reference_metrics.json``);
``--shipped`` copies them, with their training times, into the same section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from benchmarks.common import load, log, merge_rows, read_result, write_result

GRID = [  # (model, steps, lr, warmup, decay, ema, dit patch)
    ("unet", 300, 1e-3, 100, "cosine", 0.0, None),
    ("dit", 1000, 1e-3, 100, "cosine", 0.0, 8),
    ("adm", 300, 1e-3, 100, "cosine", 0.0, None),
    ("uvit", 500, 1e-3, 100, "cosine", 0.0, None),
    ("dit", 1500, 1e-3, 100, "cosine", 0.999, 4),
    ("uvit", 1500, 1e-3, 100, "cosine", 0.999, None),
]


def run_one(model: str, steps: int, lr: float, warmup: int, decay: str, ema: float,
            patch: int | None, n_eval: int = 24, sample_steps: int = 32) -> dict:
    from flax import nnx

    from xmodality_lite.config import get_profile
    from xmodality_lite.metrics import evaluate_slices
    from xmodality_lite.models import MODELS
    from xmodality_lite.preprocessing import BatchIterator, phantom_dataset
    from xmodality_lite.training import train
    from xmodality_lite.translation import translate_slices

    base = get_profile("cpu")
    if patch is not None:  # a DiT patch size other than the profile's
        MODELS["dit"].sizes["cpu"]["patch_size"] = patch
    prof = base.replace(train=dataclasses.replace(
        base.train, steps=steps, learning_rate=lr, warmup_steps=warmup, lr_decay=decay,
        ema_decay=ema, ema_warmup=ema > 0))
    test = phantom_dataset(prof, progress=False)["test"]
    load_before, t0 = load(), time.perf_counter()
    res = train(model, prof, progress=False)
    train_s = time.perf_counter() - t0
    net = res.model
    if res.ema is not None:
        nnx.update(net, res.ema)
    net.eval()
    tof, cta = BatchIterator(test, n_eval, 0, prof.image_size).batch_at(0)
    pred = translate_slices(net, tof, sampler="ddim", steps=sample_steps, seed=0,
                            progress=False, profile=prof)
    m = evaluate_slices(pred, cta, extractor=None)
    return {"model": model, "recipe": f"lr {lr:g}, warm-up {warmup}, {decay}, EMA {ema:g}"
            + (f", patch {patch}" if patch else ""), "steps": steps,
            "train_s": round(train_s, 1), "steps_per_s": round(res.steps_per_s, 2),
            "load_before": load_before, "load_after": load(), "n_eval": n_eval,
            "sample_steps": sample_steps, **{k: m[k] for k in ("mse", "mae", "psnr", "ssim")}}


def shipped_rows() -> list[dict]:
    from xmodality_lite.findings import shipped_record

    record = shipped_record()
    sl = record["slices"]
    return [{"model": m, "recipe": "shipped (cpu profile)", "steps": t["step"],
             "train_s": t.get("train_seconds"), "steps_per_s": t.get("steps_per_s"),
             "n_eval": sl["n"], "sample_steps": sl["steps"],
             **{k: sl["metrics"][m][k] for k in ("mse", "mae", "psnr", "ssim")}}
            for m, t in record["training"].items()]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--decay", default="cosine")
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--patch", type=int, default=None)
    p.add_argument("--grid", action="store_true")
    p.add_argument("--shipped", action="store_true")
    p.add_argument("--quick", action="store_true", help="(run_all) only copy the shipped rows")
    args = p.parse_args(argv)
    runs = GRID if args.grid else ([(args.model, args.steps, args.lr, args.warmup, args.decay,
                                     args.ema, args.patch)] if args.model else [])
    rows = []
    for spec in runs:
        log(f"teaching: {spec}")
        rows.append(run_one(*spec))
        log(json.dumps(rows[-1]))
    if args.shipped or args.quick or not runs:
        rows += shipped_rows()
    old = (read_result("teaching") or {}).get("rows", [])
    payload = {"rows": merge_rows(old, rows, ("model", "recipe", "steps"))}
    write_result("teaching", payload)
    return payload


if __name__ == "__main__":
    main()
