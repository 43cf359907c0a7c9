"""The Colab install step over simulated runtimes: no pip runs, the runner is a stand-in."""

import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from xmodality_lite import __version__, colab
from xmodality_lite.colab import Environment, install, plan_install

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIREMENTS = PYPROJECT["project"]["dependencies"]
JAX_RANGE = str(Requirement(next(r for r in REQUIREMENTS if r.startswith("jax"))).specifier)
CUDA_JAX = {"jax": "0.10.2", "jaxlib": "0.10.2", "jax-cuda12-plugin": "0.10.2",
            "jax-cuda12-pjrt": "0.10.2", "numpy": "2.3.5", "xmodality-lite": __version__}


class Runner:
    """Records commands; answers the backend probe with ``backend``."""

    def __init__(self, backend="gpu"):
        self.calls, self.backend = [], backend

    def __call__(self, argv):
        self.calls.append(list(argv))
        out = f"{self.backend}\n" if "-c" in argv else ""
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")

    @property
    def pip_args(self):
        (pip,) = [c for c in self.calls if c[1:4] == ["-m", "pip", "install"]]
        return pip[pip.index("-q") + 1:]


def _install(env, after, backend="gpu"):
    run, lines = Runner(backend), []
    plan = install(env, REQUIREMENTS, run=run, versions=lambda: after, echo=lines.append)
    return plan, run, lines


def test_the_tested_range_is_pyprojects():
    assert str(colab.tested_jax(REQUIREMENTS).specifier) == JAX_RANGE
    # the installed package carries the same requirements (what install() reads in Colab)
    assert sorted(colab.package_requirements()) == sorted(str(Requirement(r)) for r in REQUIREMENTS)


def test_colab_gpu_with_a_fitting_jax_keeps_it():
    env = Environment(colab=True, gpu=True, versions=CUDA_JAX, imported=frozenset({"numpy"}))
    plan, run, lines = _install(env, after=CUDA_JAX)
    args = run.pip_args
    assert {"jax==0.10.2", "jaxlib==0.10.2", "jax-cuda12-plugin==0.10.2"} <= set(args)
    assert not any(a.startswith(("jax>", "jax<", "jax[")) for a in args)
    assert "numpy<2.4,>=2.0" in args and "flax<0.14,>=0.12.8" in args
    assert "keeping Colab's jax 0.10.2 (CUDA)" in plan.jax
    assert not any("Restart" in line for line in lines)
    assert lines[-1] == f"xmodality_lite {__version__}, jax 0.10.2, backend: gpu"


def test_colab_gpu_with_an_unfitting_jax_installs_the_cuda_build_and_asks_for_a_restart():
    old = {**CUDA_JAX, "jax": "0.4.33", "jaxlib": "0.4.33", "jax-cuda12-plugin": "0.4.33",
           "jax-cuda12-pjrt": "0.4.33", "numpy": "1.26.4"}
    env = Environment(colab=True, gpu=True, versions=old, imported=frozenset({"jax", "numpy"}))
    plan, run, lines = _install(env, after=CUDA_JAX)
    args = run.pip_args
    assert f"jax[cuda12]{JAX_RANGE}" in args  # never a bare jax: pip would pick a CPU wheel
    assert not any(a == f"jax{JAX_RANGE}" or a.startswith("jax==") for a in args)
    assert "outside the tested range" in plan.jax
    (restart,) = [line for line in lines if "Restart the runtime" in line]
    assert "jax 0.4.33 → 0.10.2" in restart and "numpy 1.26.4 → 2.3.5" in restart
    assert "\n" not in restart
    assert lines[-1].endswith("backend: gpu")


def test_colab_gpu_with_a_cpu_only_jax_in_range_gets_the_cuda_build():
    cpu = {"jax": "0.10.2", "jaxlib": "0.10.2"}
    plan = plan_install(Environment(colab=True, gpu=True, versions=cpu), REQUIREMENTS)
    assert f"jax[cuda12]{JAX_RANGE}" in plan.pip_args and "no CUDA plugin" in plan.jax


def test_colab_cpu_runtime_installs_plain_jax_of_the_range():
    plan = plan_install(Environment(colab=True, gpu=False, versions={"jax": "0.4.33"}), REQUIREMENTS)
    assert f"jax{JAX_RANGE}" in plan.pip_args
    assert not any("cuda" in a for a in plan.pip_args)
    keep = plan_install(Environment(colab=True, gpu=False, versions={"jax": "0.11.0"}), REQUIREMENTS)
    assert "jax==0.11.0" in keep.pip_args


def test_a_gpu_left_unused_is_reported():
    env = Environment(colab=True, gpu=True, versions=CUDA_JAX)
    _, _, lines = _install(env, after=CUDA_JAX, backend="cpu")
    assert "does not use it" in lines[-1]


def test_outside_colab_nothing_runs():
    env = Environment(colab=False, gpu=True, versions={"jax": "0.4.33"}, imported=frozenset({"jax"}))
    plan, run, lines = _install(env, after={})
    assert run.calls == [] and lines == [] and plan.pip_args == ()
    assert install(run=Runner(), echo=lines.append).pip_args == ()  # this machine: not Colab


def test_the_live_environment_here_is_not_colab():
    import numpy  # noqa: F401  (imported, so it must be reported as imported)

    env = colab.detect_environment()
    assert env.colab is False
    assert env.versions["jax"] and "numpy" in env.imported


def test_the_release_pin_matches_the_package_version():
    ref = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["ref"]
    assert ref == f"v{PYPROJECT['project']['version']}" == f"v{__version__}"


@pytest.mark.parametrize("bad", [[], ["numpy>=2"]])
def test_no_jax_requirement_is_an_error(bad):
    with pytest.raises(ValueError, match="no jax requirement"):
        colab.tested_jax(bad)
