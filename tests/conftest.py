"""Suite-wide test settings: slow tests run only when P1GW_SLOW=1 (scripts/soak sets it)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked slow unless P1GW_SLOW=1."""
    if os.environ.get("P1GW_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with P1GW_SLOW=1 (scripts/soak)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
