"""The command line, run as users run it: ``python -m xmodality_lite`` in a subprocess."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from xmodality_lite.checkpoint import SHIPPED_DIR, load_model
from xmodality_lite.cli import build_parser, default_translate_model, registries
from xmodality_lite.io import file_sha256
from xmodality_lite.models import MODELS

COMMANDS = ["phantom", "register", "preprocess", "train", "sample", "translate", "evaluate",
            "info", "train-shipped"]


def cli(*args, cwd, timeout=600):
    env = {**os.environ, "XMODALITY_PROFILE": "smoke", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "xmodality_lite", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(run, *words):
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for word in words:
        assert word in lines[0]


def readme_commands(text: str) -> list[str]:
    """The arguments of every ``python -m xmodality_lite …`` in ``text``: code-block lines (up
    to a ``#`` comment) and inline code spans (up to the closing backtick)."""
    return [m.group(1).strip() for m in re.finditer(r"python -m xmodality_lite\b([^`#\n]*)", text)]


def test_readme_commands_are_all_found():
    text = "```\npython -m xmodality_lite info   # versions\n```\nthen `python -m xmodality_lite " \
           "train uvit --out r` and python -m xmodality_lite --help."
    assert readme_commands(text) == ["info", "train uvit --out r", "--help."]


def test_readme_command_lines_parse():
    """Every ``python -m xmodality_lite …`` in the README, inline ones too, is valid for the
    parser (a README command a reader copies must not end in a usage error)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = readme_commands(readme)
    assert len(commands) == readme.count("python -m xmodality_lite") and len(commands) >= 7
    assert any(f"`python -m xmodality_lite {c}`" in readme for c in commands)  # inline found
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # argparse's way of rejecting (or of printing --help)
            assert done.code == 0, f"README command does not parse: python -m xmodality_lite " \
                                   f"{command}"
            continue
        assert args.command == argv[0]


def test_every_command_has_help(tmp_path):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command, "--help"])
        assert done.value.code == 0
    run = cli("translate", "--help", cwd=tmp_path)
    assert run.returncode == 0 and "--checkpoint" in run.stdout and "--profile" in run.stdout


def test_errors_are_one_line(tmp_path):
    assert_one_line_error(cli("translate", "missing.nii.gz", "out.nii.gz", "--checkpoint",
                              "c.safetensors", cwd=tmp_path), "missing.nii.gz")
    assert_one_line_error(cli("evaluate", "nope.safetensors", "--out", "ev", cwd=tmp_path),
                          "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    (tmp_path / "tof.nii.gz").write_bytes(b"")
    assert_one_line_error(cli("translate", "tof.nii.gz", "o.nii.gz", "--checkpoint",
                              "bad.safetensors", cwd=tmp_path), "bad.safetensors")
    run = cli("train", "resnet", "--out", "r", cwd=tmp_path)  # argparse: usage + one error
    assert run.returncode == 2 and "invalid choice: 'resnet'" in run.stderr
    assert "Traceback" not in run.stderr


def test_info(tmp_path):
    run = cli("info", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "profile smoke" in run.stdout
    assert all(name in run.stdout for name in MODELS)
    listed = dict(line.split(None, 1) for line in
                  run.stdout.split("registries (choices by name):\n", 1)[1].splitlines())
    assert {k: v.split(", ") for k, v in listed.items()} == registries()


def test_registries_name_every_choice():
    from xmodality_lite.config import PROFILES
    from xmodality_lite.diffusion import SAMPLERS, SCHEDULES, WEIGHTINGS
    from xmodality_lite.features import EXTRACTORS

    assert registries() == {"models": list(MODELS), "samplers": list(SAMPLERS),
                            "schedules": list(SCHEDULES), "weightings": list(WEIGHTINGS),
                            "extractors": list(EXTRACTORS), "profiles": list(PROFILES)}


def test_cli_choices_come_from_the_registries(monkeypatch, capsys):
    """A model, sampler or extractor added to its registry is a CLI choice with no CLI edit."""
    from xmodality_lite import features
    from xmodality_lite.diffusion import SAMPLERS, ddim_step

    monkeypatch.setitem(MODELS, "fakenet", MODELS["unet"])
    monkeypatch.setitem(SAMPLERS, "fakesampler", ddim_step)
    monkeypatch.setattr(features, "EXTRACTORS", (*features.EXTRACTORS, "fakefd"))
    parser = build_parser()
    assert parser.parse_args(["train", "fakenet", "--out", "r"]).model == "fakenet"
    assert parser.parse_args(["train-shipped"]).models == list(MODELS)
    args = parser.parse_args(["evaluate", "c.safetensors", "--out", "e", "--sampler",
                              "fakesampler", "--extractor", "fakefd"])
    assert (args.sampler, args.extractor) == ("fakesampler", "fakefd")
    assert parser.parse_args(["translate", "t.nii", "o.nii", "--sampler",
                              "fakesampler"]).sampler == "fakesampler"
    for command, word in (("train", "fakenet"), ("train-shipped", "fakenet"),
                          ("sample", "fakesampler"), ("evaluate", "fakefd")):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert word in capsys.readouterr().out


@pytest.mark.slow
def test_phantom_train_translate_evaluate(tmp_path):
    run = cli("phantom", "--out", "topcow", "--n", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    tof_path = tmp_path / "topcow/imagesTr/topcow_mr_whole_001_0000.nii.gz"
    run = cli("train", "unet", "--steps", "2", "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    ckpt = tmp_path / "run/checkpoints/step_0000002.safetensors"
    assert ckpt.is_file() and (tmp_path / "run/metrics.jsonl").is_file()
    run = cli("translate", tof_path, "cta.nii.gz", "--checkpoint", ckpt, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    tof, cta = nib.load(tof_path), nib.load(tmp_path / "cta.nii.gz")
    assert cta.shape == tof.shape and np.allclose(cta.affine, tof.affine)
    assert cta.get_data_dtype() == np.float32
    hu = cta.get_fdata()
    assert hu.min() >= -50 and hu.max() <= 350
    run = cli("evaluate", ckpt, "--out", "eval", "--n-slices", "4", "--extractor", "standin",
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for name in ("results.csv", "results.md", "steps_sweep.png"):
        assert (tmp_path / "eval" / name).is_file()
    assert (tmp_path / "eval/results.csv").read_text().splitlines()[1].startswith("unet,N/A")
    run = cli("sample", ckpt, "--out", "grid.png", "--n", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_translate_defaults_to_a_shipped_model_and_keeps_nifti2(tmp_path):
    """No --checkpoint: the best shipped diffusion model (by the record), named on stderr; a NIfTI-2 input gives a NIfTI-2
    output with its affine and header, and no library warning ("sizeof_hdr should be 348")."""
    affine = np.diag([0.5, 0.6, 0.7, 1.0])
    affine[:3, 3] = [-30.0, -20.0, -10.0]
    tof = np.zeros((24, 20, 5), np.float32)
    tof[6:18, 8:12, 1:4] = 100.0  # a bright "vessel" between empty slices
    img = nib.Nifti2Image(tof, affine)
    img.header["descrip"] = b"phantom TOF"
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, tmp_path / "tof.nii.gz")
    run = cli("translate", "tof.nii.gz", "cta.nii.gz", "--steps", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    best = default_translate_model()
    assert best != "unet" and best == max(
        ("adm", "uvit", "dit"), key=lambda m: json.loads((SHIPPED_DIR / "reference_metrics.json")
                                                         .read_text())["slices"]["metrics"][m]["ssim"])
    assert f"using the shipped {best} model" in run.stderr
    assert str(SHIPPED_DIR / f"{best}.safetensors") in run.stderr
    assert "sizeof_hdr" not in run.stderr and "warn" not in run.stderr.lower(), run.stderr
    cta = nib.load(tmp_path / "cta.nii.gz")
    assert type(cta) is nib.Nifti2Image and int(cta.header["sizeof_hdr"]) == 540
    assert cta.shape == tof.shape and np.allclose(cta.affine, affine)
    assert cta.header["descrip"] == b"phantom TOF"
    assert cta.header.get_xyzt_units() == ("mm", "sec")
    assert cta.get_data_dtype() == np.float32


@pytest.mark.slow
def test_train_shipped_writes_weights_with_provenance(tmp_path):
    run = cli("train-shipped", "--models", "unet", "--steps", "2", "--out", "ship", "--runs",
              "runs", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    side = json.loads((tmp_path / "ship/unet.json").read_text())
    assert side["sha256"] == file_sha256(tmp_path / "ship/unet.safetensors")
    assert side["step"] == 2 and side["profile"]["name"] == "smoke"
    assert np.isfinite(side["final_loss"]) and "git_commit" in side
    assert load_model(tmp_path / "ship/unet.safetensors").kind == "regression"


@pytest.mark.slow
def test_evaluate_writes_volume_tables_with_intervals(tmp_path):
    """The shipped U-Net and DiT on two unseen smoke-grid phantoms: the Table-1 files as before,
    and the head / CoW / vessel tables with intervals and the paired comparison vs the U-Net."""
    ships = [SHIPPED_DIR / f"{m}.safetensors" for m in ("unet", "dit")]
    run = cli("evaluate", *ships, "--profile", "smoke", "--out", "ev", "--n-slices", "2",
              "--steps", "1", "--extractor", "standin", "--volumes", "2", "--n-boot", "200",
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for title in ("Head mask", "Circle-of-Willis region", "vessel clDice",
                  "Paired differences: model − unet"):
        assert title.lower() in run.stdout.lower()
    ev = tmp_path / "ev"
    for name in ("results.csv", "results.md", "steps_sweep.png", "volumes.csv",
                 "volume_summary.csv", "volume_paired.csv", "volumes.json", "volumes.md",
                 "figures/unet_phantom1000.png", "figures/dit_phantom1000.png"):
        assert (ev / name).is_file(), name
    report = json.loads((ev / "volumes.json").read_text())
    assert report["settings"]["items"] == ["phantom1000", "phantom1001"]
    assert {r["model"] for r in report["paired"]} == {"dit"}
