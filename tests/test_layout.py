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


def _readme_tree():
    """The paths the README's Architecture tree names (two spaces per level)."""
    text = ROOT.joinpath("README.md").read_text()
    block = text.split("## Architecture", 1)[1].split("```\n", 2)[1]
    named, stack = set(), []
    for line in block.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or ("  " not in stripped and not stripped.endswith("/")):
            continue
        name = stripped.split()[0]
        if not (name.endswith(".py") or name.endswith("/")):
            continue  # a description's continuation line
        depth = (len(line) - len(stripped)) // 2
        stack = stack[:depth]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            named.add("/".join([*stack, name]))
    return named


def test_the_readme_tree_names_every_module_and_no_other():
    named = _readme_tree()
    modules = {str(path.relative_to(ROOT)) for path in MODULES}
    assert modules - named == set(), "modules the README's Architecture tree omits"
    assert named - modules == set(), "the README's tree names modules that do not exist"


def test_the_core_reaches_adapters_only_through_their_public_api():
    # landscape read TorchLoss._fixed and _chunks(); the dual rows read and wrote
    # oracle._vectorized: now parameters_at, chunks and map_rows
    import re

    offenders = []
    for path in MODULES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(oracle|meter|inner)\._[a-z]", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders


def test_one_unwrap_helper_reads_through_every_wrapper():
    import torch

    import matrank
    from matrank._meter import CostMeter
    from matrank._oracle import collective, gradient_precision, unwrap
    from matrank._scaling import Scaled
    from matrank.adapters import LinearNetHessian

    weights = [torch.eye(3, dtype=torch.float64)] * 2
    inner = LinearNetHessian(weights, weights[1] @ weights[0], gradient_dtype=torch.float32)
    wrapped = CostMeter(Scaled(matrank.as_oracle(inner), 2.0))
    layers = list(unwrap(wrapped))
    assert layers[0] is wrapped and layers[-1] is inner and len(layers) == 3
    assert gradient_precision(wrapped) is torch.float32  # found two layers down
    assert collective(wrapped) is None  # the protocol's default
