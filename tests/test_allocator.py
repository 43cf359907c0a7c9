"""The memory allocator (``xmodality_lite.allocator``): TCMalloc where installed, glibc's otherwise.

What is tested: the environment a child process gets (``LD_PRELOAD`` first, other preloads kept,
``XMODALITY_MALLOC=glibc`` honoured), that such a child really runs on TCMalloc (its own memory
map, not our word for it), that the CLI restarts itself on it and the Jupyter kernel starts on it,
and that a train step gives the same bits on either allocator. ``make env`` installs TCMalloc
where apt-get exists; where it is not installed every expectation below is glibc's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xmodality_lite import allocator

LIBRARY = allocator.tcmalloc_library()
EXPECTED = "tcmalloc" if LIBRARY else "glibc"


def _python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ld.so" not in proc.stderr and "large alloc" not in proc.stderr, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def installed(monkeypatch):
    """Pretend TCMalloc is installed under ``name`` (the loader is not asked)."""
    def pretend(name="libtcmalloc_minimal.so.4"):
        allocator.tcmalloc_library.cache_clear()
        monkeypatch.setattr(allocator.ctypes.util, "find_library",
                            lambda lib: name if lib == allocator.LIBRARY else None)
    yield pretend
    allocator.tcmalloc_library.cache_clear()


def test_environment_preloads_tcmalloc_first_and_keeps_other_preloads(installed):
    installed()
    env = allocator.environment({"LD_PRELOAD": "libother.so libtcmalloc_minimal.so.4", "A": "1"})
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libother.so"
    assert env["A"] == "1" and int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    assert allocator.without(env) == {"LD_PRELOAD": "libother.so", "A": "1",
                                      "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD":
                                      env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]}
    assert "LD_PRELOAD" not in allocator.without({"LD_PRELOAD": "libtcmalloc_minimal.so.4"})


@pytest.mark.parametrize("setting", ["glibc", "0", "off", " GLIBC "])
def test_glibc_setting_or_a_missing_library_leaves_the_environment_alone(installed, setting):
    installed()
    env = {"XMODALITY_MALLOC": setting, "LD_PRELOAD": "libother.so"}
    assert allocator.environment(env) == env
    installed(None)
    assert allocator.environment({"A": "1"}) == {"A": "1"}


def test_a_child_started_with_the_environment_runs_on_tcmalloc():
    code = "from xmodality_lite import allocator; print(allocator.in_use())"
    assert _python(code, allocator.environment()) == EXPECTED
    assert _python(code, allocator.without()) == "glibc"
    assert _python(code, allocator.environment({**allocator.without(),
                                                "XMODALITY_MALLOC": "glibc"})) == "glibc"


def test_the_command_line_restarts_itself_on_tcmalloc():
    def info(**extra):
        env = {**allocator.without(), **extra}
        out = subprocess.run([sys.executable, "-m", "xmodality_lite", "info", "--profile", "smoke"],
                             env=env, text=True, capture_output=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return next(line for line in out.stdout.splitlines() if line.startswith("memory allocator"))

    assert info().startswith(f"memory allocator: {EXPECTED}")
    assert info(XMODALITY_MALLOC="glibc").startswith("memory allocator: glibc")


def test_shell_words_for_make_name_the_library():
    proc = subprocess.run([sys.executable, "-m", "xmodality_lite.allocator", "--env"],
                          env=allocator.without(), text=True, capture_output=True, check=True)
    words = dict(w.split("=", 1) for w in proc.stdout.split())
    assert words.get("LD_PRELOAD") == LIBRARY
    proc = subprocess.run([sys.executable, "-m", "xmodality_lite.allocator", "--env"],
                          env={**allocator.without(), "XMODALITY_MALLOC": "glibc"}, text=True,
                          capture_output=True, check=True)
    assert proc.stdout.strip() == ""


def test_the_jupyter_kernel_starts_on_tcmalloc():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")  # the one `make env` installs
    assert spec.env.get("LD_PRELOAD") == LIBRARY


TRAIN_STEPS = """
import hashlib, jax, jax.numpy as jnp, numpy as np
from flax import nnx
from xmodality_lite import allocator, training
from xmodality_lite.config import get_profile
prof = get_profile("smoke"); cfg = prof.train
run = training.start_run("adm", prof, cfg.seed)
graphdef, state = nnx.split((run.model, run.optimizer, run.ema))
step = training.make_train_step(graphdef, gamma=cfg.min_snr_gamma, ema_decay=cfg.ema_decay,
                                ema_warmup=cfg.ema_warmup)
rng = np.random.default_rng(0)
shape = (cfg.batch_size, prof.image_size, prof.image_size, 1)
tof, cta = (jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32) for _ in range(2))
for i in range(3):
    state, loss = step(state, tof, cta, jax.random.fold_in(jax.random.key(0), i))
digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(state)))
print(json.dumps([allocator.in_use(), digest.hexdigest(), float(loss)]))
"""


def test_train_steps_give_the_same_bits_on_either_allocator():
    code = "import json\n" + TRAIN_STEPS
    ours = json.loads(_python(code, allocator.environment()))
    glibc = json.loads(_python(code, allocator.without()))
    assert ours[0] == EXPECTED and glibc[0] == "glibc"
    assert ours[1:] == glibc[1:]
