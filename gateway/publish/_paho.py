"""Everything of ours that relies on paho-mqtt's private names, and nothing else.

Two fast paths, measured at rig load (see `gateway.publish.mqtt`):

- `FastClient` serves paho's socket reads from one large read (paho reads each packet with
  three `recv` calls), and decodes a PUBACK without properties itself, handing paho's own
  `_do_on_publish` a shared ReasonCode per code value (paho builds two ReasonCode objects and
  a Properties for every PUBACK): a quarter fewer instructions per telegram. Anything else (a
  PUBACK with properties or an unknown code, every other packet) is paho's.
- `PackedProperties` are PUBLISH user properties packed once: paho would build its name tables
  for every Properties and pack them again on every send.

They override or read what paho does not publish: the names in PRIVATE_METHODS and
PRIVATE_ATTRIBUTES, and that paho reads only through `_sock_recv`, hands PUBACKs to
`_handle_pubackcomp` and calls only `pack()` on a PUBLISH's properties. pyproject.toml pins
paho-mqtt to the minor version this was tested with (2.2: 2.1 has these names too, but not the
public `drop_out_messages` the link calls on connect); `contract_problems()` and
tests/publish/test_paho_contract.py (the names, and the behaviour against a real mosquitto)
fail when a paho release changes any of it.
"""

from __future__ import annotations

import collections
import inspect
import threading
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: What one read from the broker's socket asks for: every packet already there, at once.
RECV_CHUNK = 65536

#: paho's private methods we override or call, with the parameters we rely on.
PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    "_sock_recv": ("self", "bufsize"),
    "_handle_pubackcomp": ("self", "cmd"),
    "_do_on_publish": ("self", "mid", "reason_code", "properties"),
    "_packet_read": ("self",),
    "_packet_handle": ("self",),
}
#: paho's private attributes of a new Client that we read, with their types.
PRIVATE_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "_sock": type(None),
    "_in_packet": dict,
    "_protocol": int,
    "_out_messages": collections.OrderedDict,
    "_out_message_mutex": type(threading.RLock()),
}
#: What paho's private methods must say for our overrides to be on its path: paho reads the
#: socket only through `_sock_recv`, and hands a PUBACK to `_handle_pubackcomp("PUBACK")`.
PRIVATE_CALLS: dict[str, tuple[str, ...]] = {
    "_packet_read": ("self._sock_recv(",),
    "_packet_handle": ('self._handle_pubackcomp("PUBACK")',),
}
#: Properties' own attributes (its `__setattr__` lets only these through unchecked).
PROPERTIES_STATE = ("packetType", "types", "names", "properties")


def contract_problems() -> list[str]:
    """What of paho's private names the fast paths rely on is missing or changed (none: [])."""
    problems: list[str] = []
    for name, params in PRIVATE_METHODS.items():
        method = getattr(mqtt.Client, name, None)
        if not callable(method):
            problems.append(f"Client.{name} is gone")
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != params:
            problems.append(f"Client.{name} takes {found}, not {params}")
    for name, needles in PRIVATE_CALLS.items():
        try:
            source = inspect.getsource(getattr(mqtt.Client, name))
        except (AttributeError, OSError, TypeError):
            problems.append(f"Client.{name} has no source to read")
            continue
        problems.extend(f"Client.{name} no longer calls {n}" for n in needles if n not in source)
        if name == "_packet_read" and "self._sock.recv(" in source:
            problems.append("Client._packet_read reads the socket around _sock_recv")
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    for name, kind in PRIVATE_ATTRIBUTES.items():
        if not hasattr(client, name):
            problems.append(f"a Client has no {name}")
        elif not isinstance(getattr(client, name), kind):
            problems.append(f"Client.{name} is a {type(getattr(client, name)).__name__}")
    in_packet = getattr(client, "_in_packet", {})
    if isinstance(in_packet, dict) and not {"command", "packet"} <= set(in_packet):
        problems.append(f"Client._in_packet has keys {sorted(in_packet)}")
    state = vars(Properties(PacketTypes.PUBLISH))  # type: ignore[no-untyped-call]
    problems.extend(f"Properties has no {name}" for name in PROPERTIES_STATE if name not in state)
    return problems


# --- PUBACKs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PubackReason:
    """A PUBACK reason code met before: paho's object (shared) and what an ack needs of it."""

    reason: ReasonCode
    failure: bool
    text: str


#: PUBACK reason codes by value, built once each: paho builds two ReasonCode objects (each
#: copying its name table) and a Properties for every PUBACK, and `str()` looks the name up.
_PUBACK_REASONS: dict[int, PubackReason] = {}
#: The properties of every PUBACK that carries none (shared: nothing changes it).
_NO_PUBACK_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def puback_reason(code: int) -> PubackReason | None:
    """The shared reason of a PUBACK code, or None for a code MQTT does not define."""
    known = _PUBACK_REASONS.get(code)
    if known is None:
        try:
            reason = ReasonCode(PacketTypes.PUBACK, identifier=code)
        except (KeyError, ValueError):  # paho says ValueError (2.x) for an unknown code
            return None
        known = _PUBACK_REASONS[code] = PubackReason(reason, reason.is_failure, str(reason))
    return known


def puback_outcome(code: int, reason_code: Any) -> tuple[bool, str]:
    """Whether the reason paho gave on_publish is a failure, and its text (quick when it is
    one of the shared reasons `FastClient` hands paho)."""
    known = _PUBACK_REASONS.get(code)
    if known is not None and known.reason is reason_code:
        return known.failure, known.text
    return bool(getattr(reason_code, "is_failure", False)), str(reason_code)


class FastClient(mqtt.Client):
    """paho's client with its socket reads served from one large read, and PUBACKs without
    properties decoded without new objects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_reads = 0
        """Reads from the broker's socket itself that returned (diagnostics and tests)."""
        self._rx = b""
        """The last read from the broker's socket; paho takes it from `_rx_pos` on."""
        self._rx_pos = 0
        self._rx_sock: Any = None
        """The socket `_rx` came from (a reconnect's new socket drops what is left)."""

    def buffered(self) -> int:
        """Bytes read from the broker's socket that paho has not taken yet."""
        if self._rx_sock is not self._sock:
            return 0
        return max(0, len(self._rx) - self._rx_pos)

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho's socket read, served from one large read.

        paho reads a packet as its first byte, its length and its rest: three `recv` calls for
        each PUBACK. One `recv` of RECV_CHUNK takes every packet already there; paho's calls
        are then slices of it. paho's errors (BlockingIOError when nothing is there, OSError,
        an empty read at EOF) come only from the real read, as before.
        """
        rx, pos = self._rx, self._rx_pos
        if pos < len(rx) and self._rx_sock is self._sock:
            self._rx_pos = pos + bufsize
            return rx[pos : pos + bufsize]
        data = super()._sock_recv(RECV_CHUNK)
        self.socket_reads += 1
        if len(data) <= bufsize:
            self._rx, self._rx_pos = b"", 0
            return data
        self._rx, self._rx_pos, self._rx_sock = data, bufsize, self._sock
        return data[:bufsize]

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        """A PUBACK without properties, decoded without new objects; anything else: paho's."""
        packet = self._in_packet["packet"]
        size = len(packet)
        if cmd != "PUBACK" or not 2 <= size <= (3 if self._protocol == mqtt.MQTTv5 else 2):
            return super()._handle_pubackcomp(cmd)
        known = puback_reason(packet[2] if size == 3 else 0)
        if known is None:  # paho reports the malformed packet
            return super()._handle_pubackcomp(cmd)
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, known.reason, _NO_PUBACK_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


# --- PUBLISH properties ----------------------------------------------------------------------

#: A PUBLISH Properties whose tables the packed ones share (building them is the slow part).
_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_USER_PROPERTY = b"\x26"


def _variable_byte_integer(n: int) -> bytes:
    """MQTT's Variable Byte Integer (7 bits a byte, low first, bit 7 = more follow)."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack_user_properties(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """MQTT 5 PUBLISH properties holding only user properties, packed as paho packs them."""
    body = bytearray()
    for key, value in pairs:
        body += _USER_PROPERTY
        for text in (key, value):
            data = text.encode("utf-8")
            if len(data) > 0xFFFF:
                raise ValueError(f"user property text of {len(data)} bytes (at most 65535)")
            body += len(data).to_bytes(2, "big") + data
    return _variable_byte_integer(len(body)) + bytes(body)


class PackedProperties(Properties):
    """PUBLISH user properties packed once, by `pack_user_properties`: paho would build its
    name tables for every Properties and pack them again on every send (~150 string
    replacements a telegram). paho's publish only calls `pack()` and keeps the object."""

    _packed: bytes

    def __init__(self, user_properties: tuple[tuple[str, str], ...]) -> None:
        # Properties.__setattr__ accepts property names only: bypass it.
        self.__dict__.update(_PUBLISH_PROPERTIES.__dict__)
        object.__setattr__(self, "UserProperty", list(user_properties))
        object.__setattr__(self, "_packed", pack_user_properties(user_properties))

    def pack(self) -> bytes:
        """The packed form, computed once."""
        return self._packed
