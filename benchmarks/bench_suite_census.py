"""Where the test suite's time goes: per test and per file, wall time against XLA compilation.

The suite without the book (``-m "not book"``), as ``make test`` runs it (two workers, whole
files, the smoke profile), with empty data and compilation caches in a temporary folder, as on a
fresh clone, and ``benchmarks.census_plugin`` loaded: it sums the seconds JAX reports for
tracing, lowering and XLA's backend compilation in each test's own process. Tests that start
processes (the CLI, notebooks) show wall time only.

    python -m benchmarks.bench_suite_census          # 10-15 min, alone on the machine
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    BACKEND_COMPILE_EVENT,
    LOWER_EVENT,
    ROOT,
    TRACE_EVENT,
    load,
    log,
    write_result,
)

SUBPROCESS = re.compile(r"subprocess\.run|sys\.executable|Popen")  # tests that start processes
HELPER = re.compile(r"^from (_\w+) import", re.M)  # the suite's helpers (tests/…/_x.py)


def starts_processes(test_file: Path) -> bool:
    """Whether the file, or a helper module of the suite it imports, starts processes."""
    text = test_file.read_text()
    helpers = [test_file.with_name(f"{name}.py") for name in HELPER.findall(text)]
    return any(SUBPROCESS.search(t) for t in [text, *(h.read_text() for h in helpers
                                                        if h.is_file())])


def census(folder: Path) -> dict:
    """Run the suite with the plugin; records from every worker, pytest's last line."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XMODALITY_", "JAX_COMPILATION_CACHE"))}
    env.update(XMODALITY_PROFILE="smoke", XMODALITY_CACHE=str(folder / "cache"),
               XMODALITY_CENSUS_DIR=str(folder), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "benchmarks.census_plugin", "-n", "2", "--dist", "loadfile",
           "--no-loadscope-reorder", "-m", "not book", "tests"]
    load_before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    tail = next((line.strip("= ") for line in reversed(proc.stdout.splitlines())
                 if re.search(r"\d+ (passed|failed)", line)), "")
    records = [json.loads(line) for path in folder.glob("*.jsonl")
               for line in path.read_text().splitlines()]
    return {"wall_s": round(wall, 1), "summary": tail, "returncode": proc.returncode,
            "records": records, "load_before": load_before, "load_after": load()}


def summarise(records: list[dict]) -> dict:
    """Totals, per-file sums and the slowest tests (seconds of all workers together)."""
    def total(key, rows):
        return round(sum(r.get(key, 0.0) for r in rows), 1)

    files = collections.defaultdict(list)
    for r in records:
        files[r["id"].split("::")[0]].append(r)
    starts = {f: starts_processes(ROOT / f) for f in files}
    per_file = sorted(({"file": f, "tests": len(rows), "wall_s": total("wall_s", rows),
                        "backend_s": total(BACKEND_COMPILE_EVENT, rows),
                        "trace_s": total(TRACE_EVENT, rows), "lower_s": total(LOWER_EVENT, rows),
                        "starts_processes": starts[f]}
                       for f, rows in files.items()), key=lambda x: -x["wall_s"])
    tests = sorted(({"id": r["id"], "wall_s": round(r["wall_s"], 1),
                     "backend_s": round(r.get(BACKEND_COMPILE_EVENT, 0.0), 1)} for r in records),
                   key=lambda x: -x["wall_s"])
    return {"tests": len(records), "test_s": total("wall_s", records),
            "backend_s": total(BACKEND_COMPILE_EVENT, records),
            "trace_s": total(TRACE_EVENT, records), "lower_s": total(LOWER_EVENT, records),
            "in_process_wall_s": round(sum(f["wall_s"] for f in per_file
                                           if not f["starts_processes"]), 1),
            "in_process_backend_s": round(sum(f["backend_s"] for f in per_file
                                              if not f["starts_processes"]), 1),
            "files": per_file[:15], "slowest": tests[:15]}


def main(argv: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="xmodality_census_") as tmp:
        log("[suite_census] the suite without the book, fresh caches (10-15 min)")
        run = census(Path(tmp))
    log(f"[suite_census] {run['wall_s']:.0f} s: {run['summary']}")
    if run["returncode"]:
        raise SystemExit(f"the suite failed: {run['summary']}")
    payload = run | summarise(run["records"])  # the records too: summarise again at will
    write_result("suite_census", payload)
    return payload


if __name__ == "__main__":
    main()
