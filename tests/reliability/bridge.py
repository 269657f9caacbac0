"""Many rigs: a rig's mosquitto bridged to a central broker, both real, both on loopback.

The rig broker is the harness's own (rendered from config/mosquitto/p1-gateway.conf.template)
with config/mosquitto/bridge.conf.template appended; the central broker is rendered from the
same main template and the shipped ACL, with one account per rig.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from gateway.sim.catalogue import MeterModel
from tests.daemon.harness import PASSWORDS, RIG_ID
from tests.reliability.harness import FaultHarness
from tests.support.mosquitto import TEMPLATE_DIR, MosquittoBroker

#: The rig's password on the central broker (its user name there is the rig id).
CENTRAL_PASSWORDS = {RIG_ID: "rig-a-central-secret", "rig-b": "rig-b-central-secret"}
#: Test-only: an operator account on the central broker that may read everything.
OPS = ("ops", "ops-secret")
#: Test-only: the lab's account on the central broker (static ACL): writes the rigs' schedules.
PLANNER = ("planner", "planner-secret")


def render_bridge(rig: str, central: MosquittoBroker, password: str, extra: str = "") -> str:
    """The shipped bridge template filled in for `rig` and `central` (plus `extra` lines)."""
    template = string.Template((TEMPLATE_DIR / "bridge.conf.template").read_text())
    text = template.substitute(
        rig=rig,
        central_host=central.host,
        central_port=central.port,
        central_password=password,
    )
    return "\n# --- bridge (bridge.conf.template) ---\n" + text + extra


def central_broker() -> MosquittoBroker:
    """The central broker: the testers, one account per rig, the shipped ACL (+ an operator
    and a planner)."""
    users = {
        "acme": PASSWORDS["acme"],
        "beta": PASSWORDS["beta"],
        **CENTRAL_PASSWORDS,
        OPS[0]: OPS[1],
        PLANNER[0]: PLANNER[1],
    }
    acl = f"user {OPS[0]}\ntopic read #\nuser {PLANNER[0]}\ntopic write p1/+/schedule\n"
    return MosquittoBroker(users, rigs=list(CENTRAL_PASSWORDS), extra_acl=acl)


class BridgedHarness(FaultHarness):
    """The daemon publishing to its rig broker, which is bridged to `central`."""

    def __init__(
        self, central: MosquittoBroker, meter_models: Iterable[MeterModel], **kw: object
    ) -> None:
        super().__init__(meter_models, **kw)  # type: ignore[arg-type]
        self.central = central
        with self.broker.conf.open("a") as fh:
            fh.write(render_bridge(RIG_ID, central, CENTRAL_PASSWORDS[RIG_ID]))
