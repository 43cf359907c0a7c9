"""The instruments of ``benchmarks/bench_suite_census.py``: the compile log sees every process
(a child started from a test, a notebook kernel) and tells a compilation from a cache load; its
summary charges each compilation to the notebook or the test file that made it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# importing the benchmarks package turns the compilation cache off (os.environ) for the
# benchmarks' own processes: this worker, and what its later tests start, keep their setting
_SETTING = os.environ.get("XMODALITY_JAX_CACHE")
from benchmarks.bench_suite_census import COMPILE_LOG, owners, summarise_compiles  # noqa: E402

if _SETTING is None:
    os.environ.pop("XMODALITY_JAX_CACHE", None)
else:
    os.environ["XMODALITY_JAX_CACHE"] = _SETTING

ROOT = Path(__file__).resolve().parent.parent

# a parent that jits once and starts a child that jits the same program
PARENT = textwrap.dedent("""
    import subprocess, sys
    import xmodality_lite, jax, jax.numpy as jnp

    def census_probe(x):
        return jnp.tanh(x @ x.T).sum()

    print(float(jax.jit(census_probe)(jnp.ones((8, 8)))))
    if sys.argv[1:] == ["parent"]:
        subprocess.run([*sys.orig_argv[:3], "child"], check=True)  # python -c <this code>
""")


def _run_logged(tmp_path: Path) -> list[dict]:
    log = tmp_path / "log"
    log.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "XMODALITY_JAX", "XMODALITY_CACHE"))}
    env.update(XMODALITY_COMPILE_LOG=str(log), XMODALITY_JAX_CACHE=str(tmp_path / "jax"),
               PYTEST_CURRENT_TEST="tests/test_x.py::test_y (call)", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(COMPILE_LOG), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", PARENT, "parent"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for p in log.glob("*.jsonl") for line in p.read_text().splitlines()]


def test_importing_the_census_left_this_process_cache_alone():
    assert os.environ.get("XMODALITY_JAX_CACHE") == _SETTING


def test_compile_log_sees_children_and_cache_loads(tmp_path):
    records = _run_logged(tmp_path)
    probe = [r for r in records if r.get("program") == "jit_census_probe"]
    assert len(probe) == 2 and len({r["pid"] for r in probe}) == 2  # parent and child
    first, second = sorted(probe, key=lambda r: r["t"])
    assert (first["hit"], second["hit"]) == (False, True)  # the child loads the parent's program
    assert second["ppid"] == first["pid"]
    assert {r["test"] for r in probe} == {"tests/test_x.py::test_y"}
    assert first["fingerprint"] == second["fingerprint"] is not None  # the same program text
    summary = summarise_compiles(records, "")
    assert summary["all"]["compiles"] >= 1 and summary["all"]["loads"] >= 1
    assert [o["owner"] for o in summary["owners"]] == ["tests/test_x.py"]
    assert summary["repeats"]["extra_compiles"] == 0  # the child loaded, it did not compile


def test_the_same_program_compiled_twice_is_counted_once_as_extra():
    def rec(pid, program, fingerprint, s, hit=False, test="tests/test_a.py::t"):
        return {"pid": pid, "ppid": 1, "t": float(pid), "test": test, "program": program,
                "s": s, "hit": hit, "fingerprint": fingerprint}
    records = [rec(10, "jit_step", "aa", 3.0), rec(11, "jit_step", "aa", 2.5,
                                                    test="tests/test_b.py::t"),
               rec(12, "jit_step", "aa", 0.01, hit=True),  # a load is no repeat
               rec(12, "jit_step", "bb", 4.0),  # same name, another program
               rec(13, "jit_f", "cc", 1.0), rec(13, "jit_f", None, 1.0),
               rec(14, "jit_f", None, 1.0)]  # no fingerprint: not counted
    rep = summarise_compiles(records, "")["repeats"]
    assert (rep["programs"], rep["extra_compiles"], rep["extra_s"]) == (1, 1, 2.5)
    assert rep["worst"][0]["owners"] == ["tests/test_a.py", "tests/test_b.py"]


def test_compile_log_is_inert_without_its_variable(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(COMPILE_LOG), str(ROOT)])}
    env.pop("XMODALITY_COMPILE_LOG", None)
    code = "import sys, jax; print('jax._src.compiler' in sys.modules, len(sys.meta_path))"
    plain = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                           capture_output=True, env={**env, "PYTHONPATH": str(ROOT)})
    logged = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            capture_output=True, env=env)
    assert logged.returncode == plain.returncode == 0, logged.stderr
    assert logged.stdout == plain.stdout  # no finder left behind
    assert not list(tmp_path.iterdir())


def test_kernels_are_matched_to_notebooks_in_execution_order():
    def rec(pid, ppid, t, **kw):
        return {"pid": pid, "ppid": ppid, "t": t, "test": "tests/test_book.py::test_build_succeeds",
                **kw}  # test: overridden by kw

    compiles = [rec(20, 1, 5.0, kernel_start=True), rec(10, 1, 1.0, kernel_start=True),
                rec(10, 1, 2.0, program="jit_a", s=3.0, hit=False),
                rec(11, 10, 3.0, program="jit_b", s=1.0, hit=False),  # a child of the first kernel
                rec(20, 1, 6.0, program="jit_a", s=0.1, hit=True),
                rec(30, 2, 7.0, program="jit_c", s=2.0, hit=False, test="tests/test_m.py::t"),
                rec(40, 2, 0.5, kernel_start=True, test="tests/test_wheel.py::t"),  # not the book's
                rec(41, 30, 8.0, program="jit_d", s=1.0, hit=False, test=""),  # its parent's test
                rec(30, 2, 9.0, program="jit_e", s=0.5, hit=False, test="tests/test_n.py::u")]
    log = ("/r/notebooks/00_tour.ipynb: Executing notebook using local CWD\n"
           "/r/notebooks/00_tour.ipynb: Executed notebook in 12.50 seconds\n"
           "/r/notebooks/01_data.ipynb: Executing notebook using local CWD\n"
           "/r/notebooks/01_data.ipynb: Executed notebook in 3.25 seconds\n")
    assert owners(compiles, log) == {10: "book: 00_tour", 11: "book: 00_tour",
                                     20: "book: 01_data", 30: "tests/test_m.py",
                                     40: "tests/test_wheel.py", 41: "tests/test_m.py"}
    s = summarise_compiles(compiles, log)
    assert s["book"] == {"compiles": 2, "compile_s": 4.0, "loads": 1, "load_s": 0.1}
    # a worker's compilations go to the test running each, a child's to its parent's test
    assert {o["owner"]: o["compile_s"] for o in s["owners"]} == {
        "book: 00_tour": 4.0, "tests/test_m.py": 3.0, "tests/test_n.py": 0.5, "book: 01_data": 0.0}
    assert s["notebooks"] == [
        {"notebook": "00_tour", "executed_s": 12.5, "compiles": 2, "compile_s": 4.0,
         "loads": 0, "load_s": 0.0},
        {"notebook": "01_data", "executed_s": 3.25, "compiles": 0, "compile_s": 0.0,
         "loads": 1, "load_s": 0.1}]
    assert s["programs"][0] == {"program": "jit_a", "compiles": 1, "compile_s": 3.0, "loads": 1,
                                "load_s": 0.1, "owners": 1}
    # a log that does not match the kernels: they are named by their order
    assert owners([rec(10, 1, 1.0, kernel_start=True)], "") == {10: "book: kernel 1"}


def test_a_notebook_kernel_says_when_it_starts(tmp_path):
    """The book's kernels are told apart by the start line each writes (nbclient, as myst-nb)."""
    import nbclient
    import nbformat

    env = {**os.environ, "XMODALITY_COMPILE_LOG": str(tmp_path),
           "PYTEST_CURRENT_TEST": "tests/test_book.py::test_build_succeeds (setup)",
           "PYTHONPATH": str(COMPILE_LOG)}
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import os; print(os.getpid())"))
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    pid = int(nb.cells[0].outputs[0]["text"])
    (start,) = [json.loads(line) for line in (tmp_path / f"{pid}.jsonl").read_text().splitlines()]
    assert start["kernel_start"] and start["test"] == "tests/test_book.py::test_build_succeeds"
