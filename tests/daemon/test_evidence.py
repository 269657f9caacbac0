"""What the holder is told about a frame that is no telegram: reason codes and texts."""

from __future__ import annotations

import pytest

from gateway.daemon.evidence import EvidenceBudget, crc_reason, drop_reason, undecodable_reason
from gateway.errors import DecodeError
from gateway.mux import FrameDropped, FrameEnd
from gateway.p1 import Frame
from gateway.publish.payload import REASON_CODES


def dropped(reason: str, size: int, raw: bytes, ended_by: FrameEnd) -> FrameDropped:
    """A dropped frame as the multiplexer reports it."""
    return FrameDropped("m1", reason, size, 1, 2, raw, ended_by)


def test_crc_and_undecodable_reasons_keep_their_texts() -> None:
    """The texts testers already parse: 'crc mismatch: sent X, computed Y', 'undecodable: ...'."""
    frame = Frame(b"/X5\\1\r\n\r\n!ABCD\r\n", "ABCD", False, 0x1B2C)
    assert crc_reason(frame) == "crc mismatch: sent ABCD, computed 1B2C"
    assert undecodable_reason(DecodeError("no header")) == "undecodable: no header"


@pytest.mark.parametrize(
    ("ended_by", "text"),
    [
        (FrameEnd.NEXT_FRAME, "truncated: cut short by a new '/' after 300 bytes"),
        (FrameEnd.QUIET_LINE, "truncated: no byte for 1.5 s after 300 bytes"),
        (FrameEnd.PORT_LOST, "truncated: cut short when the port was lost after 300 bytes"),
    ],
)
def test_a_truncated_frame_says_what_cut_it(ended_by: FrameEnd, text: str) -> None:
    """Cut by a new '/', a quiet line or a lost port: code 'truncated', and how."""
    assert drop_reason(dropped("truncated", 300, b"/" * 300, ended_by), 1.5) == ("truncated", text)


def test_an_oversize_frame_gives_its_bound_and_whole_length() -> None:
    """Code 'oversize': how many bytes it carries and how long it really was."""
    event = dropped("oversize", 20_000, b"/" * 16_384, FrameEnd.NEXT_FRAME)
    assert drop_reason(event, 1.0) == (
        "oversize",
        "oversize: no end within 16384 bytes; 20000 bytes up to the next '/'",
    )
    quiet = dropped("oversize", 17_000, b"/" * 16_384, FrameEnd.QUIET_LINE)
    assert drop_reason(quiet, 1.0) == (
        "oversize",
        "oversize: no end within 16384 bytes; 17000 bytes before the line went quiet",
    )


def test_a_frame_cut_by_the_gateway_closing_its_port_is_no_evidence() -> None:
    """Removed, changed or stopping: the gateway's doing, not the meter's; only counted."""
    for reason in ("truncated", "oversize"):
        assert drop_reason(dropped(reason, 10, b"/" * 10, FrameEnd.PORT_CLOSED), 1.0) is None


def test_every_code_given_is_one_the_payload_knows() -> None:
    """The codes handed out are the payload's four."""
    codes = {"crc_mismatch", "undecodable"}
    for end in (FrameEnd.NEXT_FRAME, FrameEnd.QUIET_LINE, FrameEnd.PORT_LOST):
        for reason in ("truncated", "oversize"):
            why = drop_reason(dropped(reason, 10, b"/" * 10, end), 1.0)
            assert why is not None
            codes.add(why[0])
    assert codes == REASON_CODES


def test_a_port_may_send_ten_dropped_frames_a_second_in_bursts_of_twenty() -> None:
    """A flood of cut frames sends a burst of 20, then 10 a second; ports count apart."""
    budget = EvidenceBudget()
    ms = 1_000_000
    assert [budget.allow("m1", 0) for _ in range(21)] == [True] * 20 + [False]
    assert budget.allow("m2", 0)
    assert not budget.allow("m1", 99 * ms) and budget.allow("m1", 100 * ms)
    sent = sum(budget.allow("m1", 100 * ms + i * ms) for i in range(1, 1001))  # 1000 in 1 s
    assert sent == 10
    assert [budget.allow("m1", 10_000 * ms) for _ in range(21)] == [True] * 20 + [False]
