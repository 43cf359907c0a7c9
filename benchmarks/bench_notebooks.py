"""Per-notebook execution time and peak RSS at the ``cpu`` profile (the book's default).

Each notebook runs in a fresh worker process through ``nbclient`` (the engine behind
``jupyter nbconvert --execute`` and jupyter-book), its kernel a child of the worker, so the
peak RSS reported is the larger of the worker's and the kernel's. The notebooks on disk are not
modified. Budget: the whole book ≤ 20 min, every notebook's peak ≤ 8 GiB. Placeholder lessons
(still being written) are run and flagged. Opt-in: ``run_all --only notebooks``.

    python -m benchmarks.bench_notebooks [--quick]      # --quick: the smoke profile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from benchmarks.common import ROOT, load, log, peak_rss_mib, run_worker, write_result

PLACEHOLDER = "Placeholder: this lesson is being written"
BUDGET_S, BUDGET_RSS_MIB = 20 * 60, 8 * 1024
CELL_TIMEOUT_S = 1800


def measure(path: str, profile: str) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import kernel_waits  # replies waited for in 1 s polls, as in the book's build

    kernel_waits.install()
    nb = nbformat.read(path, as_version=4)
    placeholder = any(PLACEHOLDER in c.source for c in nb.cells if c.cell_type == "markdown")
    os.environ["XMODALITY_PROFILE"] = profile
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    error = None
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1][:300]
    seconds = time.perf_counter() - t0
    kernel_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"notebook": os.path.basename(path), "profile": profile, "placeholder": placeholder,
            "seconds": seconds, "peak_rss_mib": max(kernel_mib, peak_rss_mib()),
            "code_cells": sum(c.cell_type == "code" for c in nb.cells), "error": error}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("NOTEBOOK", "PROFILE"))
    parser.add_argument("--quick", action="store_true", help="run at the smoke profile")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(*args.worker)))
        return {}
    profile = "smoke" if args.quick else "cpu"
    rows, load_before = [], load()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        log(f"[notebooks] {path.name} @ {profile} ...")
        row = run_worker("benchmarks.bench_notebooks", str(path), profile)
        row.setdefault("notebook", path.name)
        log(f"[notebooks] {row}")
        rows.append(row)
    total = sum(r.get("seconds", 0.0) for r in rows)
    peak = max((r.get("peak_rss_mib", 0.0) for r in rows), default=0.0)
    payload = {"rows": rows, "profile": profile, "total_s": total, "max_peak_rss_mib": peak,
               "budget_s": BUDGET_S, "budget_rss_mib": BUDGET_RSS_MIB,
               "within_budget": total <= BUDGET_S and peak <= BUDGET_RSS_MIB
               and not any(r.get("error") for r in rows),
               "load_before": load_before, "load_after": load()}
    write_result("notebooks", payload)
    return payload


if __name__ == "__main__":
    main()
