"""Crash safety: SIGKILL a smoke training run at seeded random moments, resume it, and end with
parameters bit-identical to a run that never stopped; a kill while a checkpoint is being
written never leaves a checkpoint that loads as valid but holds other values."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from _reliability import PYTHON, REPO, run

STEPS = 12
SEED = 20241  # chooses the kill moments
TRAIN = """
import dataclasses, sys
from xmodality_lite.config import get_profile
from xmodality_lite.training import train
p = get_profile("smoke")
p = p.replace(train=dataclasses.replace(p.train, checkpoint_every=2, log_every=1))
train("dit", p, steps=int(sys.argv[2]), out_dir=sys.argv[1], progress=False)
"""


def _logged_steps(run_dir: Path) -> list[int]:
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        return []
    steps = []
    for line in log.read_text().splitlines():
        try:  # the last line may be half written at the moment we look
            steps.append(int(line.split('"step": ')[1].split(",")[0]))
        except (IndexError, ValueError):
            pass
    return steps


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*.safetensors"))


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("training made no progress")
        time.sleep(0.01)
    return False


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, timeout: float = 240) -> None:
    """Return once ``proc`` has logged a step (its programs compiled) or finished."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not _logged_steps(run_dir):
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("training made no progress")
        time.sleep(0.05)


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _loss_log(run_dir: Path) -> list[tuple[int, float]]:
    from xmodality_lite.training import read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.slow
def test_killed_and_resumed_training_is_bit_identical(tmp_path, smoke_env):
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    start = lambda d: subprocess.Popen(  # noqa: E731
        [PYTHON, "-c", TRAIN, str(d), str(STEPS)], env=smoke_env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reference = start(ref_dir)  # runs beside the killed chain, once it has compiled:
    _wait_for_step(reference, ref_dir)  # its programs are then in the cache the chain reads

    rng = random.Random(SEED)
    # kill 1: mid-way between two checkpoints (the resumed run repeats steps and trims its log);
    # kill 2: the instant a new checkpoint file appears
    after_step = rng.randint(3, 5)
    kills = [lambda: any(s >= after_step for s in _logged_steps(run_dir)),
             lambda: len(_checkpoints(run_dir)) > n_before]
    killed_at = []
    for ready in kills:
        n_before = len(_checkpoints(run_dir))
        proc = start(run_dir)
        assert _kill_when(proc, ready), "the run finished before it could be killed"
        assert proc.returncode == -signal.SIGKILL
        killed_at.append(max(_logged_steps(run_dir), default=0))
    assert _checkpoints(run_dir) and max(killed_at) < STEPS  # the last run resumes mid-way
    final = run([PYTHON, "-c", TRAIN, str(run_dir), str(STEPS)], smoke_env, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    name = f"step_{STEPS:07d}.safetensors"
    want, got = _tensors(ref_dir / "checkpoints" / name), _tensors(run_dir / "checkpoints" / name)
    assert sorted(got) == sorted(want)
    differ = [k for k in want if want[k].dtype != got[k].dtype or want[k].shape != got[k].shape
              or want[k].tobytes() != got[k].tobytes()]
    assert not differ, f"killed at steps {killed_at}; tensors differ: {differ[:5]}"
    assert any(k.startswith("opt/") for k in want) and "rng/key" in want
    # the resumed log holds each step once, with the uninterrupted run's losses
    assert _loss_log(run_dir) == _loss_log(ref_dir)


WRITER = """
import sys
from pathlib import Path
import jax, jax.numpy as jnp
from flax import nnx
from xmodality_lite.checkpoint import checkpoint_name, latest_checkpoint, read_metadata, save_checkpoint

class Weights(nnx.Module):  # 16 MB, so most of the loop is spent writing
    def __init__(self):
        self.w = nnx.Param(jnp.zeros((2048, 2048)))

folder, model = Path(sys.argv[1]), Weights()
last = latest_checkpoint(folder)
step = 1 if last is None else read_metadata(last)["step"] + 1
meta = {"model": "weights", "profile": "smoke"}
while True:
    model.w.set_value(jnp.full((2048, 2048), float(step)))
    save_checkpoint(folder / checkpoint_name(step), model, None, step, jax.random.key(step), meta)
    save_checkpoint(folder / "latest.safetensors", model, None, step, jax.random.key(step), meta)
    step += 1
"""


def _held_step(path: Path) -> tuple[int, float]:
    """(metadata step, value of the weights) of a checkpoint that loads."""
    from xmodality_lite.checkpoint import _read

    meta, tensors = _read(path)
    w = tensors["model/w"]
    assert np.all(w == w.flat[0]), f"{path}: mixed weights"
    return meta["step"], float(w.flat[0])


@pytest.mark.slow
def test_kill_during_checkpoint_write_leaves_no_wrong_checkpoint(tmp_path, smoke_env):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    rng = random.Random(SEED)
    count = lambda: len(list(folder.glob("step_*.safetensors")))  # noqa: E731
    for _ in range(3):
        n_before, delay = count(), rng.uniform(0.05, 0.6)
        proc = subprocess.Popen([PYTHON, "-c", WRITER, str(folder)], env=smoke_env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # once it writes, let it run a seeded random while, then kill wherever it is
        assert _kill_when(proc, lambda n=n_before, d=delay: count() > n and not time.sleep(d)), \
            proc.stderr.read()[-2000:]

    from xmodality_lite.checkpoint import latest_checkpoint

    steps = []
    for path in sorted(folder.glob("step_*.safetensors")):
        step, value = _held_step(path)  # every file under a final name is complete and right
        assert step == value == int(path.stem.removeprefix("step_")), path
        steps.append(step)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3  # >= 1 per run
    assert _held_step(latest_checkpoint(folder))[0] == steps[-1]
    # the overwritten file: either it loads and is self-consistent, or it is refused clearly
    try:
        step, value = _held_step(folder / "latest.safetensors")
        assert step == value and 1 <= step <= steps[-1]  # a kill may land before its update
    except ValueError as err:
        assert "latest" in str(err)
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert all(".tmp." in n for n in leftovers), leftovers  # only hidden temporaries remain


def test_kill_between_tensor_file_and_sidecar_is_refused_or_right(tmp_path, monkeypatch):
    """Overwriting a checkpoint renames the tensor file, then its JSON sidecar. A crash
    between the two leaves a new file beside the old sidecar: it must not load as the old
    checkpoint, nor load with the new metadata but old values."""
    import jax
    from flax import nnx

    from xmodality_lite import checkpoint

    model = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
    path = tmp_path / "model.safetensors"
    meta = {"model": "linear", "profile": "smoke"}
    checkpoint.save_checkpoint(path, model, None, 1, jax.random.key(0), meta)
    model.kernel.set_value(model.kernel.get_value() + 1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # stands for SIGKILL after the tensor file is in place

    monkeypatch.setattr(checkpoint, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(path, model, None, 2, jax.random.key(0), meta)
    monkeypatch.undo()
    fresh = nnx.Linear(4, 4, rngs=nnx.Rngs(1))
    try:
        loaded = checkpoint.load_checkpoint(path, fresh)
    except ValueError as err:
        assert path.name in str(err) and "model.json" in str(err)
        return
    assert loaded.step == 2
    np.testing.assert_array_equal(fresh.kernel.get_value(), model.kernel.get_value())

