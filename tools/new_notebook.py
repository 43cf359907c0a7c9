"""Create a lesson notebook skeleton that follows book/CONTRIBUTING-notebooks.md.

    .venv/bin/python tools/new_notebook.py notebooks/04_diffusion_math.ipynb
    .venv/bin/python tools/new_notebook.py --missing      # placeholders for absent TOC entries
    .venv/bin/python tools/new_notebook.py --install-cells  # rewrite every lesson's install cell

The Colab install cell takes the repository URL and release tag from `repository.url` and
`repository.ref` in _config.yml, the one place that names them; its logic lives in the package
(`xmodality_lite.colab.install`). Existing files are never overwritten; `--install-cells`
replaces only the first code cell of each notebook, which must be the install cell.
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
    "04_diffusion_math": ("The mathematics of diffusion", "§2.2, §3.3, eqs. 1–5"),
    "05_architectures": ("Architectures: U-Net, ADM, U-ViT and DiT", "§3.2"),
    "06_training": ("Training with v-prediction and Min-SNR-γ", "§3.3, §3.5, eq. 7"),
    "07_sampling": ("Sampling with DDPM and DDIM", "§2.3, §4.1, eqs. 3 and 6"),
    "08_evaluation": ("Evaluation: MSE, MAE, PSNR, SSIM and Fréchet distance", "§3.4, §4.1"),
    "09_volume_reconstruction": ("From slices to volumes", "§3.6, §4.2"),
    "10_appendix_noise_schedules": ("Appendix: noise schedules", "Appendix A, eq. A.1"),
    "11_appendix_engineering": ("Appendix: Engineering — making it fast and parallel", "§3.5"),
}

INSTALL_MARKER = '"google.colab" in sys.modules'


def repository_url(root: Path = ROOT) -> str:
    """`repository.url` from _config.yml."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    return config["repository"]["url"]


def repository_ref(root: Path = ROOT) -> str:
    """`repository.ref` from _config.yml: the release tag the install cell pins."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    return str(config["repository"]["ref"])


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


def install_cell_source(url: str, ref: str, branch: str = "main") -> str:
    """The Colab install cell: the package at release ``ref`` without dependencies (the
    ``branch`` while that tag is not yet published), then ``xmodality_lite.colab.install()``
    installs the dependencies keeping Colab's GPU jax."""
    return (
        "# Colab only (does nothing elsewhere): install xmodality_lite at the book's release, then\n"
        "# its dependencies without replacing Colab's GPU jax (xmodality_lite.colab).\n"
        "import subprocess\n"
        "import sys\n\n"
        f"if {INSTALL_MARKER}:\n"
        f"    for ref in ({ref!r}, {branch!r}):  # the release; its branch until the tag is published\n"
        "        pip = [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',\n"
        f"               'xmodality_lite @ git+{url}@' + ref]\n"
        "        if subprocess.run(pip).returncode == 0:\n"
        "            break\n"
        "        print(f'xmodality_lite: {ref} not found, trying the next')\n"
        "    else:\n"
        "        raise RuntimeError('could not install xmodality_lite from the repository')\n"
        "    from xmodality_lite.colab import install\n\n"
        "    install()"
    )


def repository_branch(root: Path = ROOT) -> str:
    """`repository.branch` from _config.yml: the install cell's fallback while a tag is unpublished."""
    return yaml.safe_load((root / "_config.yml").read_text())["repository"].get("branch", "main")


def install_cell(root: Path = ROOT) -> nbformat.NotebookNode:
    """The install cell of _config.yml's repository and release, tagged ``hide-cell``."""
    return nbformat.v4.new_code_cell(install_cell_source(repository_url(root), repository_ref(root),
                                                         repository_branch(root)),
                                     metadata={"tags": ["hide-cell"]})


def rewrite_install_cell(path: Path, root: Path = ROOT) -> bool:
    """Replace the first code cell of ``path`` (the install cell) by :func:`install_cell`;
    True if the file changed. Refuses a first code cell that is not an install cell."""
    nb = nbformat.read(path, as_version=4)
    cell = next((c for c in nb.cells if c.cell_type == "code"), None)
    if cell is None or INSTALL_MARKER not in cell.source:
        raise ValueError(f"{path}: the first code cell is not the Colab install cell")
    new = install_cell(root)
    if cell.source == new.source and cell.metadata.get("tags") == new.metadata["tags"]:
        return False
    cell.source = new.source
    cell.metadata["tags"] = new.metadata["tags"]
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n")
    return True


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
        install_cell(),
        code(
            "import matplotlib.pyplot as plt\nimport numpy as np\n\nimport xmodality_lite as xl\n\n"
            "profile = xl.get_profile()  # $XMODALITY_PROFILE, default cpu\nprint(profile)"
        ),
        md(
            "## Exercise\n\n:::{admonition} Exercise 1 (understanding)\n:class: note\n"
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
    parser.add_argument("--install-cells", action="store_true",
                        help="rewrite the install cell of every notebooks/*.ipynb from _config.yml")
    args = parser.parse_args(argv)
    if args.install_cells:
        for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
            if rewrite_install_cell(path):
                print(f"updated {path}")
        return 0
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
