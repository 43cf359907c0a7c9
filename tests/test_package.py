"""The public surface is visible to tools: every lazily loaded name is also imported for type
checkers, and every submodule is listed for the lazy loader."""

import ast
import pkgutil
import re
from pathlib import Path

import xmodality_lite as xl

INIT = Path(xl.__file__)


def _type_checking_names(init: Path = INIT) -> set[str]:
    tree = ast.parse(init.read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", None) == "TYPE_CHECKING")
    return {alias.asname or alias.name for node in block.body
            for alias in getattr(node, "names", [])}


def test_type_checking_block_lists_every_lazy_name():
    assert _type_checking_names() == set(xl._SUBMODULES) | set(xl._FUNCTIONS)


def test_data_type_checking_block_lists_every_lazy_name():
    from xmodality_lite import data

    assert _type_checking_names(Path(data.__file__)) == set(data._SUBMODULES) | set(data._EXPORTS)
    found = {m.name for m in pkgutil.iter_modules([str(Path(data.__file__).parent)])}
    assert found == set(data._SUBMODULES)
    for name in data._EXPORTS:
        assert getattr(data, name) is getattr(getattr(data, data._EXPORTS[name]), name)


def test_every_submodule_is_reachable_lazily():
    found = {m.name for m in pkgutil.iter_modules([str(INIT.parent)])} - {"__main__"}
    assert found - {"checkpoints"} == set(xl._SUBMODULES)
    for name in xl._FUNCTIONS:
        assert callable(getattr(xl, name))


def test_docstrings_cite_the_paper_not_private_notes():
    """Sources a reader can open: the paper's sections and equations, a publication, or the
    reference code's behaviour in words; never "facts §N", notes that are not in the repository."""
    cited = [f"{p.relative_to(INIT.parent)}:{i}"
             for p in sorted(INIT.parent.rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"facts\b", line)]
    assert not cited, f"private notes cited: {cited}"
