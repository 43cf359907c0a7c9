"""Helpers of the reliability suite: child processes, folder snapshots, network checks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str], *, timeout: float = 120,
        cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` (text mode, captured) in a child process."""
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO)


def run_cli(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    """``python -m xmodality_lite <args>``."""
    return run([PYTHON, "-m", "xmodality_lite", *map(str, args)], env, **kwargs)


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` (hidden temporaries included) → sha256 of its bytes."""
    out = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def unshare_works() -> bool:
    """True where ``unshare -n`` (or ``-rn`` without root) can drop the network here."""
    for cmd in (["unshare", "-n", "true"], ["unshare", "-rn", "true"]):
        try:
            if subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    return False


def unshare_prefix() -> list[str]:
    ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    return ["unshare", "-n"] if ok.returncode == 0 else ["unshare", "-rn"]
