"""The lab's fixtures: a central mosquitto with the dynamic security plugin, and a lab on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.devkit.central import CentralBroker, dynsec_plugin
from gateway.devkit.mosquitto import free_port
from tests.lab.helpers import PLANNER, PLANNER_PASSWORD, Lab


@pytest.fixture
def central(request: pytest.FixtureRequest) -> Iterator[CentralBroker]:
    """A fresh central broker whose plugin knows only the planner (its admin); its log is
    printed when the test fails."""
    assert dynsec_plugin() is not None, "mosquitto's dynamic security plugin is missing"
    broker = CentralBroker(PLANNER, PLANNER_PASSWORD).start()
    try:
        yield broker
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(broker.log()[-4000:])
    finally:
        broker.close()


@pytest.fixture
def lab(tmp_path: Path, central: CentralBroker) -> Lab:
    """A lab with rigs rig-a and rig-b on the central broker (22 h days, 2 h turnover)."""
    return Lab(tmp_path, central.port)


@pytest.fixture
def offline_lab(tmp_path: Path) -> Lab:
    """A lab whose broker is not there (nothing listens on its port)."""
    return Lab(tmp_path, free_port())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())
