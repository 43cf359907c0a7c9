"""Create a lesson notebook skeleton that follows book/CONTRIBUTING-notebooks.md.

    .venv/bin/python tools/new_notebook.py notebooks/04_diffusion_math.ipynb
    .venv/bin/python tools/new_notebook.py --missing      # placeholders for absent TOC entries

The Colab install cell takes the repository URL from `repository.url` in _config.yml, the one
place that names it. Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

# stem -> (title, paper section the lesson reproduces)
CHAPTERS: dict[str, tuple[str, str]] = {
    "00_setup_and_tour": ("Setup and a tour of the pipeline", "§1, §3"),
    "01_data": ("Data: TopCoW and a synthetic phantom", "§3.1"),
    "02_registration": ("Registering TOF-MRA to CTA with ANTs", "§3.1"),
    "03_preprocessing": ("Preprocessing: HU windows, slices and crops", "§3.1, §3.5"),
    "04_diffusion_math": ("The mathematics of diffusion", "§2.2, eqs. 1–5"),
    "05_architectures": ("Architectures: U-Net, ADM, U-ViT and DiT", "§3.2"),
    "06_training": ("Training with v-prediction and Min-SNR-γ", "§3.3, §3.5, eq. 7"),
    "07_sampling": ("Sampling with DDPM and DDIM", "§2.3, eqs. 3 and 6"),
    "08_evaluation": ("Evaluation: MSE, MAE, PSNR, SSIM and Fréchet distance", "§3.4, §4.1"),
    "09_volume_reconstruction": ("From slices to volumes", "§3.6, §4.2"),
    "10_appendix_noise_schedules": ("Appendix: noise schedules", "Appendix A, eq. A.1"),
}

INSTALL_MARKER = '"google.colab" in sys.modules'


def repository_url(root: Path = ROOT) -> str:
    """`repository.url` from _config.yml."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    return config["repository"]["url"]


def toc_files(root: Path = ROOT) -> list[str]:
    """Every `file:` entry of _toc.yml (without suffix), in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        walk(part["chapters"])
    return files


def install_cell_source(url: str) -> str:
    return (
        "# Colab only: install xmodality_lite from the repository (does nothing elsewhere).\n"
        "import subprocess\n"
        "import sys\n\n"
        f"if {INSTALL_MARKER}:\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q',\n"
        f"                    'xmodality_lite @ git+{url}'], check=True)"
    )


def skeleton(stem: str, *, placeholder: bool = False) -> nbformat.NotebookNode:
    """A notebook with every part the convention asks for, in order."""
    title, section = CHAPTERS.get(stem, (stem.replace("_", " ").capitalize(), "§?"))
    number = stem.split("_", 1)[0]
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    status = (
        ":::{warning}\nPlaceholder: this lesson is being written. It only checks that the "
        "package imports.\n:::\n\n" if placeholder else ""
    )
    cells = [
        md(
            f"# {int(number)}. {title}\n\n{status}"
            ":::{admonition} Learning objectives\n:class: tip\n"
            f"After this lesson you can:\n- relate the code to the paper's {section}\n"
            "- run it at any profile (`XMODALITY_PROFILE=smoke|cpu|paper`)\n:::"
        ),
        code(install_cell_source(repository_url()), metadata={"tags": ["hide-cell"]}),
        code(
            "import matplotlib.pyplot as plt\nimport numpy as np\n\nimport xmodality_lite as xl\n\n"
            "profile = xl.get_profile()  # $XMODALITY_PROFILE, default cpu\nprint(profile)"
        ),
        md(
            "## Exercise\n\n:::{admonition} Exercise 1\n:class: note\n"
            "Which image size does the active profile use, and where does the paper state "
            "its own (256×256, §3.5)?\n:::"
        ),
        code(
            "# Solution to exercise 1\nprint(profile.name, profile.image_size)\n"
            "assert profile.image_size in {p.image_size for p in xl.PROFILES.values()}",
            metadata={"tags": ["hide-cell"]},
        ),
        md(f"## Summary\n\n- Paper {section}: to be written."),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.language_info = {"name": "python"}
    return nb


def write_new(path: Path, *, placeholder: bool = False) -> bool:
    """Write a skeleton to `path` unless it exists; True if written."""
    if path.suffix != ".ipynb":
        raise ValueError(f"path must end in .ipynb, got {str(path)!r}")
    if path.exists():
        return False
    nb = skeleton(path.stem, placeholder=placeholder)
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks/NN_name.ipynb to create")
    parser.add_argument("--missing", action="store_true",
                        help="create placeholders for notebooks listed in _toc.yml but absent")
    args = parser.parse_args(argv)
    paths = list(args.paths)
    if args.missing:
        paths += [ROOT / f"{f}.ipynb" for f in toc_files() if f.startswith("notebooks/")]
    if not paths:
        parser.error("give notebook paths or --missing")
    for path in paths:
        if write_new(path, placeholder=args.missing):
            print(f"created {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
