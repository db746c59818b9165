"""Hypothesis profiles shared by every property-based test (``tests/properties/`` and the parser properties).

Two budgets, chosen by the environment variable ``HYPOTHESIS_PROFILE``:

- ``ci`` (the default): a small, fixed number of examples, derandomized and without the example database, so
  that a run on CI explores the same inputs every time and a red build is reproducible from the log alone.
- ``thorough``: thousands of random examples per property, for a developer hunting bugs before a release:

      HYPOTHESIS_PROFILE=thorough python -m pytest tests/properties

  It keeps the database (``.hypothesis/``), so a failure it finds is replayed first on the next run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    # No timing assertions: a loaded CI machine must not turn a slow example into a failure.
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    # The tree-building fixtures are module-scoped on purpose (built once, read by every example).
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
