"""Where the test suite's time goes: per test and per file, wall time against XLA compilation.

The whole suite, as ``make test`` runs it (two workers, whole files, the smoke profile, the book
built with every notebook executed), with empty data and compilation caches in a temporary
folder, as on a fresh clone. Two instruments:

- ``benchmarks.census_plugin`` sums, per test, the seconds JAX reports for tracing, lowering
  and XLA's backend compilation in the test's own process, beside the test's wall time;
- ``benchmarks/compile_log/sitecustomize.py`` (on ``PYTHONPATH``) logs every program that every
  Python process gets from XLA, compiled or loaded from the persistent cache: the pytest
  workers, the CLI and interpreters the tests start, the book's notebook kernels. Each
  compilation is charged to the notebook whose kernel (or a child of it) made it, else to the
  test file that was running.

    python -m benchmarks.bench_suite_census          # 20 min, alone on the machine
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


COMPILE_LOG = ROOT / "benchmarks" / "compile_log"  # its sitecustomize.py
BOOK_LOG = ROOT / "_build" / "smoke-build.log"  # written by tests/test_book.py
BOOK_TEST = "tests/test_book.py::test_build_succeeds"  # its fixture builds the book
EXECUTING = re.compile(r"notebooks/(\w+)\.ipynb: Executing notebook")
EXECUTED = re.compile(r"notebooks/(\w+)\.ipynb: Executed notebook in ([\d.]+) seconds")


def census(folder: Path) -> dict:
    """Run the suite with both instruments; their records, pytest's last line, the book's log."""
    (folder / "tests").mkdir()
    (folder / "compiles").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XMODALITY_", "JAX_COMPILATION_CACHE"))}
    env.update(XMODALITY_PROFILE="smoke", XMODALITY_CACHE=str(folder / "cache"),
               XMODALITY_CENSUS_DIR=str(folder / "tests"),
               XMODALITY_COMPILE_LOG=str(folder / "compiles"),
               # the suite's own default, said out loud: importing the plugin's package
               # (benchmarks/__init__.py) would otherwise turn the cache off everywhere
               XMODALITY_JAX_CACHE=str(folder / "cache" / "jax"),
               PYTHONPATH=str(COMPILE_LOG))  # not the checkout: test_wheel installs the package
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "benchmarks.census_plugin", "-n", "2", "--dist", "loadfile",
           "--no-loadscope-reorder", "tests"]
    load_before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    tail = next((line.strip("= ") for line in reversed(proc.stdout.splitlines())
                 if re.search(r"\d+ (passed|failed)", line)), "")
    def read(sub):
        return [json.loads(line) for path in (folder / sub).glob("*.jsonl")
                for line in path.read_text().splitlines() if line.strip()]

    return {"wall_s": round(wall, 1), "summary": tail, "returncode": proc.returncode,
            "output": proc.stdout, "records": read("tests"), "compiles": read("compiles"),
            "book_log": BOOK_LOG.read_text() if BOOK_LOG.is_file() else "",
            "load_before": load_before, "load_after": load()}


def owners(compiles: list[dict], book_log: str) -> dict[int, str]:
    """pid -> who made its compilations: ``book: <notebook>`` for a notebook's kernel and its
    children (kernels start one after another, in the order the book's log executes them),
    else the file of the test that was running."""
    kernels = sorted((r["t"], r["pid"]) for r in compiles  # other tests' kernels are theirs
                     if r.get("kernel_start") and r["test"].startswith(BOOK_TEST))
    notebooks = EXECUTING.findall(book_log)
    if len(kernels) != len(notebooks):  # named by their order only
        log(f"[suite_census] {len(kernels)} kernels started but the book's log executes "
            f"{len(notebooks)} notebooks")
        notebooks = [f"kernel {k + 1}" for k in range(len(kernels))]
    kernel_of = {pid: f"book: {nb}" for (_, pid), nb in zip(kernels, notebooks, strict=True)}
    parent = {r["pid"]: r["ppid"] for r in compiles}
    test = {}  # a process started with an environment copied before any test ran names none:
    for r in compiles:  # it is charged to its parent's test
        if r["test"]:
            test.setdefault(r["pid"], r["test"].split("::")[0])
    who = {}
    for pid0 in parent:
        pid, seen, named = pid0, 0, None
        while pid not in kernel_of and seen < 8:
            named = named or test.get(pid)
            if pid not in parent:
                break
            pid, seen = parent[pid], seen + 1
        who[pid0] = kernel_of.get(pid) or named or "(no test)"
    return who


def summarise_compiles(compiles: list[dict], book_log: str) -> dict:
    """Compilations and cache loads of every process, per owner and per program."""
    rows = [r for r in compiles if "program" in r]
    process = owners(compiles, book_log)

    def owner(r):  # a pytest worker runs many files: each compilation goes to its own test's
        mine = process[r["pid"]]
        return mine if mine.startswith("book: ") or not r["test"] else r["test"].split("::")[0]

    def sums(group):
        made = [r["s"] for r in group if not r["hit"]]
        loaded = [r["s"] for r in group if r["hit"]]
        return {"compiles": len(made), "compile_s": round(sum(made), 1),
                "loads": len(loaded), "load_s": round(sum(loaded), 1)}

    by_owner, by_program = collections.defaultdict(list), collections.defaultdict(list)
    for r in rows:
        by_owner[owner(r)].append(r)
        by_program[r["program"]].append(r)
    per_owner = sorted(({"owner": k, **sums(v)} for k, v in by_owner.items()),
                       key=lambda x: -x["compile_s"])
    per_program = sorted(({"program": k, **sums(v),
                           "owners": len({owner(r) for r in v if not r["hit"]})}
                          for k, v in by_program.items()), key=lambda x: -x["compile_s"])
    book = [r for r in rows if owner(r).startswith("book: ")]
    executed = {nb: float(s) for nb, s in EXECUTED.findall(book_log)}
    notebooks = [{"notebook": nb, "executed_s": s,
                  **sums([r for r in book if owner(r) == f"book: {nb}"])}
                 for nb, s in executed.items()]
    return {"all": sums(rows), "book": sums(book), "processes": len(process),
            "owners": per_owner[:20], "programs": per_program[:20], "notebooks": notebooks,
            "repeats": repeats(rows, owner)}


def repeats(rows: list[dict], owner) -> dict:
    """The same program text compiled more than once: work the persistent cache did not save
    (two processes compiling it at the same time, or one that could not read the cache)."""
    made = collections.defaultdict(list)
    for r in rows:
        if not r["hit"] and r.get("fingerprint"):
            made[r["fingerprint"]].append(r)
    # (seconds after the first compilation, the compilations), the costliest first
    again = sorted(((sum(r["s"] for r in v[1:]), v) for v in made.values() if len(v) > 1),
                   key=lambda e: -e[0])
    return {"programs": len(again), "extra_compiles": sum(len(v) - 1 for _, v in again),
            "extra_s": round(sum(extra for extra, _ in again), 1),
            "worst": [{"program": v[0]["program"], "times": len(v), "extra_s": round(extra, 1),
                       "owners": sorted({owner(r) for r in v})} for extra, v in again[:5]]}


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
        log("[suite_census] the whole suite, fresh caches (about 20 min)")
        run = census(Path(tmp))
    log(f"[suite_census] {run['wall_s']:.0f} s: {run['summary']}")
    if run["returncode"]:
        failed = "\n".join(line for line in run["output"].splitlines() if line.startswith("FAILED"))
        raise SystemExit(f"the suite failed: {run['summary']}\n{failed}")
    del run["output"]
    payload = run | summarise(run["records"])  # the records too: summarise again at will
    # every program of every process: thousands of lines, summarised here and not stored
    payload["compile_census"] = summarise_compiles(payload.pop("compiles"), payload.pop("book_log"))
    write_result("suite_census", payload)
    return payload


if __name__ == "__main__":
    main()
