"""The book where its readers open it: a wheel installed away from the checkout (issue 13).

A wheel is built from the sources, installed into a fresh virtual environment that has no path
to the checkout, and lesson 00 is executed from an empty folder at the ``cpu`` profile (the
profile of the shipped models) by a kernel of that environment. The lesson must load the shipped
checkpoints from the installed package, write nothing inside it, and cache only where
``$XMODALITY_CACHE`` points. Slow (a build, an install and a notebook: about a minute).

The fresh environment gets its dependencies (jax, flax, ipykernel, …) from this venv through a
plain path line in a ``.pth`` file: Python runs no ``.pth`` file of a folder added that way, so
this venv's editable install of the checkout (a ``.pth`` finder) stays out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import matplotlib
import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.book]

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ["00_setup_and_tour"]  # the lessons that run in about a minute at the cpu profile
KERNEL = "xmodality-wheel"
# a last cell, added to the copy only: what the kernel imported and where its cache is
PROBE = """\
import json, sys
import xmodality_lite as xl
print("PROBE " + json.dumps({
    "package": xl.__file__,
    "shipped_dir": str(xl.checkpoint.SHIPPED_DIR),
    "cache": str(xl.preprocessing.default_cache_dir()),
    "sys_path": sys.path,
    "editable_finder": any("__editable__" in name for name in sys.modules),
}))
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime) of every file, bytecode aside (Python's, not ours)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def env_python(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its interpreter."""
    tmp = tmp_path_factory.mktemp("wheel")
    # 1. build from a copy of the sources, so the build leaves nothing (build/, *.egg-info) in
    #    the checkout; offline, with this venv's setuptools (the dev extra pins >= 77)
    src = tmp / "src"
    shutil.copytree(ROOT / "xmodality_lite", src / "xmodality_lite",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("xmodality_lite-*.whl")
    # 2. a fresh venv (from the base interpreter) whose only extra path is this venv's packages
    env = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(run(python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--quiet", wheel)
    return python


def test_the_wheel_carries_the_shipped_checkpoints(env_python, tmp_path):
    out = run(env_python, "-I", "-c", "import xmodality_lite.checkpoint as c; "
              "print(c.SHIPPED_DIR); print(*sorted(p.name for p in c.SHIPPED_DIR.iterdir()))",
              cwd=tmp_path).stdout.split("\n")
    shipped = Path(out[0])
    assert not shipped.is_relative_to(ROOT) and shipped.parent.parent.name == "site-packages"
    want = sorted(p.name for p in (ROOT / "xmodality_lite" / "checkpoints").iterdir())
    assert out[1].split() == want and any(name.endswith(".safetensors") for name in want)


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_from_an_installed_wheel(env_python, tmp_path, lesson):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    work, cache, home = tmp_path / "work", tmp_path / "cache", tmp_path / "home"
    for folder in (work, home):
        folder.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    nbformat.write(nb, work / f"{lesson}.ipynb")
    package = Path(run(env_python, "-I", "-c", "import xmodality_lite; print(xmodality_lite.__file__)",
                       cwd=work).stdout.strip()).parent
    before = snapshot(package)

    # the environment's own kernel (-I: no PYTHONPATH, no user site, no current folder)
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(env_python), "-I", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "xmodality_lite wheel", "language": "python"}))
    km = KernelManager(kernel_name=KERNEL,
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XMODALITY_", "XDG_", "JAX_", "PYTHON"))}
    env |= {"XMODALITY_PROFILE": "cpu", "XMODALITY_CACHE": str(cache), "HOME": str(home),
            "JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "MPLCONFIGDIR": matplotlib.get_cachedir()}  # reuse the font cache: seconds saved
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(work)}}
                       ).execute(env=env)
        seconds = time.perf_counter() - t0
    finally:  # a client given its kernel manager leaves the kernel running: stop it here
        if km.has_kernel:
            km.shutdown_kernel(now=True)

    texts = [out.get("text", "") + "".join(map(str, out.get("data", {}).values()))
             for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    probe = json.loads(next(t for t in texts if t.startswith("PROBE "))[len("PROBE "):])
    # 1. the package, and nothing of the checkout, was imported
    assert Path(probe["package"]).parent == package and not package.is_relative_to(ROOT)
    assert not probe["editable_finder"]
    assert not any((Path(p) / "xmodality_lite").resolve() == ROOT / "xmodality_lite"
                   for p in probe["sys_path"] if p)
    # 2. the shipped checkpoints were loaded from it: no untrained fallback, no warning box
    assert Path(probe["shipped_dir"]) == package / "checkpoints"
    from xmodality_lite.findings import NAMES, record_findings

    best = NAMES[record_findings().best_diffusion]  # the model lesson 00 previews
    assert any(f"model: {best} (shipped," in t for t in texts), texts
    assert not any("UNTRAINED" in t for t in texts), [t for t in texts if "UNTRAINED" in t]
    # 3. nothing written inside the installed package, nor beside the lesson
    assert snapshot(package) == before
    assert sorted(p.name for p in work.iterdir()) == [f"{lesson}.ipynb"]
    # 4. the cache is $XMODALITY_CACHE, not the user cache folder
    assert Path(probe["cache"]) == cache
    assert not (home / ".cache" / "xmodality_lite").exists()
    print(f"{lesson}: executed in {seconds:.0f} s from an installed wheel")
