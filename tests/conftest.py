"""Suite-wide test settings: hypothesis profiles and the PostgreSQL marker.

Fixtures that serve one module live in that module's test file; helpers that several
modules share live in ``tests/helpers.py`` (a plain module, imported as ``helpers``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "BAYESTWIN_TEST_POSTGRES_URL"

# "ci" replays the same examples on every run; "dev" explores new ones each run.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``postgres`` unless ``BAYESTWIN_TEST_POSTGRES_URL`` is set."""
    if os.environ.get(POSTGRES_ENV):
        return
    skip = pytest.mark.skip(reason=f"{POSTGRES_ENV} is not set")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The source checkout the tests run from (holds config/, migrations/, notebooks/)."""
    return REPO_ROOT
