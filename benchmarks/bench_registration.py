"""Registration (paper §3.1): ANTs SyN TOF → CTA on a ``cpu``-profile phantom pair.

Reports wall time (``register_tof_to_cta``'s own ``seconds``, deterministic single-thread mode,
the package default), peak RSS of the process, and the error against the phantom's known
misalignment: mean landmark distance (mm) and vessel Dice, before and after.

    python -m benchmarks.bench_registration [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

from benchmarks.common import load, log, peak_rss_mib, run_worker, write_result


def _children_cpu_s() -> float:
    """CPU time of finished child processes (the ANTs subprocess), seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(profile: str, seed: int) -> dict:
    import numpy as np

    from xmodality_lite.data.phantom import make_pair
    from xmodality_lite.registration import register_tof_to_cta, registration_error

    t0 = time.perf_counter()
    pair = make_pair(seed, profile)
    phantom_s = time.perf_counter() - t0
    names = sorted(pair.landmarks)
    t0, c0 = time.perf_counter(), _children_cpu_s()
    result = register_tof_to_cta(pair.tof, pair.cta)
    wall, cpu_s = time.perf_counter() - t0, _children_cpu_s() - c0
    err = registration_error(result, cta_landmarks=np.stack([pair.landmarks[n] for n in names]),
                             tof_landmarks=np.stack([pair.tof_landmarks[n] for n in names]),
                             cta_labels=pair.labels, tof_labels=pair.tof_labels)
    result.cleanup()
    return {"profile": profile, "seed": seed, "tof_shape": list(pair.tof.shape),
            "cta_shape": list(pair.cta.shape), "landmarks": len(names), "phantom_s": phantom_s,
            "register_s": result.seconds, "wall_s": wall, "cpu_s": cpu_s, **dataclasses.asdict(err),
            "peak_rss_mib": peak_rss_mib()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("PROFILE", "SEED"))
    parser.add_argument("--quick", action="store_true", help="the smoke-profile phantom")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]))))
        return {}
    profile = "smoke" if args.quick else "cpu"
    load_before = load()
    log(f"[registration] {profile} phantom, seed {args.seed} ...")
    row = run_worker("benchmarks.bench_registration", profile, str(args.seed))
    log(f"[registration] {row}")
    payload = {"row": row, "load_before": load_before, "load_after": load()}
    write_result("registration", payload)
    return payload


if __name__ == "__main__":
    main()
