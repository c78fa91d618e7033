"""The layout's rules, checked: modules stay small, numerics import nothing above them."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = sorted(
    [*ROOT.joinpath("matrank").rglob("*.py"), *ROOT.joinpath("adapters").glob("*.py")]
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


NUMERICS = sorted(ROOT.joinpath("matrank", "numerics").glob("*.py"))


@pytest.mark.parametrize("path", NUMERICS, ids=lambda p: p.name)
def test_numerics_import_nothing_above_numerics(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            # relative imports may stay inside numerics (level 1), never go up
            assert node.level <= 1, (
                f"{path.name} imports from {'.' * node.level}{node.module}"
            )
            assert not (node.module or "").startswith("matrank"), node.module
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("matrank") for alias in node.names)
