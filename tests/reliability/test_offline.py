"""Offline: the package never reaches for the network. An end-to-end CLI run (phantom → train
→ translate) succeeds inside a network namespace with no interfaces up, and importing every
submodule, building every model and a phantom attempts no connection at all."""

from __future__ import annotations

import json
import shlex

import pytest
from _reliability import PYTHON, run, unshare_prefix, unshare_works

NO_NETWORK_CHECK = """
import socket
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)  # TEST-NET-1: unreachable anyway
except OSError as err:
    print("network down:", err)
else:
    raise SystemExit("the network is reachable inside the namespace")
"""


@pytest.mark.slow
@pytest.mark.skipif(not unshare_works(), reason="this machine does not allow `unshare -n` or "
                    "`unshare -rn` (no network namespaces for this user), so the offline "
                    "end-to-end run cannot cut the network")
def test_end_to_end_cli_without_network(tmp_path, smoke_env):
    cli = f"{shlex.quote(PYTHON)} -m xmodality_lite"
    d = shlex.quote(str(tmp_path))
    tof = f"{d}/topcow/imagesTr/topcow_mr_whole_001_0000.nii.gz"
    script = " && ".join([
        f"{shlex.quote(PYTHON)} -c {shlex.quote(NO_NETWORK_CHECK)}",
        f"{cli} phantom --out {d}/topcow --n 1 --seed 5",
        f"{cli} train dit --out {d}/run --steps 2",
        f"{cli} translate {tof} {d}/cta_synth.nii.gz "
        f"--checkpoint {d}/run/checkpoints/step_0000002.safetensors --steps 2 --batch-size 32",
    ])
    proc = run([*unshare_prefix(), "bash", "-c", script], smoke_env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "network down" in proc.stdout

    import nibabel as nib
    import numpy as np

    out, src = nib.load(tmp_path / "cta_synth.nii.gz"), nib.load(tof)
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    hu = out.get_fdata()
    assert np.isfinite(hu).all() and hu.min() >= -50 and hu.max() <= 350  # the HU window


NO_CONNECT = """
import json, socket
attempts = []

def refuse(name):
    def blocked(*args, **kwargs):
        attempts.append([name, repr(args)[:200]])
        raise OSError(f"network disabled by the test ({name})")
    return blocked

socket.socket.connect = refuse("connect")
socket.socket.connect_ex = refuse("connect_ex")
socket.socket.sendto = refuse("sendto")
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")

import importlib
import xmodality_lite as xl
from flax import nnx
for name in xl._SUBMODULES:
    importlib.import_module(f"xmodality_lite.{name}")
models = {name: xl.count_params(name, "smoke") for name in ("unet", "adm", "uvit", "dit")}
model = xl.build_model("dit", "smoke", rngs=nnx.Rngs(0))
pair = xl.make_pair(0, "smoke")
print(json.dumps({"attempts": attempts, "params": models, "tof": list(pair.tof.shape)}))
"""


def test_import_and_build_make_no_network_attempt(smoke_env):
    proc = run([PYTHON, "-c", NO_CONNECT], smoke_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["attempts"] == []
    assert all(n > 0 for n in result["params"].values())
    assert result["tof"] == [44, 56, 24]  # the smoke profile's MR grid (config.py)
