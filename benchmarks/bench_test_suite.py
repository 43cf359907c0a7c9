"""`make test` of two commits on this machine, one after the other, each in a fresh clone.

Issue 17 asks for the suite in at most half the time it took when the issue was filed
(``BASELINE``, the last commit before it), measured on one machine run alone. Each side is a
clean clone of its commit running its own ``make test`` with this checkout's ``.venv``
(``make -o env``: setting the environment up is not counted) and its own, empty data and
compilation caches, as on a fresh machine. Reported: wall time of each, the number of tests
pytest passed, and the ratio.

    python -m benchmarks.bench_test_suite                 # BASELINE, then HEAD (~30 min)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, load, log, write_result

MATHJAX = Path("book/_mathjax")
LOGS = Path(tempfile.gettempdir()) / "xmodality_bench_test_suite"  # each side's whole output
BASELINE = "ec6fa12"  # the last commit before issue 17 was filed (385 tests, 22 min then)


def _suite(rev: str, where: Path) -> dict:
    """``make test`` of ``rev`` in a fresh clone under ``where``: wall time and pytest's tally.

    The environment is set up before the clock starts, as ``make env`` would: this checkout's
    ``.venv`` (``make -o env``) and its MathJax copy (``make env`` fetches it with npm into the
    git-ignored ``book/_mathjax``; without it the book test fails at once). The whole output is
    kept in ``LOGS/<rev>.log``; a failing side prints its last lines.
    """
    repo = where / rev
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=repo, check=True)
    shutil.copytree(ROOT / MATHJAX, repo / MATHJAX)
    from xmodality_lite import allocator

    # each side on the allocator its own Makefile chooses (a commit before xmodality_lite.allocator:
    # glibc's), except the notebooks' kernels: both use this .venv's kernel, on TCMalloc if installed
    env = {k: v for k, v in allocator.without().items()
           if not k.startswith(("XMODALITY_", "JAX_COMPILATION_CACHE", "TCMALLOC_"))}
    env["PYTHONPATH"] = str(repo)  # the clone's package (and its kernels' notebooks)
    log(f"[test_suite] make test at {rev}")
    t0 = time.perf_counter()
    proc = subprocess.run(["make", "-o", "env", "test", f"VENV={ROOT / '.venv'}"], cwd=repo,
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"{rev}.log").write_text(proc.stdout)
    lines = proc.stdout.strip().splitlines()
    # pytest's last line, "N passed, … in S s", wherever make's own lines put it
    tail = next((line.strip("= ") for line in reversed(lines)
                 if re.search(r"\d+ (passed|failed|errors?)\b.* in [\d.]+s", line)), "")
    log(f"[test_suite] {rev}: {wall:.0f} s, {tail or 'no pytest summary'}")
    if proc.returncode:
        log("\n".join(lines[-40:]))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
    return {"rev": rev, "wall_s": round(wall, 1), "returncode": proc.returncode,
            "summary": tail, **counts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--head", default="HEAD")
    args = parser.parse_args(argv)
    head = subprocess.run(["git", "rev-parse", "--short", args.head], cwd=ROOT, check=True,
                          text=True, capture_output=True).stdout.strip()
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_suite(rev, Path(tmp)) for rev in (args.baseline, head)]
    failed = [r["rev"] for r in runs if r["returncode"]]
    if failed:
        log(f"[test_suite] make test failed at {failed}: see {LOGS}; the ratio compares "
            "unequal work")
    payload = {"runs": runs, "ratio": runs[0]["wall_s"] / runs[1]["wall_s"],
               "all_passed": not failed,
               "load_before": before, "load_after": load()}
    path = write_result("test_suite", payload)
    log(f"[test_suite] {payload['ratio']:.2f}× faster; wrote {path}")
    return payload


if __name__ == "__main__":
    main()
