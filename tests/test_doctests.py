"""Doctests of the adapters, which pytest would otherwise import as a top-level package."""

import doctest

import pytest

import matrank.adapters.curvature
import matrank.adapters.dense
import matrank.adapters.pytorch


@pytest.mark.parametrize(
    "module",
    [matrank.adapters.curvature, matrank.adapters.dense, matrank.adapters.pytorch],
)
def test_adapter_doctests(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_linear_net_doctests():
    import matrank.adapters.linear_net

    failures, tried = doctest.testmod(matrank.adapters.linear_net)
    assert tried > 0 and failures == 0
