"""The memory allocator under XLA's CPU runtime: TCMalloc where it is installed (issue 17).

XLA allocates a call's temporaries and outputs from its worker threads. glibc's ``malloc`` gives
each thread an arena whose heap holds at most 64 MB, so every larger block is mapped afresh and
faulted in, zeroed, on every call: about 156,000 page faults in one cpu-profile ADM train step.
TCMalloc keeps freed blocks for the next call. Measured on the cpu profile (``benchmarks/RESULTS.md``
§8, §9): train steps 1.2–1.6× faster, sampler steps 1.0–1.3×, every output bit for bit the
same (an allocator decides where numbers live, not how they are computed).

An allocator is fixed when a process starts (``LD_PRELOAD``), so importing the package cannot
switch the process that imports it. Instead: the CLI starts itself again under TCMalloc
(:func:`reexec`), ``make`` runs the tests, the book and the retraining under it
(``python -m xmodality_lite.allocator --env``), and the Jupyter kernel ``make env`` installs
starts with it. Debian's ``libtcmalloc-minimal4`` provides it (``make env`` installs it);
without it everything runs on glibc's allocator, the same results a little slower.

``XMODALITY_MALLOC=glibc`` keeps glibc's allocator everywhere.

    python -m xmodality_lite.allocator          # which allocator this machine would use
    python -m xmodality_lite.allocator --env    # NAME=value words for a shell (empty if glibc)
    python -m xmodality_lite.allocator --kernel-env   # the same for `ipykernel install`
"""

from __future__ import annotations

import argparse
import ctypes.util
import functools
import os
import shlex
import sys
from collections.abc import Mapping

ENV_VAR = "XMODALITY_MALLOC"
LIBRARY = "tcmalloc_minimal"  # gperftools' TCMalloc without the heap profiler
_OFF = frozenset({"0", "glibc", "off", "false", "no"})
_RESTARTED = "_XMODALITY_MALLOC_RESTARTED"  # set on the re-executed process: never loop
# TCMalloc reports every allocation above 1 GiB on stderr by default; the paper-size models
# make such allocations on purpose (a DiT-L/16 gradient is 2 GiB)
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 50)}


def turned_off(env: Mapping[str, str] | None = None) -> bool:
    """``$XMODALITY_MALLOC`` asks for glibc's allocator."""
    env = os.environ if env is None else env
    return env.get(ENV_VAR, "").strip().lower() in _OFF


@functools.cache
def tcmalloc_library() -> str | None:
    """The shared library's name as the dynamic loader finds it (``libtcmalloc_minimal.so.4``),
    or None where it is not installed or the platform has no ``LD_PRELOAD`` (not Linux)."""
    return ctypes.util.find_library(LIBRARY) if sys.platform.startswith("linux") else None


def in_use() -> str:
    """The allocator of this process: ``"tcmalloc"`` or ``"glibc"`` (read from its mappings)."""
    try:
        with open("/proc/self/maps") as maps:
            return "tcmalloc" if any("libtcmalloc" in line for line in maps) else "glibc"
    except OSError:  # not Linux: whatever the platform's malloc is
        return "glibc"


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a child process that should run under TCMalloc:
    ``LD_PRELOAD`` names the library first. Unchanged where it is turned off or not installed."""
    out = dict(os.environ if env is None else env)
    library = tcmalloc_library()
    if turned_off(out) or library is None:
        return out
    preload = [p for p in out.get("LD_PRELOAD", "").split() if p and "libtcmalloc" not in p]
    return {**_QUIET, **out, "LD_PRELOAD": " ".join([library, *preload])}


def without(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` for a child process on glibc's allocator (no TCMalloc in ``LD_PRELOAD``)."""
    out = dict(os.environ if env is None else env)
    preload = [p for p in out.pop("LD_PRELOAD", "").split() if p and "libtcmalloc" not in p]
    if preload:
        out["LD_PRELOAD"] = " ".join(preload)
    return out


def reexec() -> None:
    """Start this program again under TCMalloc (same interpreter, arguments and process id),
    unless it already runs on it, it is turned off, the library is missing, or this process is
    itself the restart. Call it first thing in a program's entry point, before any work."""
    if os.environ.get(_RESTARTED) or turned_off() or in_use() == "tcmalloc":
        return
    env = environment()
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):  # nothing to preload
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**env, _RESTARTED: "1"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmodality_lite.allocator",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="store_true",
                        help="print the NAME=value words that run a command under TCMalloc "
                             "(nothing where it is turned off or not installed)")
    parser.add_argument("--kernel-env", action="store_true",
                        help="the same as `ipykernel install` options (--env NAME VALUE)")
    args = parser.parse_args(argv)
    env = environment()
    changed = [k for k in ("LD_PRELOAD", *_QUIET) if env.get(k) != os.environ.get(k)]
    if args.env:
        print(" ".join(f"{k}={shlex.quote(env[k])}" for k in changed))
    elif args.kernel_env:
        print(" ".join(f"--env {k} {shlex.quote(env[k])}" for k in changed))
    else:
        library = tcmalloc_library()
        print(f"this process: {in_use()}; TCMalloc: {library or 'not installed'}; "
              f"${ENV_VAR}: {os.environ.get(ENV_VAR, '(unset)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
