"""The rig multiplexer: opens every meter port with its serial profile and reads them all.

One reader thread frames each port's bytes with its own `gateway.p1.Framer` and hands typed,
frozen events to one consumer; `PortHealth` keeps each port's state and counters. It does not
decode telegrams and knows nothing of MQTT or of the configuration files.
"""

from gateway.mux.events import (
    FrameDropped,
    FrameEnd,
    FrameReceived,
    MuxEvent,
    PortClosed,
    PortEvent,
    PortLost,
    PortOpened,
    PortOpenFailed,
    PortSilent,
    PortUp,
)
from gateway.mux.health import (
    FaultKind,
    HealthCounters,
    HealthState,
    IntervalSource,
    JitterStats,
    PortHealth,
    PortHealthSnapshot,
)
from gateway.mux.multiplexer import ApplyPlan, Consumer, LoopProgress, Multiplexer
from gateway.mux.profile import PortConfig, SerialProfile, resolve_profile
from gateway.mux.serial_io import OpenPort, open_port

__all__ = [
    "ApplyPlan",
    "Consumer",
    "FaultKind",
    "FrameDropped",
    "FrameEnd",
    "FrameReceived",
    "HealthCounters",
    "HealthState",
    "IntervalSource",
    "JitterStats",
    "LoopProgress",
    "Multiplexer",
    "MuxEvent",
    "OpenPort",
    "PortClosed",
    "PortConfig",
    "PortEvent",
    "PortHealth",
    "PortHealthSnapshot",
    "PortLost",
    "PortOpenFailed",
    "PortOpened",
    "PortSilent",
    "PortUp",
    "SerialProfile",
    "open_port",
    "resolve_profile",
]
