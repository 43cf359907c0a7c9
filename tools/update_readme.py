"""Rewrite the README's generated block about the shipped models from their recorded metrics.

    .venv/bin/python tools/update_readme.py          # after `make checkpoints`

tests/test_shipped.py fails while the README and ``reference_metrics.json`` disagree.
"""

from pathlib import Path

from xmodality_lite.findings import check_readme
from xmodality_lite.io import atomic_write_text

README = Path(__file__).resolve().parents[1] / "README.md"

if __name__ == "__main__":
    atomic_write_text(README, check_readme(README.read_text()))
    print(f"updated {README}")
