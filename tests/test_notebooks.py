"""Static checks of the lesson notebooks (book/CONTRIBUTING-notebooks.md). Fast: nothing runs.

Executing the notebooks is the book build's job (tests/test_book.py), so it happens once.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


new_notebook = _load_tool("new_notebook")
strip_outputs = _load_tool("strip_outputs")

OBJECTIVES = re.compile(r"\{admonition\}\s*Learning objectives")
EXERCISE = re.compile(r"\{admonition\}\s*Exercise")
SOLUTION_DROPDOWN = re.compile(r"\{admonition\}\s*Solution[^\n]*\n(?::[^\n]*\n)*:class:[^\n]*dropdown")
SOLUTION_CODE = re.compile(r"^#\s*Solution", re.IGNORECASE)
SUMMARY = re.compile(r"^##\s+Summary\b", re.MULTILINE)
IMPORT = re.compile(r"^\s*(import xmodality_lite\b|from xmodality_lite\b)", re.MULTILINE)
PIP = re.compile(r"pip[\"',\s]+install|^\s*[!%]pip", re.MULTILINE)
PATH_HACK = re.compile(r"\bos\.chdir\(|\bsys\.path\.(insert|append)\(|^\s*%cd\b", re.MULTILINE)
DISPLAY_LABEL = re.compile(r"^\$\$\s*\((eq-[\w-]+)\)\s*$", re.MULTILINE)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _source(nb, cell_type: str) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == cell_type)


def _check_lesson(nb: nbformat.NotebookNode) -> list[str]:
    """Every convention violation in `nb`, as readable messages."""
    problems = []
    markdown, code_cells = _source(nb, "markdown"), [c for c in nb.cells if c.cell_type == "code"]
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    if not first.lstrip().startswith("# "):
        problems.append("the first markdown cell must start with a '# Title'")
    if not OBJECTIVES.search(markdown):
        problems.append("no '{admonition} Learning objectives'")
    if not EXERCISE.search(markdown):
        problems.append("no '{admonition} Exercise ...'")
    hidden_code_solution = any(
        SOLUTION_CODE.match(c.source.lstrip())
        and {"hide-cell", "hide-input"} & set(c.metadata.get("tags", []))
        for c in code_cells
    )
    if not (hidden_code_solution or SOLUTION_DROPDOWN.search(markdown)):
        problems.append("no hidden solution (a '# Solution' code cell tagged hide-cell, or a "
                        "'{admonition} Solution' with ':class: dropdown')")
    if not SUMMARY.search(markdown):
        problems.append("no '## Summary' section")
    if not any(IMPORT.search(c.source) for c in code_cells):
        problems.append("never imports xmodality_lite")
    install = new_notebook.install_cell(ROOT)  # from _config.yml's repository.url and .ref
    if not code_cells or code_cells[0].source != install.source:
        problems.append("the first code cell is not the generated Colab install cell: run "
                        "tools/new_notebook.py --install-cells")
    elif "hide-cell" not in code_cells[0].metadata.get("tags", []):
        problems.append("the Colab install cell must be tagged hide-cell")
    for c in code_cells:
        if c.outputs or c.execution_count is not None:
            problems.append(f"cell {c.get('id')} has outputs: run tools/strip_outputs.py")
        if PATH_HACK.search(c.source):
            problems.append(f"cell {c.get('id')} changes the working directory or sys.path")
        if PIP.search(c.source) and c.source != install.source:
            if new_notebook.INSTALL_MARKER not in c.source:
                problems.append(f"cell {c.get('id')} installs packages outside the Colab guard")
            else:
                problems.append(f"cell {c.get('id')}: a second install cell")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec name must be 'python3'")
    return problems


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 11, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_lesson_convention(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert _check_lesson(nb) == []


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    toc = new_notebook.toc_files(ROOT)
    listed = {f for f in toc if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in NOTEBOOKS}
    assert on_disk - listed == set(), "notebooks missing from _toc.yml"
    missing = [f for f in toc if not any((ROOT / f"{f}{s}").is_file() for s in (".ipynb", ".md"))]
    assert missing == [], "_toc.yml entries without a file"
    assert len(toc) == len(set(toc)), "duplicate _toc.yml entries"


def test_equation_labels_are_unique_across_the_book():
    labels = [m for p in NOTEBOOKS for m in DISPLAY_LABEL.findall(_source(_read(p), "markdown"))]
    assert len(labels) == len(set(labels)), sorted(labels)


def test_the_skeleton_satisfies_the_convention():
    for stem in new_notebook.CHAPTERS:
        assert _check_lesson(new_notebook.skeleton(stem)) == [], stem


def test_the_checks_catch_violations():
    nb = new_notebook.skeleton("04_diffusion_math")
    nb.cells = [c for c in nb.cells if "Exercise" not in c.source]
    nb.cells.append(nbformat.v4.new_code_cell("import os\nos.chdir('..')\n!pip install foo"))
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    problems = "\n".join(_check_lesson(nb))
    for expected in ("Exercise", "outputs", "working directory", "outside the Colab guard"):
        assert expected in problems
    stale = new_notebook.skeleton("04_diffusion_math")
    stale.cells[1].source = stale.cells[1].source.replace("--no-deps", "--upgrade")
    assert "not the generated Colab install cell" in "\n".join(_check_lesson(stale))


def test_install_cell_pins_the_release_and_hands_over_to_the_package():
    url, ref = new_notebook.repository_url(ROOT), new_notebook.repository_ref(ROOT)
    source = new_notebook.install_cell_source(url, ref, "main")
    assert f"'xmodality_lite @ git+{url}@' + ref" in source and "--no-deps" in source
    assert f"for ref in ({ref!r}, 'main')" in source  # the release first, its branch after
    assert ref not in {"main", "master", "HEAD"}, "a branch is not a pin"
    assert "from xmodality_lite.colab import install" in source
    compile(source, "install cell", "exec")  # valid Python, guard included
    assert source.index(new_notebook.INSTALL_MARKER) < source.index("pip")


def test_rewrite_install_cell_is_idempotent(tmp_path):
    nb = new_notebook.skeleton("01_data")
    nb.cells[1].source = "# old\nimport sys\nif " + new_notebook.INSTALL_MARKER + ":\n    pass"
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(nb))
    assert new_notebook.rewrite_install_cell(path, ROOT) is True
    assert new_notebook.rewrite_install_cell(path, ROOT) is False
    assert _check_lesson(_read(path)) == []
    nb.cells.pop(1)  # no install cell first: refuse rather than overwrite a lesson cell
    path.write_text(nbformat.writes(nb))
    with pytest.raises(ValueError, match="not the Colab install cell"):
        new_notebook.rewrite_install_cell(path, ROOT)


def test_strip_outputs_removes_outputs_and_is_idempotent(tmp_path):
    nb = new_notebook.skeleton("00_setup_and_tour")
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="Profile(...)")]
    nb.cells[2].execution_count = 3
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(nb))
    assert strip_outputs.strip_file(path, check=True) is True
    assert path.read_text() == nbformat.writes(nb), "--check must not write"
    assert strip_outputs.strip_file(path) is True
    clean = _read(path)
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in clean.cells if c.cell_type == "code")
    assert "widgets" not in clean.metadata
    assert clean.cells[1].metadata["tags"] == ["hide-cell"]
    assert strip_outputs.strip_file(path) is False
