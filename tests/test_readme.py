"""README's code runs: every ``python`` block, self-contained, gives the output it shows.

A line ending in ``# → TEXT`` is an expression whose ``repr`` (or, for ``print(...)``,
whose printed line) must be ``TEXT``, with ``…`` standing for any text (timings,
machine-dependent digits). Blocks that take more than a few seconds are slow-marked.
"""

import ast
import contextlib
import io
import pathlib
import re
import socket

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
MARK = "# → "
# blocks of more than a few seconds on two cores: run with -m slow
SLOW = {"LinearNetHessian.random_minimum(d_in=32", "LocalCluster("}


def _matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual, flags=re.S) is not None


def _run(code: str) -> list[tuple[str, str]]:
    """Execute ``code`` statement by statement; the (expected, actual) pairs it shows."""
    lines = code.splitlines()
    namespace: dict = {"__name__": "__readme__"}
    checks = []
    for node in ast.parse(code).body:
        last = lines[node.end_lineno - 1]
        source = ast.Module(body=[node], type_ignores=[])
        if MARK not in last or not isinstance(node, ast.Expr):
            exec(compile(source, "README.md", "exec"), namespace)
            continue
        expected = last.split(MARK, 1)[1].strip()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            value = eval(
                compile(ast.Expression(body=node.value), "README.md", "eval"), namespace
            )
        shown = printed.getvalue().rstrip("\n") if value is None else repr(value)
        checks.append((expected, shown))
    return checks


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(code, marks=[pytest.mark.slow] * any(s in code for s in SLOW))
        for code in BLOCKS
    ],
    ids=[f"block{i + 1}" for i in range(len(BLOCKS))],
)
def test_readme_block_runs_and_shows_its_output(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # checkpoints and files land here
    if "init_process_group" in code:  # the torchrun block, as a world of one
        for name, value in {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "RANK": "0",
            "WORLD_SIZE": "1",
        }.items():
            monkeypatch.setenv(name, value)
    checks = _run(code)
    for expected, shown in checks:
        assert _matches(expected, shown), (
            f"README shows {expected!r}; the code gives {shown!r}"
        )


def test_every_block_is_checked_and_the_cli_example_says_how_to_make_its_file():
    assert len(BLOCKS) >= 10
    assert all(MARK in code for code in BLOCKS)  # each block shows what it gives
    assert "np.save('m.npy'" in README.read_text().split("**Command line.**")[1][:3000]
