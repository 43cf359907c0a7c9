"""Shared helpers for the benchmark sections: timing, peak memory, machine facts, JSON results.

Conventions (see benchmarks/README.md): every timed call is followed by ``block_until_ready``;
the first call (compilation included) is reported on its own; the steady-state figure is the
median of ``repeats`` calls after it. The CPU may be shared, so each section records the load
average before and after it ran.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def block(x):
    import jax

    return jax.block_until_ready(x)


def time_call(fn: Callable[[], Any], repeats: int = 3) -> dict[str, Any]:
    """``first_s`` (compilation included), ``runs_s`` and their ``median_s`` (wall clock), and
    ``cpu_median_s``: the median CPU time of this process (all threads) per call.

    CPU time is what the call costs; wall time also counts waiting for a shared CPU, so on a
    busy machine wall ≫ CPU / cores. ``fn`` is called ``repeats + 1`` times, each blocked on.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    runs, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        block(fn())
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"first_s": first, "runs_s": runs, "median_s": statistics.median(runs),
            "cpu_median_s": statistics.median(cpu)}


def fastest_s(fn: Callable[[], Any], repeats: int = 5) -> float:
    """A ceiling's seconds: the best of at least five calls after a compiling one, not their median."""
    return min(time_call(fn, max(repeats, 5))["runs_s"])


def gemm_gflops(shapes, repeats: int = 5) -> dict[str, float]:
    """Float32 GEMM GFLOP/s at each [M, K] × [K, N] of ``shapes``, keyed ``"MxKxN"`` (fastest
    of the runs): the ceiling a model's achieved GFLOP/s is read against."""
    import jax
    import jax.numpy as jnp

    matmul = jax.jit(jnp.matmul)
    out = {}
    for m, k, n in shapes:
        a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / fastest_s(lambda a=a, b=b: matmul(a, b), repeats) / 1e9
    return out


def train_step_call(model, profile, batch: int) -> Callable[[], Any]:
    """``one_step()``: one call of ``training.make_train_step`` on ``model`` (consumed: its
    buffers are donated) with fixed random [batch, S, S, 1] inputs in [−1, 1]; each call
    continues from the state the previous one returned."""
    import jax
    from flax import nnx

    from xmodality_lite.training import make_optimizer, make_train_step

    optimizer = make_optimizer(model, profile)
    graphdef, state = nnx.split((model, optimizer, None))
    del model, optimizer
    step = make_train_step(graphdef, gamma=profile.train.min_snr_gamma, ema_decay=0.0)
    keys = jax.random.split(jax.random.key(1), 3)
    size = profile.image_size
    tof = jax.random.uniform(keys[0], (batch, size, size, 1), minval=-1.0, maxval=1.0)
    cta = jax.random.uniform(keys[1], (batch, size, size, 1), minval=-1.0, maxval=1.0)
    holder = {"state": state}
    del state

    def one_step():
        holder["state"], loss = step(holder["state"], tof, cta, keys[2])
        return loss

    return one_step


def load() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the (shared) CPU was."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    """Short commit of the checkout, ``-dirty`` when tracked files are modified."""
    from xmodality_lite.io import git_commit as commit

    return commit(short=True, mark_dirty=True)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "antspyx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def machine() -> dict[str, Any]:
    from xmodality_lite import allocator

    # what the workers get (run_worker): another library already in LD_PRELOAD is not TCMalloc
    preload = allocator.environment().get("LD_PRELOAD", "")
    workers = "tcmalloc" if "libtcmalloc" in preload else "glibc"
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _ram_gib(),
            "os": platform.platform(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "malloc": workers}


# JAX's monitoring events for the three stages of a compilation (jax.monitoring duration events)
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def portable_path(path: str | os.PathLike) -> str:
    """``path`` relative to this checkout, else its last two parts (a temporary folder's): a
    result file names no machine's absolute path."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(Path(*path.parts[-2:]))


def machine_kind(record: dict[str, Any] | None = None) -> str:
    """A file-name slug of the CPU model that ``record`` (default: this machine) was measured on:
    ``AMD EPYC`` → ``amd-epyc``, ``Intel(R) Xeon(R) Processor`` → ``intel-xeon-processor``."""
    cpu = (record.get("machine") or {}).get("cpu") if record else _cpu_model()
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", str(cpu).lower())).strip("-")
    return slug or "unknown"


def _record(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(section: str, payload: dict[str, Any]) -> Path:
    """``benchmarks/results/<section>.json`` with the run's context, written atomically.

    Ratios and ceilings differ between machine kinds (the cpu profile's speed-ups by up to
    1.5x between an AMD EPYC and an Intel Xeon of this project's size, RESULTS §8), so a run
    never replaces another kind's: the previous file, if measured on another CPU model, is
    kept as ``<section>@<its machine kind>.json`` (replacing that kind's older one), and
    this kind's own kept file, if any, is superseded (removed)."""
    from xmodality_lite.io import atomic_write_text

    record = {"section": section,
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "commit": git_commit(), "machine": machine(), "versions": versions(), **payload}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{section}.json"
    previous = _record(path)
    if previous is not None and machine_kind(previous) != machine_kind(record):
        path.replace(RESULTS / f"{section}@{machine_kind(previous)}.json")
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    (RESULTS / f"{section}@{machine_kind(record)}.json").unlink(missing_ok=True)  # superseded
    return path


def latest_result(section: str) -> dict[str, Any] | None:
    """The section's latest result on any machine kind, or None."""
    return _record(RESULTS / f"{section}.json")


def read_result(section: str) -> dict[str, Any] | None:
    """The section's latest result, if it was measured on this machine kind (rows of another
    kind's run are not merged into this one's), else None."""
    record = latest_result(section)
    return record if record is not None and machine_kind(record) == machine_kind() else None


def other_machines(section: str) -> list[dict[str, Any]]:
    """The section's latest result on each other machine kind (``<section>@<kind>.json``)."""
    return [_record(p) for p in sorted(RESULTS.glob(f"{section}@*.json"))]


def merge_rows(old: list[dict], new: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """``old`` rows with those of ``new`` replacing any that share the ``keys`` values."""
    fresh = {tuple(r.get(k) for k in keys) for r in new}
    return [r for r in old if tuple(r.get(k) for k in keys) not in fresh] + new


def run_worker(module: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
    """``python -m <module> --worker <args>`` in a fresh process; its last stdout line is JSON.

    A fresh process per measurement keeps peak RSS per model and isolates compilation caches.
    The worker's stderr (progress) passes through.
    """
    from xmodality_lite import allocator

    cmd = [sys.executable, "-m", module, "--worker", *args]
    proc = subprocess.run(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, timeout=timeout,
                          env=allocator.environment())  # the allocator the package runs on
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"worker exited with {proc.returncode} (its stderr is above)"}
    return json.loads(lines[-1])


def extract_package(rev: str, into: Path) -> Path:
    """The package ``xmodality_lite`` at git revision ``rev`` (``git archive``) under ``into``."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "xmodality_lite"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    tar = into / "package.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into


def run_side(module: str, package_root: Path, *args: str) -> dict[str, Any]:
    """``python -m <module> --worker ARGS`` in a fresh process importing ``xmodality_lite`` from
    ``package_root`` (another commit's, from :func:`extract_package`, or this checkout's), with
    the compilation cache off so that both sides compile from scratch, and on the allocator that
    side's package runs on (TCMalloc from :mod:`xmodality_lite.allocator` on, glibc's before it);
    its last stdout line is JSON."""
    from xmodality_lite import allocator

    own = (package_root / "xmodality_lite" / "allocator.py").is_file()
    env = {**(allocator.environment() if own else allocator.without()),
           "PYTHONPATH": os.pathsep.join([str(package_root), str(ROOT)]), "XMODALITY_JAX_CACHE": "0"}
    proc = subprocess.run([sys.executable, "-m", module, "--worker", *args], cwd=package_root,
                          env=env, text=True, stdout=subprocess.PIPE)  # -m: the cwd comes first
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {args} on {package_root} exited with {proc.returncode}")
    return json.loads(lines[-1])


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)
