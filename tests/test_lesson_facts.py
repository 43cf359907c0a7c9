"""Facts the lessons state about the paper and the package, checked where they are written.

Static, like tests/test_notebooks.py: nothing is executed. The numerical claims are asserted in
the lessons themselves (the book build runs them).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import nbformat

from xmodality_lite.registration import register_tof_to_cta

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"§\s?\d+(?:\.\d+)?|App(?:endix|\.)\s*[A-C]\b")


def _chapters() -> dict[str, tuple[str, str]]:
    spec = importlib.util.spec_from_file_location("new_notebook", ROOT / "tools" / "new_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHAPTERS


def _sections(text: str) -> set[str]:
    """The paper sections a table cell names: {'§2.2', 'Appendix A'}; equation numbers ignored."""
    return {re.sub(r"^App(?:endix|\.)\s*", "Appendix ", s.replace(" ", "")) if s.startswith("App")
            else s.replace(" ", "") for s in SECTION.findall(text)}


def _markdown(stem: str) -> str:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _table_rows(text: str, start: str) -> list[list[str]]:
    """Cells of the first markdown table from ``start`` on (its header and rule skipped)."""
    lines = text[text.index(start):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    return table[2:]


def _by_lesson(rows: list[list[str]], paper_column: int) -> dict[int, set[str]]:
    out = {}
    for row in rows:
        number = re.search(r"\d+", row[0])
        assert number, row
        out[int(number.group())] = _sections(row[paper_column])
    return out


def _expected() -> dict[int, set[str]]:
    return {int(stem.split("_", 1)[0]): _sections(section) for stem, (_, section) in _chapters().items()}


def test_lesson_sections_in_the_chapter_list_are_well_formed():
    expected = _expected()
    assert expected[10] == {"Appendix A"}
    assert all(expected.values()), expected


def test_the_lesson_map_of_lesson_0_cites_the_sections_of_the_chapter_list():
    rows = _table_rows(_markdown("00_setup_and_tour"), "## A map of the book")
    assert _by_lesson(rows, paper_column=2) == _expected()


def test_the_readme_lesson_table_cites_the_sections_of_the_chapter_list():
    rows = _table_rows((ROOT / "README.md").read_text(), "| # | notebook |")
    assert _by_lesson(rows, paper_column=-1) == _expected()


def test_the_book_intro_lesson_table_cites_the_sections_of_the_chapter_list():
    rows = _table_rows((ROOT / "book" / "intro.md").read_text(), "| Lesson | What you build |")
    assert _by_lesson(rows, paper_column=-1) == _expected()


def test_registration_is_described_as_the_code_runs_it():
    """The default preset is antspyx 'SyN': affine, then SyN. No rigid stage of its own."""
    assert inspect.signature(register_tof_to_cta).parameters["type_of_transform"].default == "SyN"
    texts = {"README.md": (ROOT / "README.md").read_text(),
             "book/glossary.md": (ROOT / "book" / "glossary.md").read_text(),
             "02_registration": _markdown("02_registration")}
    for name, text in texts.items():
        assert not re.search(r"rigid(,| then| and|/| \+)\s*(then\s*)?affine", text, re.IGNORECASE), name
