"""The built-in experiment of ``matrank landscape`` at its old import path: this name is
:mod:`matrank.landscape.experiment` itself (the same module object; pytest does not collect
this alias, whose doctests are that module's)."""

import sys

from .landscape import experiment

sys.modules[__name__] = experiment
