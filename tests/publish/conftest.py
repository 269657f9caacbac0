"""Fixtures for publisher tests: a real mosquitto from config/mosquitto, publishers to clean up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.publish import Publisher, PublisherSettings, SlotSchedule
from tests.publish.helpers import EXTRA_ACL, PASSWORDS
from tests.support.mosquitto import MosquittoBroker, MqttProbe


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A running private mosquitto with the project's config, ACL and the test users."""
    b = MosquittoBroker(PASSWORDS, rigs=("rig-a",), extra_acl=EXTRA_ACL)
    try:
        yield b.start()
    finally:
        b.close()


@pytest.fixture
def probe(broker: MosquittoBroker) -> Iterator[Callable[..., MqttProbe]]:
    """Start tester-side clients: probe(user, topics, ...); all stopped at teardown."""
    made: list[MqttProbe] = []

    def make(user: str, topics: list[str], **kw: Any) -> MqttProbe:
        p = MqttProbe(broker, user, PASSWORDS[user], topics, **kw).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def publisher() -> Iterator[Callable[..., Publisher]]:
    """Start publishers: publisher(settings, schedule, **kw); all stopped at teardown."""
    made: list[Publisher] = []

    def make(settings: PublisherSettings, schedule: SlotSchedule, **kw: Any) -> Publisher:
        p = Publisher(settings, schedule, **kw)
        p.start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop(timeout=2.0)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A folder for one publisher's spool."""
    d = tmp_path / "spool"
    d.mkdir()
    return d
