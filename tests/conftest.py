"""Shared test configuration: deterministic hypothesis profile, numpy error settings."""

import os

from hypothesis import HealthCheck, settings

# CI profile (scipy's): reproducible, no example database, no deadline on a shared box.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
# For a nightly or local hunt: MATRANK_HYPOTHESIS_PROFILE=random pytest ...
settings.register_profile("random", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("MATRANK_HYPOTHESIS_PROFILE", "ci"))
