"""Data parallelism: one step on two (simulated CPU) devices equals one step on one device
with the same global batch. Runs in a subprocess because the device count is fixed when JAX
starts."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    from _tiny import TinyData, TinyModel
    from xmodality_lite import parallel
    from xmodality_lite.config import get_profile
    from xmodality_lite.training import make_optimizer, make_train_step

    assert jax.local_device_count() == 2, jax.devices()
    tof, cta = TinyData(batch_size=4, size=8).batch_at(0)
    key = jax.random.key(3)

    def one_step(mesh):
        model = TinyModel(rngs=nnx.Rngs(0))
        opt = make_optimizer(model, get_profile("smoke"))
        graphdef, state = nnx.split((model, opt, None))
        step = make_train_step(graphdef, gamma=5.0, ema_decay=0.0)
        x, y = tof, cta
        if mesh is not None:
            state = parallel.replicate(state, mesh)
            x, y = parallel.shard_batch((tof, cta), mesh)
            assert len(x.sharding.device_set) == 2 and x.addressable_shards[0].data.shape[0] == 2
        state, loss = step(state, x, y, key)
        nnx.update((model, opt, None), state)
        return model, float(loss)

    single, loss1 = one_step(None)
    double, loss2 = one_step(parallel.data_mesh())
    np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
    a, b = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (single, double))
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)
    before = jax.tree.leaves(nnx.state(TinyModel(rngs=nnx.Rngs(0)), nnx.Param))
    assert any(not np.allclose(u, v) for u, v in zip(a, before)), "the step changed nothing"
    try:
        parallel.shard_batch(np.zeros((3, 2)), parallel.data_mesh())
    except ValueError as err:
        assert "not divisible by the 2 devices" in str(err)
    else:
        raise AssertionError("odd batch accepted")
    print("OK")
""")


def test_two_devices_equal_one(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stderr[-3000:]
