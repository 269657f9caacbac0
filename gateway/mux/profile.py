"""What the multiplexer needs to know about one port, and the serial profile it resolves to.

`PortConfig` is the multiplexer's own frozen input (the daemon maps its configuration onto it);
`SerialProfile` is what is actually set on the line. The profile comes from the spec: DSMR 2.2
and 3.0 meters talk 9600 baud 7E1, everything later 115200 baud 8N1; explicit settings win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.identifiers import validate_variant_id
from gateway.p1 import DEFAULT_MAX_FRAME_SIZE

#: How long a frame may get no byte before it is cut short as truncated (seconds).
DEFAULT_TRUNCATE_AFTER_S = 1.0

#: Specs whose meters talk 9600 baud 7E1 (DSMR 2.2 and 3.0).
SEVEN_E_ONE_SPECS = frozenset({"V2_2", "V3"})

_PARITY_NAMES = {
    "N": "N",
    "NONE": "N",
    "E": "E",
    "EVEN": "E",
    "O": "O",
    "ODD": "O",
    "M": "M",
    "MARK": "M",
    "S": "S",
    "SPACE": "S",
}

RequestLine = Literal["rts", "dtr"]


@dataclass(frozen=True, slots=True)
class SerialProfile:
    """The line settings a port is opened with, and whether bit 7 must be cleared."""

    baudrate: int
    bytesize: int
    parity: str
    """One of pyserial's parity letters: N, E, O, M, S."""
    stopbits: float
    strip_parity: bool
    """Clear bit 7 of every byte: a 7-bit stream read through a line that does not strip it."""

    def __str__(self) -> str:
        stop = int(self.stopbits) if self.stopbits == int(self.stopbits) else self.stopbits
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


def resolve_profile(
    spec: str = "auto",
    *,
    baudrate: int | None = None,
    bytesize: int | None = None,
    parity: str | None = None,
    stopbits: float | None = None,
    strip_parity: bool | None = None,
) -> SerialProfile:
    """The serial profile of a spec: V2_2/V3 give 9600 7E1, all else 115200 8N1; overrides win.

    Parity is stripped when the resolved byte size is 7 or the spec is DSMR 2.2/3 (a 7E1 stream
    read as 8N1 arrives with bit 7 set); `strip_parity` overrides that rule.
    """
    old = spec in SEVEN_E_ONE_SPECS
    baud = baudrate if baudrate is not None else (9600 if old else 115200)
    bits = bytesize if bytesize is not None else (7 if old else 8)
    letter = _parity_letter(parity) if parity is not None else ("E" if old else "N")
    stop = float(stopbits) if stopbits is not None else 1.0
    if baud <= 0:
        raise ValueError(f"baudrate must be positive, not {baud}")
    if bits not in (5, 6, 7, 8):
        raise ValueError(f"bytesize must be 5..8, not {bits}")
    if stop not in (1.0, 1.5, 2.0):
        raise ValueError(f"stopbits must be 1, 1.5 or 2, not {stop}")
    strip = strip_parity if strip_parity is not None else (old or bits == 7)
    return SerialProfile(baud, bits, letter, stop, strip)


def _parity_letter(parity: str) -> str:
    """Normalise 'E', 'even', 'Even'... to pyserial's letter."""
    try:
        return _PARITY_NAMES[parity.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown parity {parity!r} (N, E, O, M or S)") from None


@dataclass(frozen=True, slots=True)
class PortConfig:
    """One variant's port as the multiplexer reads it; equal configs mean an untouched port."""

    variant: str
    url: str
    """A device path (opened exclusively) or any pyserial URL: socket://, rfc2217://, loop://."""
    spec: str = "auto"
    """'auto' or a dsmr_parser telegram specification name (V2_2, V5, BELGIUM_FLUVIUS...)."""
    baudrate: int | None = None
    bytesize: int | None = None
    parity: str | None = None
    stopbits: float | None = None
    request_line: RequestLine | None = None
    """Hold this modem line high after opening: the P1 data-request line on some rigs."""
    strip_parity: bool | None = None
    """None: decide from the spec and byte size (see `resolve_profile`)."""
    interval_s: float | None = None
    """The meter's telegram period; None: from the spec, or learned from the telegrams."""
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    truncate_after_s: float = DEFAULT_TRUNCATE_AFTER_S
    """A frame that gets no byte for this long is cut short (truncated)."""
    profile: SerialProfile = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_variant_id(self.variant)
        if not self.url:
            raise ValueError(f"variant {self.variant}: empty port")
        if self.request_line not in (None, "rts", "dtr"):
            raise ValueError(f"variant {self.variant}: request_line must be 'rts' or 'dtr'")
        if self.interval_s is not None and self.interval_s <= 0:
            raise ValueError(f"variant {self.variant}: interval_s must be positive")
        if self.max_frame_size < 64:
            raise ValueError(f"variant {self.variant}: max_frame_size too small")
        if self.truncate_after_s <= 0:
            raise ValueError(f"variant {self.variant}: truncate_after_s must be positive")
        profile = resolve_profile(
            self.spec,
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
            strip_parity=self.strip_parity,
        )
        object.__setattr__(self, "profile", profile)

    @property
    def is_device_path(self) -> bool:
        """Whether the port is a local device path rather than a pyserial URL."""
        return "://" not in self.url
