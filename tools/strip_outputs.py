"""Remove outputs, execution counts and per-run metadata from notebooks before committing.

    .venv/bin/python tools/strip_outputs.py notebooks/*.ipynb          # rewrite in place
    .venv/bin/python tools/strip_outputs.py --check notebooks/*.ipynb  # exit 1 if any is dirty

The book build executes every notebook, so outputs in git are noise that goes stale.
Cell tags, ids and the kernelspec are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from xmodality_lite.io import atomic_write_text

# metadata written by Jupyter/Colab while running, not by the author
CELL_RUN_KEYS = ("execution", "collapsed", "scrolled", "ExecuteTime", "colab", "outputId", "id")
NOTEBOOK_RUN_KEYS = ("widgets", "colab", "accelerator", "varInspector", "toc")


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` with outputs, execution counts and run metadata removed (in place; also returned)."""
    for key in NOTEBOOK_RUN_KEYS:
        nb.metadata.pop(key, None)
    nb.metadata.get("language_info", {}).pop("version", None)
    for cell in nb.cells:
        for key in CELL_RUN_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def strip_file(path: Path, *, check: bool = False) -> bool:
    """Strip one notebook; True if it was (or, with `check`, would be) changed."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook not found")
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    after = nbformat.writes(strip(nb)) + "\n"
    if after == before:
        return False
    if not check:
        atomic_write_text(path, after)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if dirty")
    args = parser.parse_args(argv)
    dirty = [p for p in args.paths if strip_file(p, check=args.check)]
    for path in dirty:
        print(f"{'needs stripping' if args.check else 'stripped'}: {path}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
