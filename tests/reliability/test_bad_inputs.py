"""Bad inputs, through the public API and the CLI: each gives ONE clear error that names the
argument or file and what was expected, and nothing is left behind in the output folder.

Two tables, one row per case: ``API_CASES`` (the functions) and ``CLI_CASES`` (the command
line's ``main(argv)``: exit status != 0, one error line on stderr, no exception escaping).
Both run in this process: a child process per row cost ~3 s of interpreter and JAX start-up
each, for nothing ``main`` does not already show. That ``python -m xmodality_lite`` turns
``main``'s status into the exit status, with one error line and no traceback, is checked on
real child processes in ``tests/test_cli.py::test_errors_are_one_line``. A row marked ``xfail`` is a gap in the package, not a relaxed test: the row
states what the package should do, and ``strict=True`` reports it the day it is fixed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from _reliability import snapshot


@dataclass(frozen=True)
class Case:
    """``call(inp, out)`` must raise ``error`` whose message holds every ``needs`` fragment
    (``{inp}``/``{out}`` become the input and output folders)."""

    id: str
    call: Callable[[Path, Path], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    needs: tuple[str, ...]
    prepare: Callable[[Path, Path], None] | None = None
    gap: str | None = None  # why this is expected to fail today, and in which file


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
    return pytest.param(case, id=case.id, marks=marks)


# ------------------------------------------------------------------------------ lazy helpers
_MODELS: dict[str, Any] = {}


def smoke_model(name: str):
    """A smoke-size model (random init), built once per session."""
    if name not in _MODELS:
        from flax import nnx

        from xmodality_lite.models import build_model

        _MODELS[name] = build_model(name, "smoke", rngs=nnx.Rngs(0))
    return _MODELS[name]


def image(data, dtype=np.float32) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data, dtype), np.eye(4))


def io():
    from xmodality_lite import io

    return io


def ckpt():
    from xmodality_lite import checkpoint

    return checkpoint


def translate_volume(tof, **kw):
    from xmodality_lite.reconstruction import translate_volume

    return translate_volume(kw.pop("model", smoke_model("unet")), tof, progress=False,
                            profile="smoke", **kw)


def sample(**kw):
    import jax
    import jax.numpy as jnp

    from xmodality_lite.diffusion import sample

    args = {"name": "ddim", "cond": jnp.zeros((1, 32, 32, 1)), "steps": 2}
    args.update(kw)
    return sample(args["name"], smoke_model("dit"), args["cond"], jax.random.key(0),
                  steps=args["steps"])


def model_call(name: str, size: int):
    import jax.numpy as jnp

    x = jnp.zeros((1, size, size, 1))
    return smoke_model(name)(x, x, jnp.zeros((1,)))


class StubData:
    """Batches of zeros, so argument checks do not wait for the phantom dataset."""

    def batch_at(self, step):
        z = np.zeros((4, 32, 32, 1), np.float32)
        return z, z


def train(name="dit", **kw):
    from xmodality_lite.training import train

    return train(name, "smoke", data=StubData(), progress=False, **kw)


def pair(pid, tof, cta):
    from xmodality_lite.preprocessing import VolumePair

    return VolumePair(pid, np.asarray(tof, np.float32), np.asarray(cta, np.float32))


def _copy_unet_ckpt_into_run(inp: Path, out: Path) -> None:
    (out / "run" / "checkpoints").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(inp / f"unet{suffix}", out / "run" / "checkpoints" / f"step_0000002{suffix}")


def _existing(name: str) -> Callable[[Path, Path], None]:
    return lambda inp, out: (out / name).write_bytes(b"already here")


def _all_dropped(inp: Path, out: Path):
    """An empty (all-zero) volume: the slice filter drops every slice; no batch can be drawn."""
    from xmodality_lite.preprocessing import BatchIterator, build_slice_dataset

    zeros = np.zeros((24, 24, 6))
    sets = build_slice_dataset([pair("p0", zeros, zeros)], "smoke",
                               cache_dir=inp.parent / "scratch-cache", progress=False)
    return BatchIterator(sets["train"], 4, 0, 32)


# ------------------------------------------------------------------------------ API table
API_CASES = [
    # NIfTI input files
    Case("load-not-nifti", lambda i, o: io().load_nifti(i / "notnifti.txt"), ValueError,
         ("notnifti.txt", ".nii")),
    Case("load-missing", lambda i, o: io().load_nifti(i / "missing.nii.gz"), FileNotFoundError,
         ("missing.nii.gz", "no such file")),
    Case("load-garbage-bytes", lambda i, o: io().load_nifti(i / "garbage.nii.gz"), ValueError,
         ("garbage.nii.gz", "not a readable NIfTI")),
    Case("load-2d", lambda i, o: io().load_nifti(i / "img2d.nii.gz"), ValueError,
         ("img2d.nii.gz", "3D", "(16, 16)")),
    Case("load-4d", lambda i, o: io().load_nifti(i / "img4d.nii.gz"), ValueError,
         ("img4d.nii.gz", "3D", "(16, 16, 4, 2)")),
    Case("load-zero-size-axis", lambda i, o: io().load_nifti(i / "empty.nii.gz"), ValueError,
         ("empty.nii.gz", "empty axis")),
    Case("load-nan-voxels", lambda i, o: io().load_nifti(i / "nan.nii.gz"), ValueError,
         ("nan.nii.gz", "finite")),
    Case("load-inf-voxels", lambda i, o: io().load_nifti(i / "inf.nii.gz"), ValueError,
         ("inf.nii.gz", "finite")),
    # volumes handed to translate_volume in memory
    Case("translate-nan-voxels",
         lambda i, o: translate_volume(nib.load(i / "nan.nii.gz")), ValueError,
         ("tof", "non-finite")),
    Case("translate-2d-image", lambda i, o: translate_volume(image(np.ones((8, 8)))),
         ValueError, ("tof", "3-D", "(8, 8)")),
    Case("translate-zero-size-axis",
         lambda i, o: translate_volume(image(np.zeros((0, 8, 4)))), ValueError,
         ("tof", "empty")),
    Case("translate-complex-dtype",
         lambda i, o: translate_volume(nib.load(i / "complex.nii.gz")), ValueError,
         ("tof", "complex")),
    Case("translate-size-not-divisible",
         lambda i, o: translate_volume(nib.load(i / "tof.nii.gz"), model=smoke_model("dit"),
                                       image_size=30), ValueError,
         ("divisible by patch_size 4", "30")),
    Case("translate-file-out-under-a-file",
         lambda i, o: _translate_file(i / "tof.nii.gz", i / "afile" / "cta.nii.gz"),
         (FileNotFoundError, NotADirectoryError), ("afile", "cta.nii.gz")),
    # the models themselves
    *[Case(f"{name}-size-not-divisible", lambda i, o, n=name: model_call(n, 30), ValueError,
           ("divisible by", "30")) for name in ("unet", "adm", "uvit", "dit")],
    Case("unknown-model", lambda i, o: smoke_model("resnet"), ValueError,
         ("'resnet'", "'adm'", "'dit'")),
    Case("unknown-variant", lambda i, o: _build("adm", variant="fancy"), ValueError,
         ("'fancy'", "corrected")),
    Case("unknown-profile", lambda i, o: _build("adm", profile="huge"), ValueError,
         ("'huge'", "smoke")),
    Case("phantom-unknown-override", lambda i, o: _make_pair(bogus=1), ValueError,
         ("bogus", "choose from")),
    # sampling
    Case("sample-steps-0", lambda i, o: sample(steps=0), ValueError, ("steps", ">= 1", "0")),
    Case("sample-steps-negative", lambda i, o: sample(steps=-3), ValueError,
         ("steps", ">= 1", "-3")),
    Case("sample-unknown-sampler", lambda i, o: sample(name="euler"), ValueError,
         ("'euler'", "ddim", "ddpm")),
    Case("sample-integer-cond", lambda i, o: sample(cond=np.zeros((1, 32, 32, 1), np.int32)),
         ValueError, ("cond", "floating", "int32")),
    Case("translate-slices-steps-0",
         lambda i, o: _translate_slices(np.zeros((2, 32, 32, 1)), steps=0), ValueError,
         ("steps", "0")),
    Case("translate-slices-not-nhwc",
         lambda i, o: _translate_slices(np.zeros((2, 32, 32))), ValueError,
         ("tof_slices", "[N, H, W, 1]", "(2, 32, 32)")),
    # training
    Case("train-steps-negative", lambda i, o: train(steps=-1, out_dir=o / "run"), ValueError,
         ("steps", ">= 0", "-1")),
    Case("train-unknown-model", lambda i, o: train("resnet", steps=1, out_dir=o / "run"),
         ValueError, ("'resnet'", "'dit'")),
    Case("train-resume-other-model", lambda i, o: train("dit", steps=4, out_dir=o / "run"),
         ValueError, ("step_0000002.safetensors", "'unet'", "'dit'"),
         prepare=_copy_unet_ckpt_into_run),
    # checkpoints
    Case("ckpt-missing", lambda i, o: ckpt().load_model(i / "missing.safetensors"),
         FileNotFoundError, ("missing.safetensors", "no such checkpoint")),
    Case("ckpt-truncated", lambda i, o: ckpt().load_model(i / "truncated.safetensors"),
         ValueError, ("truncated.safetensors",)),
    Case("ckpt-random-bytes", lambda i, o: ckpt().load_model(i / "random.safetensors"),
         ValueError, ("random.safetensors", "checkpoint")),
    Case("ckpt-flipped-bit", lambda i, o: ckpt().load_model(i / "flipped.safetensors"),
         ValueError, ("flipped.safetensors", "checksum")),
    Case("ckpt-foreign-format", lambda i, o: ckpt().load_model(i / "published_unet.safetensors"),
         ValueError, ("published_unet.safetensors", "not an xmodality_lite checkpoint")),
    Case("ckpt-other-model-named",
         lambda i, o: ckpt().load_checkpoint(i / "unet.safetensors", smoke_model("adm"),
                                             model_name="adm"),
         ValueError, ("unet.safetensors", "'unet'", "'adm'")),
    Case("ckpt-other-model-unnamed",
         lambda i, o: ckpt().load_checkpoint(i / "unet.safetensors", smoke_model("dit")),
         ValueError, ("unet.safetensors", "wrong model")),
    Case("ckpt-other-profile",
         lambda i, o: ckpt().load_checkpoint(i / "dit.safetensors", smoke_model("dit"),
                                             model_name="dit", profile="cpu"),
         ValueError, ("dit.safetensors", "'smoke'", "'cpu'")),
    Case("ckpt-save-wrong-suffix",
         lambda i, o: _save_ckpt(o / "model.ckpt"), ValueError, ("model.ckpt", ".safetensors")),
    Case("ckpt-save-under-a-file",
         lambda i, o: _save_ckpt(i / "afile" / "step.safetensors"),
         (FileNotFoundError, NotADirectoryError), ("afile", "step.safetensors")),
    Case("published-missing", lambda i, o: _load_published("unet", i / "missing.safetensors"),
         FileNotFoundError, ("missing.safetensors",)),
    Case("published-other-model",
         lambda i, o: _load_published("adm", i / "published_unet.safetensors"), ValueError,
         ("published_unet.safetensors", "key")),
    Case("published-corrupted", lambda i, o: _load_published("unet", i / "random.safetensors"),
         ValueError, ("random.safetensors",)),
    # writing outputs
    Case("save-exists-no-overwrite",
         lambda i, o: io().save_nifti(np.zeros((4, 4, 4)), o / "cta.nii.gz", affine=np.eye(4),
                                      overwrite=False),
         FileExistsError, ("cta.nii.gz", "already exists"), prepare=_existing("cta.nii.gz")),
    Case("write-exists-no-overwrite",
         lambda i, o: io().atomic_write_text(o / "notes.txt", "new", overwrite=False),
         FileExistsError, ("notes.txt", "already exists"), prepare=_existing("notes.txt")),
    Case("save-not-nifti-name",
         lambda i, o: io().save_nifti(np.zeros((4, 4, 4)), o / "cta.txt", affine=np.eye(4)),
         ValueError, ("cta.txt", ".nii")),
    Case("save-under-a-file",
         lambda i, o: io().save_nifti(np.zeros((4, 4, 4)), i / "afile" / "cta.nii.gz",
                                      affine=np.eye(4)),
         (FileNotFoundError, NotADirectoryError), ("afile", "cta.nii.gz")),
    Case("save-into-proc",
         lambda i, o: io().save_nifti(np.zeros((4, 4, 4)), "/proc/cta.nii.gz", affine=np.eye(4)),
         OSError, ("/proc/cta.nii.gz",)),
    Case("save-object-dtype",
         lambda i, o: io().save_nifti(np.zeros((4, 4, 4)), o / "cta.nii.gz", affine=np.eye(4),
                                      dtype=object),
         ValueError, ("cta.nii.gz", "dtype", "object")),
    # data
    Case("layout-n-0", lambda i, o: _layout(o, n=0), ValueError, ("n", "1…999", "0")),
    Case("layout-unknown-edition", lambda i, o: _layout(o, n=1, edition="2025"), ValueError,
         ("'2025'", "2023", "2024")),
    Case("pair-tof-cta-mismatch",
         lambda i, o: _slice_dataset([pair("p0", np.zeros((24, 24, 6)), np.zeros((24, 20, 6)))],
                                     o / "cache"),
         ValueError, ("pair p0", "one grid", "(24, 20, 6)")),
    Case("empty-volume-no-slices", lambda i, o: _all_dropped(i, o), ValueError,
         ("no slices",)),
    Case("metrics-shape-mismatch",
         lambda i, o: _volume_metrics(np.zeros((8, 8, 8)), np.zeros((8, 8, 7))), ValueError,
         ("(8, 8, 8)", "(8, 8, 7)", "differ in shape")),
    Case("register-2d-image",
         lambda i, o: _register(image(np.ones((8, 8))), image(np.ones((8, 8, 8)))),
         ValueError, ("tof", "3-D")),
]


def _build(name, profile="smoke", variant="published"):
    from flax import nnx

    from xmodality_lite.models import build_model

    return build_model(name, profile, rngs=nnx.Rngs(0), variant=variant)


def _make_pair(**overrides):
    from xmodality_lite.data.phantom import make_pair

    return make_pair(0, "smoke", **overrides)


def _translate_slices(x, **kw):
    from xmodality_lite.translation import translate_slices

    return translate_slices(smoke_model("dit"), x, progress=False, profile="smoke", **kw)


def _translate_file(tof, out):
    from xmodality_lite.reconstruction import translate_file

    return translate_file(smoke_model("unet"), tof, out, progress=False, profile="smoke")


def _save_ckpt(path):
    import jax

    return ckpt().save_checkpoint(path, smoke_model("unet"), None, 1, jax.random.key(0),
                                  {"model": "unet", "profile": "smoke"})


def _load_published(name, path):
    from xmodality_lite.models.published import load_published

    return load_published(name, path, profile="smoke")


def _layout(out, **kw):
    from xmodality_lite.data.layout import write_topcow_layout

    return write_topcow_layout(out / "topcow", seed=0, profile="smoke", **kw)


def _slice_dataset(pairs, cache_dir):
    from xmodality_lite.preprocessing import build_slice_dataset

    return build_slice_dataset(pairs, "smoke", cache_dir=cache_dir, progress=False)


def _volume_metrics(a, b):
    from xmodality_lite.metrics import volume_metrics

    return volume_metrics(a, b)


def _register(tof, cta):
    from xmodality_lite.registration import register_tof_to_cta

    return register_tof_to_cta(tof, cta)


def _fragments(case: Case, inp: Path, out: Path) -> list[str]:
    return [f.replace("{inp}", str(inp)).replace("{out}", str(out)) for f in case.needs]


@pytest.mark.parametrize("case", [_param(c) for c in API_CASES])
def test_api_bad_input(case: Case, inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    if case.prepare:
        case.prepare(inputs, out)
    before = snapshot(inputs, out)
    with pytest.raises(case.error) as info:
        case.call(inputs, out)
    message = str(info.value)
    missing = [f for f in _fragments(case, inputs, out) if f not in message]
    assert not missing, f"{type(info.value).__name__}: {message!r} lacks {missing}"
    after = snapshot(inputs, out)
    assert after == before, f"files written or changed: {sorted(set(after.items()) ^ set(before.items()))}"


# ------------------------------------------------------------------------------ CLI table
@dataclass(frozen=True)
class CliCase:
    """``python -m xmodality_lite <args>``; ``{inp}``/``{out}`` are substituted in args."""

    id: str
    args: tuple[str, ...]
    needs: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    prepare: Callable[[Path, Path], None] | None = None
    gap: str | None = None


def _tr(tof: str, out: str = "{out}/cta.nii.gz", ckpt_name: str = "unet", *extra: str):
    return ("translate", f"{{inp}}/{tof}", out, "--checkpoint",
            f"{{inp}}/{ckpt_name}.safetensors", *extra)


CLI_CASES = [
    CliCase("unknown-model", ("train", "resnet", "--out", "{out}/run"),
            ("argument model", "'resnet'", "'dit'")),
    CliCase("unknown-profile-flag", ("info", "--profile", "huge"),
            ("argument --profile", "'huge'", "'smoke'")),
    CliCase("unknown-profile-env", ("info",), ("'huge'", "smoke"),
            env=(("XMODALITY_PROFILE", "huge"),)),
    CliCase("steps-not-an-integer", ("train", "dit", "--out", "{out}/run", "--steps", "many"),
            ("--steps", "'many'")),
    CliCase("train-steps-negative", ("train", "dit", "--out", "{out}/run", "--steps", "-1"),
            ("steps", ">= 0", "-1")),
    CliCase("train-resume-other-model", ("train", "dit", "--out", "{out}/run", "--steps", "4"),
            ("step_0000002.safetensors", "'unet'", "'dit'"), prepare=_copy_unet_ckpt_into_run),
    CliCase("phantom-n-0", ("phantom", "--out", "{out}/topcow", "--n", "0"),
            ("n must be", "1…999", "0")),
    CliCase("phantom-out-under-a-file", ("phantom", "--out", "{inp}/afile/topcow", "--n", "1"),
            ("afile",)),
    CliCase("translate-missing-tof", _tr("missing.nii.gz"), ("missing.nii.gz", "no such file")),
    CliCase("translate-not-nifti", _tr("notnifti.txt"), ("notnifti.txt", ".nii")),
    CliCase("translate-garbage-nifti", _tr("garbage.nii.gz"),
            ("garbage.nii.gz", "not a readable NIfTI")),
    CliCase("translate-2d", _tr("img2d.nii.gz"), ("img2d.nii.gz", "3D")),
    CliCase("translate-4d", _tr("img4d.nii.gz"), ("img4d.nii.gz", "3D")),
    CliCase("translate-zero-size-axis", _tr("empty.nii.gz"), ("empty.nii.gz", "empty axis")),
    CliCase("translate-nan", _tr("nan.nii.gz"), ("nan.nii.gz", "finite")),
    CliCase("translate-complex", _tr("complex.nii.gz"), ("complex.nii.gz", "complex")),
    CliCase("translate-missing-checkpoint", _tr("tof.nii.gz", ckpt_name="missing"),
            ("missing.safetensors", "no such checkpoint")),
    CliCase("translate-truncated-checkpoint", _tr("tof.nii.gz", ckpt_name="truncated"),
            ("truncated.safetensors",)),
    CliCase("translate-random-checkpoint", _tr("tof.nii.gz", ckpt_name="random"),
            ("random.safetensors", "checkpoint")),
    CliCase("translate-flipped-checkpoint", _tr("tof.nii.gz", ckpt_name="flipped"),
            ("flipped.safetensors", "checksum")),
    CliCase("translate-foreign-checkpoint", _tr("tof.nii.gz", ckpt_name="published_unet"),
            ("published_unet.safetensors", "not an xmodality_lite checkpoint")),
    CliCase("translate-steps-0", _tr("tof.nii.gz", "{out}/cta.nii.gz", "dit", "--steps", "0"),
            ("steps", ">= 1", "0")),
    CliCase("translate-steps-negative",
            _tr("tof.nii.gz", "{out}/cta.nii.gz", "dit", "--steps", "-4"), ("steps", "-4")),
    CliCase("translate-size-not-divisible",
            _tr("tof.nii.gz", "{out}/cta.nii.gz", "dit", "--image-size", "30"),
            ("divisible by patch_size 4", "30")),
    CliCase("translate-out-not-nifti", _tr("tof.nii.gz", "{out}/cta.txt"), ("cta.txt", ".nii")),
    CliCase("translate-out-under-a-file", _tr("tof.nii.gz", "{inp}/afile/cta.nii.gz"),
            ("afile", "cta.nii.gz")),
    CliCase("translate-out-into-proc", _tr("tof.nii.gz", "/proc/cta.nii.gz"),
            ("/proc/cta.nii.gz",)),
    CliCase("translate-out-exists", _tr("tof.nii.gz"), ("cta.nii.gz", "already exists"),
            prepare=_existing("cta.nii.gz")),
    CliCase("translate-out-folder-missing", _tr("tof.nii.gz", "{out}/missing/cta.nii.gz"),
            ("missing", "does not exist")),
]


def _sub(arg: str, inp: Path, out: Path) -> str:
    return arg.replace("{inp}", str(inp)).replace("{out}", str(out))


def _main(args: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``xmodality_lite.cli.main(args)`` with ``env`` set: (exit status, stdout, stderr).
    argparse's usage errors exit through SystemExit, as they do from the shell."""
    from xmodality_lite.cli import main

    monkeypatch.setenv("XMODALITY_PROFILE", "smoke")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    try:
        status = main(args)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("case", [_param(c) for c in CLI_CASES])
def test_cli_bad_input(case: CliCase, inputs: Path, tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    if case.prepare:
        case.prepare(inputs, out)
    before = snapshot(inputs, out)
    # an exception other than SystemExit escaping main() fails the test with its traceback
    status, stdout, err = _main([_sub(a, inputs, out) for a in case.args], dict(case.env),
                                monkeypatch, capsys)
    assert status != 0, f"exit status 0; stdout: {stdout[-500:]}"
    error_lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, f"expected one error line, got:\n{err[-2000:]}"
    missing = [f for f in (_sub(n, inputs, out) for n in case.needs) if f not in error_lines[0]]
    assert not missing, f"{error_lines[0]!r} lacks {missing}"
    after = snapshot(inputs, out)
    assert after == before, f"files written or changed: {sorted(set(after.items()) ^ set(before.items()))}"
