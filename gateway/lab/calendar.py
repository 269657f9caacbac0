"""`lab calendar`: bookings as iCalendar (RFC 5545), through the icalendar library.

A holder's calendar has one event per booking of that holder (rig, days). The lab's calendar
has one event per busy span of every rig and names nobody: its events say only which rig is
busy, and their ids carry no name. Times are UTC (`...Z`), which every calendar reads without
a VTIMEZONE.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from icalendar import Calendar, Event

from gateway.lab.rules import Booking

PRODID = "-//p1-gateway//lab//EN"
DOMAIN = "p1-lab"


def _calendar(name: str) -> Calendar:
    """An empty calendar with the required properties."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", name)
    return cal


def _event(uid: str, summary: str, booking: Booking, now: datetime) -> Event:
    """One event over a booking's span."""
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("dtstart", booking.start.astimezone(UTC))
    event.add("dtend", booking.end.astimezone(UTC))
    event.add("summary", summary)
    event.add("location", booking.rig)
    event.add("transp", "OPAQUE")
    return event


def holder_calendar(holder: str, bookings: Iterable[Booking], now: datetime) -> bytes:
    """Holder `holder`'s bookings, one event each."""
    cal = _calendar(f"p1 lab: {holder}")
    for b in sorted(bookings, key=lambda b: (b.start, b.id)):
        if b.holder != holder:
            continue
        days = "1 day" if b.days == 1 else f"{b.days} days"
        cal.add_component(_event(f"booking-{b.id}@{DOMAIN}", f"{b.rig}: {days}", b, now))
    return bytes(cal.to_ical())


def busy_calendar(bookings: Iterable[Booking], now: datetime) -> bytes:
    """Every rig's busy times, without names."""
    cal = _calendar("p1 lab: busy rigs")
    for b in sorted(bookings, key=lambda b: (b.start, b.rig, b.id)):
        cal.add_component(_event(f"busy-{b.id}@{DOMAIN}", f"{b.rig} busy", b, now))
    return bytes(cal.to_ical())
