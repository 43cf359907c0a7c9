"""The notebooks' Colab install step: the package's dependencies without losing Colab's GPU jax.

Every lesson's first cell (written by ``tools/new_notebook.py`` from ``_config.yml``) runs, in
Colab only::

    pip install --no-deps "xmodality_lite @ git+<repository.url>@<repository.ref>"
    from xmodality_lite.colab import install; install()

A plain ``pip install`` would resolve ``jax`` against the tested range of ``pyproject.toml``
alone, and when Colab's CUDA jax lies outside it, replace it with a CPU wheel (pip prefers the
range over the installed CUDA build). :func:`plan_install` decides instead, from a :class:`Environment` (Colab or not, GPU
or not, installed and already-imported distributions): keep Colab's jax when it fits the tested
range, else install ``jax[cuda12]`` of that range on a GPU runtime (plain ``jax`` without one).
:func:`install` runs the plan, says in one line when a distribution it changed had already been
imported (the runtime must restart), and prints the package version and
``jax.default_backend()``. Outside Colab it does nothing. This module imports only the standard
library and ``packaging``, so it runs before any dependency is installed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PACKAGE = "xmodality_lite"
CUDA_EXTRA = "cuda12"  # Colab's GPU runtimes run CUDA 12
# the distributions that make a jax a GPU jax (jax[cuda12] installs both)
CUDA_PLUGINS = ("jax-cuda12-plugin", "jax-cuda12-pjrt")
JAX_DISTRIBUTIONS = ("jax", "jaxlib", *CUDA_PLUGINS)
RESTART_HINT = ("Restart the runtime (Runtime → Restart session), then run the notebook again: "
                "{changed} {verb} imported before this install.")

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


@dataclass(frozen=True)
class Environment:
    """What the install decision depends on; :func:`detect_environment` reads the live one."""

    colab: bool
    gpu: bool
    versions: Mapping[str, str] = field(default_factory=dict)  # installed distribution → version
    imported: frozenset[str] = frozenset()  # distributions with a module in sys.modules

    def version(self, dist: str) -> Version | None:
        v = self.versions.get(canonicalize_name(dist))
        return None if v is None else Version(v)


@dataclass(frozen=True)
class InstallPlan:
    """``pip install`` arguments (empty: nothing to do) and why jax ends up as it does."""

    pip_args: tuple[str, ...]
    jax: str  # one line for the student: what happens to jax, and why


def package_requirements() -> list[str]:
    """The installed package's run-time requirements (no extras), as ``pyproject.toml`` lists them."""
    reqs = [Requirement(r) for r in metadata.requires(PACKAGE) or []]
    return [str(r) for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def tested_jax(requirements: Iterable[str]) -> Requirement:
    """The ``jax`` requirement among ``requirements``: the range the package is tested with."""
    for text in requirements:
        req = Requirement(text)
        if canonicalize_name(req.name) == "jax":
            return req
    raise ValueError(f"no jax requirement among {list(requirements)}")


def plan_install(env: Environment, requirements: Iterable[str] | None = None) -> InstallPlan:
    """The pip arguments that install ``requirements`` (default: the package's) in ``env``.

    1. Outside Colab: nothing (a local install is the user's, done with pip or conda).
    2. jax installed, in the tested range, and a CUDA build if there is a GPU: pin it (and its
       jaxlib and CUDA plugins) so pip cannot replace it.
    3. Otherwise ``jax[cuda12]`` of the tested range on a GPU runtime, plain ``jax`` without one.
    """
    if not env.colab:
        return InstallPlan((), "not in Colab: nothing installed")
    requirements = package_requirements() if requirements is None else list(requirements)
    jax_req = tested_jax(requirements)
    others = [str(r) for r in map(Requirement, requirements) if canonicalize_name(r.name) != "jax"]
    spec = str(jax_req.specifier)
    have = env.version("jax")
    has_cuda = all(env.version(p) is not None for p in CUDA_PLUGINS)
    if have is not None and jax_req.specifier.contains(have, prereleases=True) and (has_cuda or not env.gpu):
        pins = [f"{d}=={env.versions[d]}" for d in JAX_DISTRIBUTIONS if d in env.versions]
        build = "CUDA" if has_cuda else "CPU"
        return InstallPlan((*others, *pins), f"keeping Colab's jax {have} ({build}): it is in the tested range {spec}")
    if have is None:
        why = "no jax installed"
    elif not jax_req.specifier.contains(have, prereleases=True):
        why = f"Colab's jax {have} is outside the tested range {spec}"
    else:
        why = f"Colab's jax {have} has no CUDA plugin"
    if env.gpu:
        return InstallPlan((*others, f"jax[{CUDA_EXTRA}]{spec}"),
                           f"{why}: installing jax[{CUDA_EXTRA}]{spec} for the GPU")
    return InstallPlan((*others, f"jax{spec}"), f"{why}: installing jax{spec} (no GPU)")


# --------------------------------------------------------------------------- the live environment
def installed_versions(names: Iterable[str] | None = None) -> dict[str, str]:
    """Installed distribution → version, for ``names`` (default: every distribution)."""
    if names is None:
        return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()
                if d.metadata["Name"]}
    out = {}
    for name in names:
        try:
            out[canonicalize_name(name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def imported_distributions() -> frozenset[str]:
    """Distributions that provide a top-level module already in ``sys.modules``."""
    owners = metadata.packages_distributions()
    top = {name.partition(".")[0] for name in list(sys.modules)}
    return frozenset(canonicalize_name(d) for m in top for d in owners.get(m, ()))


def has_gpu() -> bool:
    """An NVIDIA GPU is attached (``nvidia-smi -L`` lists one)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def detect_environment() -> Environment:
    return Environment(colab="google.colab" in sys.modules, gpu=has_gpu(),
                       versions=installed_versions(), imported=imported_distributions())


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:  # pip's own message, not a CalledProcessError without it
        raise RuntimeError(f"{' '.join(argv[1:4])} failed:\n{proc.stderr[-3000:]}")
    return proc


def changed_imports(env: Environment, after: Mapping[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """Already-imported distributions whose version the install changed: name → (before, after)."""
    return {d: (env.versions.get(d), after.get(d)) for d in sorted(env.imported)
            if env.versions.get(d) != after.get(d)}


def install(env: Environment | None = None, requirements: Iterable[str] | None = None, *,
            run: Runner = _run, versions: Callable[[], Mapping[str, str]] = installed_versions,
            echo: Callable[[str], None] = print) -> InstallPlan:
    """Run :func:`plan_install` for ``env`` (default: this runtime); report restart and backend.

    ``run`` executes one command (argv) and ``versions`` reads the installed versions afterwards;
    tests replace both. The backend is asked of a fresh interpreter, so it is the one the
    notebook gets after a restart, not the jax this process may already hold.
    """
    env = detect_environment() if env is None else env
    plan = plan_install(env, requirements)
    if not env.colab:
        return plan
    echo(plan.jax)
    run([sys.executable, "-m", "pip", "install", "-q", *plan.pip_args])
    after = {canonicalize_name(k): v for k, v in versions().items()}
    if changed := changed_imports(env, after):
        names = ", ".join(f"{d} {a or '?'} → {b or 'removed'}" for d, (a, b) in changed.items())
        echo(RESTART_HINT.format(changed=names, verb="was" if len(changed) == 1 else "were"))
    probe = run([sys.executable, "-c", "import jax; print(jax.default_backend())"])
    backend = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else "unknown"
    echo(f"{PACKAGE} {after.get(canonicalize_name(PACKAGE), '?')}, jax {after.get('jax', '?')}, "
         f"backend: {backend}")
    if env.gpu and backend != "gpu":
        echo("warning: this runtime has a GPU but jax does not use it; restart the runtime")
    return plan


__all__ = ["Environment", "InstallPlan", "detect_environment", "install", "package_requirements",
           "plan_install", "tested_jax"]
