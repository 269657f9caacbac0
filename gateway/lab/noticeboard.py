"""`lab notice post` and `lab notice list`: an operator's notices to every tester.

A notice is recorded in the store first, then retained on the broker (`p1/R/notice/ID` about
rig R, `p1/lab/notice/ID` lab-wide) with an MQTT 5 message expiry, so old ones fade. Its id
and payload are `gateway.notices`' (the gateways write theirs the same way).
"""

from __future__ import annotations

import json

from gateway.errors import IdentifierError, LabRefusal
from gateway.identifiers import validate_rig_id, validate_variant_id
from gateway.lab.commands import Lab, table
from gateway.notices import (
    LAB,
    MESSAGE_EXPIRY_SECONDS,
    notice_id,
    notice_payload,
    notice_topic,
    random_token,
)

#: The longest text a notice carries.
MAX_TEXT = 4000


def post(lab: Lab, text: str, *, rig: str | None, variant: str | None) -> str:
    """Record a notice and retain it on the broker; its id (printed too)."""
    words = text.strip()
    if not words:
        raise LabRefusal("a notice needs a text")
    if len(words) > MAX_TEXT:
        raise LabRefusal(f"a notice's text is at most {MAX_TEXT} characters")
    try:
        if rig is not None:
            validate_rig_id(rig)
        if variant is not None:
            validate_variant_id(variant)
    except IdentifierError as exc:
        raise LabRefusal(str(exc)) from None
    if variant is not None and rig is None:
        raise LabRefusal("--variant needs --rig: a variant belongs to a rig")
    ident = notice_id(lab.now, LAB, random_token())
    body = notice_payload(ident, lab.now, rig, "operator", words, variant=variant)
    link = lab.link()
    with lab.store.write() as tx:
        tx.add_notice(ident, lab.now, rig, variant, "operator", words, lab.actor)
        tx.audit(lab.now, lab.actor, "notice post", f"notice {ident}", {"rig": rig or LAB})
    payload = json.dumps(body, separators=(",", ":")).encode()
    link.publish_retained(
        notice_topic(lab.prefix, rig, ident), payload, expiry=MESSAGE_EXPIRY_SECONDS
    )
    with lab.store.write() as tx:
        tx.set_notice_published(ident, lab.now)
    lab.say(f"posted {ident} on {notice_topic(lab.prefix, rig, ident)}")
    lab.tell_rigs()
    return ident


def listing(lab: Lab) -> None:
    """Every notice the lab posted, oldest first: id, rig, variant, published, text."""
    with lab.store.read() as tx:
        notices = tx.notices()
    rows = [
        [
            n.id,
            n.rig or LAB,
            n.variant or "-",
            "yes" if n.published_at else "no",
            n.text if len(n.text) <= 60 else n.text[:57] + "...",
        ]
        for n in notices
    ]
    lab.say(table(["ID", "RIG", "VARIANT", "PUBLISHED", "TEXT"], rows))
