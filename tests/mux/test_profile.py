"""The serial profile a port is opened with, resolved from its spec and overrides."""

import pytest

from gateway.errors import IdentifierError
from gateway.mux import PortConfig, SerialProfile, resolve_profile


@pytest.mark.parametrize("spec", ["V2_2", "V3"])
def test_dsmr_22_and_30_are_9600_7e1_with_parity_stripped(spec: str) -> None:
    """DSMR 2.2 and 3.0 meters talk 9600 baud 7E1, and bit 7 is cleared."""
    assert resolve_profile(spec) == SerialProfile(9600, 7, "E", 1.0, True)


@pytest.mark.parametrize(
    "spec", ["V4", "V5", "BELGIUM_FLUVIUS", "LUXEMBOURG_SMARTY", "SWEDEN", "auto"]
)
def test_later_specs_and_auto_are_115200_8n1(spec: str) -> None:
    """DSMR 4 and later, and 'auto', default to 115200 baud 8N1 without stripping."""
    assert resolve_profile(spec) == SerialProfile(115200, 8, "N", 1.0, False)


def test_explicit_settings_win_over_the_spec() -> None:
    """Each explicit setting overrides the spec's default; the others stay."""
    profile = resolve_profile("V2_2", baudrate=115200, parity="none")
    assert (profile.baudrate, profile.bytesize, profile.parity) == (115200, 7, "N")
    assert profile.strip_parity  # still a DSMR 2.2 stream


def test_seven_bit_bytes_strip_parity_even_on_auto() -> None:
    """A 7-bit byte size means bit 7 is not data: strip it, unless told otherwise."""
    assert resolve_profile("auto", bytesize=7).strip_parity
    assert not resolve_profile("auto", bytesize=7, strip_parity=False).strip_parity
    assert not resolve_profile("V2_2", bytesize=8, strip_parity=False).strip_parity


@pytest.mark.parametrize("word,letter", [("even", "E"), ("O", "O"), ("None", "N"), ("e", "E")])
def test_parity_words_and_letters_normalise(word: str, letter: str) -> None:
    """Parity may be given as a letter or a word, any case."""
    assert resolve_profile("V5", parity=word).parity == letter


@pytest.mark.parametrize(
    "kwargs",
    [{"baudrate": 0}, {"bytesize": 9}, {"stopbits": 3}, {"parity": "X"}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, object]) -> None:
    """Impossible line settings raise ValueError."""
    with pytest.raises(ValueError):
        resolve_profile("V5", **kwargs)  # type: ignore[arg-type]


def test_port_config_carries_its_resolved_profile_and_compares_by_settings() -> None:
    """PortConfig resolves its profile; two equal configs compare equal (an untouched port)."""
    a = PortConfig("kaifa-dsmr42", "/dev/ttyUSB0", spec="V2_2", request_line="rts")
    b = PortConfig("kaifa-dsmr42", "/dev/ttyUSB0", spec="V2_2", request_line="rts")
    assert a == b
    assert str(a.profile) == "9600 7E1"
    assert a != PortConfig("kaifa-dsmr42", "/dev/ttyUSB0", spec="V2_2", baudrate=19200)
    assert a.is_device_path and not PortConfig("x", "socket://h:1").is_device_path


@pytest.mark.parametrize("variant", ["Bad", "-x", "a" * 33, "a/b", ""])
def test_port_config_refuses_unsafe_variant_ids(variant: str) -> None:
    """Variant ids outside [a-z0-9][a-z0-9-]{0,31} are refused."""
    with pytest.raises(IdentifierError):
        PortConfig(variant, "/dev/ttyUSB0")


def test_port_config_refuses_an_unknown_request_line() -> None:
    """Only 'rts' and 'dtr' can be held high."""
    with pytest.raises(ValueError):
        PortConfig("a", "/dev/ttyUSB0", request_line="cts")  # type: ignore[arg-type]
