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

from xmodality_lite.checkpoint import file_sha256, load_model
from xmodality_lite.cli import MODEL_NAMES, build_parser

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


def test_readme_command_lines_parse():
    """Every ``python -m xmodality_lite …`` line in the README is valid for the parser."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = re.findall(r"^python -m xmodality_lite (.+?)(?:\s+#.*)?$", readme, re.MULTILINE)
    assert len(lines) >= 6
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line))  # argparse exits (fails the test) if invalid
        assert args.command == shlex.split(line)[0]


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
    assert all(name in run.stdout for name in MODEL_NAMES)


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
