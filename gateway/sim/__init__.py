"""The virtual rig: pseudo-terminals that emit the corpus's real telegrams like live meters.

`VirtualRig` runs a set of `SimulatedMeter`s (the default rig: one per meter kind in
`DEFAULT_RIG`); `p1-gateway simulate` is its command line. Tests, the demo and the end-to-end
benchmark use it as a library.
"""

from gateway.sim.catalogue import DEFAULT_RIG, MeterModel, catalogue, models_for
from gateway.sim.meter import EVEN_PARITY, MeterStats, NoiseKind, SimulatedMeter
from gateway.sim.rig import VirtualRig
from gateway.sim.telegram import TelegramTemplate

__all__ = [
    "DEFAULT_RIG",
    "EVEN_PARITY",
    "MeterModel",
    "MeterStats",
    "NoiseKind",
    "SimulatedMeter",
    "TelegramTemplate",
    "VirtualRig",
    "catalogue",
    "models_for",
]
