"""XLA CPU flags for the `cpu` profile: each flag set against XLA's defaults, in one run (issue 17).

The same checkout, the same worker as ``bench_cpu_profile`` (train step at batch 16 with the
recipe's Adam and EMA, one sampler-step forward at batch 32), started as a fresh process per
measurement with ``XLA_FLAGS`` set to the candidate or left empty, alternating default and
candidate so that a machine that slows down mid-run penalises both. Speed-up = default ÷
candidate (wall, CPU time beside it). A candidate that fails to start (a flag this jaxlib does
not know) is reported as such, not dropped. Numerics: the worker also returns the forward's
output checksum, and the largest difference from the default's is reported, since a flag that
changes which library runs a GEMM may change its rounding.

    python -m benchmarks.bench_xla_flags
    python -m benchmarks.bench_xla_flags --flags "--xla_cpu_use_xnnpack=false" --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys

from benchmarks.common import ROOT, load, log, merge_rows, read_result, write_result
from xmodality_lite.models import MODELS

CANDIDATES = ("--xla_cpu_use_xnnpack=false",
              "--xla_cpu_use_onednn=true",
              "--xla_cpu_use_xnnpack=false --xla_cpu_use_onednn=true")


def _worker(name: str, repeats: int) -> dict:
    """The train step and forward of ``bench_cpu_profile``, plus the forward's output."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.bench_cpu_profile import SAMPLE_BATCH
    from benchmarks.bench_cpu_profile import _worker as timed
    from xmodality_lite import training
    from xmodality_lite.config import get_profile
    from xmodality_lite.diffusion import functional

    out = timed(name, repeats)
    prof = get_profile("cpu")
    keys = jax.random.split(jax.random.key(2), 2)
    x, cond = (jax.random.uniform(k, (SAMPLE_BATCH, prof.image_size, prof.image_size, 1),
                                  minval=-1.0, maxval=1.0) for k in keys)
    pure_fn, weights = functional(training.build(name, prof, 0))
    y = jax.jit(pure_fn)(weights, x, cond, jnp.linspace(-10.0, 10.0, SAMPLE_BATCH))
    out["output"] = np.asarray(y, np.float64).ravel()[::97].tolist()
    return out


def _environment(flags: str, preload: bool = False) -> dict[str, str]:
    """The worker's environment for a candidate: ``NAME=value`` words are environment variables
    (e.g. glibc's ``MALLOC_MMAP_MAX_=0``, read when the process starts), the rest ``XLA_FLAGS``.
    Both sides run on the package's allocator (:mod:`xmodality_lite.allocator`), except where
    the candidate preloads a library of its own (``preload``): then the default is glibc's."""
    from xmodality_lite import allocator

    base = allocator.without() if preload else allocator.environment()
    assigned, xla = {}, []
    for word in flags.split():
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word):
            name, value = word.split("=", 1)
            assigned[name] = value
        else:
            xla.append(word)
    return {**base, **assigned, "XLA_FLAGS": " ".join(xla), "XMODALITY_JAX_CACHE": "0"}


def _run(name: str, flags: str, repeats: int, preload: bool) -> dict:
    env = _environment(flags, preload)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_xla_flags", "--worker", name,
                           str(repeats)], cwd=ROOT, env=env, text=True, capture_output=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
        return {"error": f"exited with {proc.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "REPEATS"))
    parser.add_argument("--flags", action="append", help="a candidate XLA_FLAGS value, "
                        "written --flags=VALUE since it starts with --; NAME=value words in it "
                        "are set as environment variables instead "
                        "(repeatable; default: the CANDIDATES above)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=2, help="default/candidate alternations")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]))))
        return {}

    before = load()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")  # names the run
    rows = []
    for flags in args.flags or CANDIDATES:
        for name in args.models.split(","):
            runs = {"default": [], "candidate": []}
            for r in range(args.rounds):
                for side in (("default", "candidate") if r % 2 == 0 else
                             ("candidate", "default")):
                    log(f"[xla_flags] {name} {side} {flags!r} (round {r + 1}/{args.rounds})")
                    runs[side].append(_run(name, "" if side == "default" else flags,
                                           args.repeats, "LD_PRELOAD=" in flags))
            row = {"flags": flags, "model": name, "rounds": args.rounds, "repeats": args.repeats,
                   "run": started,
                   "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")}
            failed = [r["error"] for rs in runs.values() for r in rs if "error" in r]
            if failed:
                rows.append({**row, "error": failed[0]})
                log(f"[xla_flags] {rows[-1]}")
                continue
            for side, rs in runs.items():
                for what in ("train", "forward"):
                    row[f"{what}_{side}_s"] = statistics.median(r[what]["median_s"] for r in rs)
                    row[f"{what}_{side}_cpu_s"] = statistics.median(r[what]["cpu_median_s"]
                                                                    for r in rs)
            for what in ("train", "forward"):
                row[f"{what}_speedup"] = row[f"{what}_default_s"] / row[f"{what}_candidate_s"]
                row[f"{what}_speedup_cpu"] = (row[f"{what}_default_cpu_s"]
                                              / row[f"{what}_candidate_cpu_s"])
            row["max_output_diff"] = max(abs(a - b) for a, b in zip(
                runs["default"][0]["output"], runs["candidate"][0]["output"], strict=True))
            rows.append(row)
            log(f"[xla_flags] {row}")
    # rows of earlier runs for flags not measured now are kept (each row is its own A/B)
    earlier = read_result("xla_flags") or {}
    stamp = earlier.get("date", "")[:16] + "+00:00"  # an unstamped row: its record's run
    previous = [{"run": stamp, "measured": stamp, "rounds": earlier.get("rounds"),
                 "repeats": earlier.get("repeats"), **r} for r in earlier.get("rows", [])]
    rows = merge_rows(previous, rows, ("flags", "model"))
    payload = {"rounds": args.rounds, "repeats": args.repeats, "rows": rows,
               "load_before": before, "load_after": load()}
    path = write_result("xla_flags", payload)
    log(f"[xla_flags] wrote {path}")
    return payload


if __name__ == "__main__":
    main()
