"""`make checkpoints` from a clean clone: its wall time, and whether it reproduces what ships.

Clones this repository's HEAD into a temporary folder, runs ``make checkpoints`` there (the four
cpu-profile models trained on a phantom dataset generated from scratch, then
``reference_metrics.json`` and the README block), timed as a whole. The environment is this
checkout's ``.venv`` (``make -o env``: setting it up is not part of the measurement). Then it
compares the clone's checkpoints and record with the shipped ones: which weights are bitwise
equal (tensor by tensor), and every recorded slice metric side by side, against the stated tolerance.
Training is deterministic from its seed on one machine and package; a change of kernel or
XLA version moves float32 rounding, which training then amplifies, hence a tolerance.

    python -m benchmarks.bench_checkpoints            # about 1.5 hours on 2 cores
    python -m benchmarks.bench_checkpoints --adopt    # then ship what the clone trained
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, load, log, write_result
from xmodality_lite.checkpoint import SHIPPED_DIR
from xmodality_lite.evaluation import REFERENCE_FILE

TOLERANCE = {"psnr": 0.5, "ssim": 0.03}  # |clone − shipped| per model and sampler


def _rows(record: dict) -> dict[tuple[str, str, int], dict]:
    """(model, sampler, steps) → slice metrics, from both slice tables of a record."""
    sl = record["slices"]
    out = {(m, "ddim", sl["steps"]): r for m, r in sl["metrics"].items()}
    for r in record.get("table1", {}).get("rows", []):
        out[r["model"], r["sampler"], record["table1"]["steps"]] = r
    return out


def compare(shipped: dict, clone: dict) -> list[dict]:
    """Per (model, sampler, steps) both records have: each metric, shipped and clone, and
    whether PSNR and SSIM agree within :data:`TOLERANCE`."""
    a, b = _rows(shipped), _rows(clone)
    rows = []
    for key in sorted(a.keys() & b.keys(), key=str):
        row = {"model": key[0], "sampler": key[1], "steps": key[2]}
        for k in ("mse", "psnr", "ssim", "fd"):
            row[f"{k}_shipped"], row[f"{k}_clone"] = a[key].get(k), b[key].get(k)
        row["within"] = all(abs(row[f"{k}_clone"] - row[f"{k}_shipped"]) <= tol
                            for k, tol in TOLERANCE.items())
        rows.append(row)
    return rows


def weights_equal(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold the same tensors, bit for bit. (Not the files' sha256: the
    file also carries metadata that differs between runs, such as the commit and wall time.)"""
    import numpy as np
    from safetensors.numpy import load_file

    if not b.is_file():
        return False
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adopt", action="store_true",
                        help="copy the clone's checkpoints, record and README over this checkout's")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                            text=True, capture_output=True).stdout.strip()
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    work = args.keep or Path(tmp.name)
    repo = work / "repo"
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("XMODALITY_")}
        env["PYTHONPATH"] = str(repo)  # the clone's package, with this checkout's venv
        before = load()
        log(f"[checkpoints] make checkpoints in a clean clone of {commit} ({repo})")
        t0 = time.perf_counter()
        subprocess.run(["make", "-o", "env", "checkpoints", f"VENV={ROOT / '.venv'}"],
                       cwd=repo, env=env, check=True)
        wall = time.perf_counter() - t0
        out = repo / "xmodality_lite" / "checkpoints"
        clone_record = json.loads((out / REFERENCE_FILE).read_text())
        shipped_record = json.loads((SHIPPED_DIR / REFERENCE_FILE).read_text())
        weights = {path.stem: weights_equal(path, SHIPPED_DIR / path.name)
                   for path in sorted(out.glob("*.safetensors"))}
        rows = compare(shipped_record, clone_record)
        payload = {"clone_commit": commit, "wall_s": round(wall, 1),
                   "training": clone_record.get("training", {}),
                   "table1_seconds": clone_record.get("table1", {}).get("seconds"),
                   "bitwise_equal_weights": weights, "tolerance": TOLERANCE, "rows": rows,
                   "all_within": all(r["within"] for r in rows),
                   "load_before": before, "load_after": load()}
        path = write_result("checkpoints", payload)
        log(f"[checkpoints] {wall / 60:.0f} min; within tolerance: {payload['all_within']}; "
            f"wrote {path}")
        if args.adopt:
            shutil.copytree(out, SHIPPED_DIR, dirs_exist_ok=True)
            shutil.copy2(repo / "README.md", ROOT / "README.md")
            log(f"[checkpoints] adopted the clone's checkpoints into {SHIPPED_DIR}")
        return payload
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
