"""`p1-gateway lab --config LAB.toml COMMAND ...`: the planners' command line.

Exit codes: 0 done; 2 refused or bad input (the reason on stderr; nothing changed, neither the
store nor the broker); 1 the broker or the store failed (an account command without broker,
`lab publish` without broker, a store that cannot be written).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from gateway.errors import ConfigError, LabBrokerError, LabRefusal, LabStoreError
from gateway.lab import noticeboard
from gateway.lab.commands import Lab
from gateway.lab.settings import load_lab_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the lab's arguments and its sub-commands."""
    parser.add_argument("--config", required=True, help="the lab's TOML file (LAB.toml)")
    sub = parser.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    book = sub.add_parser("book", help="book consecutive days of a rig for a tester")
    book.add_argument("holder", help="the tester")
    book.add_argument("--rig", required=True, help="a rig id, or `any`: the first rig free")
    book.add_argument("--start", required=True, help="RFC 3339; without offset: the lab's zone")
    book.add_argument("--days", type=int, default=1, help="consecutive days (default 1)")

    cancel = sub.add_parser("cancel", help="cancel a booking")
    cancel.add_argument("id", type=int)

    move = sub.add_parser("move", help="move a booking to a new start (same rig, same days)")
    move.add_argument("id", type=int)
    move.add_argument("--start", required=True)

    extend = sub.add_parser("extend", help="lengthen a booking by N more days")
    extend.add_argument("id", type=int)
    extend.add_argument("--days", type=int, required=True, help="days to add")

    listing = sub.add_parser("list", help="the current and coming bookings, as a table")
    listing.add_argument("--rig")
    listing.add_argument("--holder")
    listing.add_argument("--all", action="store_true", help="also those ended or cancelled")

    rigs = sub.add_parser("rigs", help="rigs: add, list")
    rigs_sub = rigs.add_subparsers(dest="rigs_command", metavar="COMMAND", required=True)
    rigs_add = rigs_sub.add_parser("add", help="the rig's broker account; prints its password")
    rigs_add.add_argument("rig")
    rigs_sub.add_parser("list", help="each rig, its schedule's versions, connected or not")

    testers = sub.add_parser(
        "testers", help="testers: add, renew, reset-code, disable, enable, remove, list, expire"
    )
    testers_sub = testers.add_subparsers(dest="testers_command", metavar="COMMAND", required=True)
    add = testers_sub.add_parser("add", help="a tester's account; prints its access code")
    add.add_argument("holder")
    add.add_argument("--until", required=True, help="agreement end: a date (inclusive) or a time")
    renew = testers_sub.add_parser("renew", help="a new agreement end")
    renew.add_argument("holder")
    renew.add_argument("--until", required=True)
    reset = testers_sub.add_parser("reset-code", help="a new access code, printed once")
    reset.add_argument("holder")
    for verb, what in (
        ("disable", "close its live sessions at once and refuse its logins"),
        ("enable", "let a disabled tester log in again"),
        ("remove", "delete its account, cancel its bookings not yet ended"),
    ):
        testers_sub.add_parser(verb, help=what).add_argument("holder")
    testers_sub.add_parser("list", help="each tester, its agreement's end, enabled or not")
    testers_sub.add_parser("expire", help="disable every tester whose agreement has ended")

    notice = sub.add_parser("notice", help="notices to every tester: post, list")
    notice_sub = notice.add_subparsers(dest="notice_command", metavar="COMMAND", required=True)
    post = notice_sub.add_parser("post", help="post an operator's notice, retained")
    post.add_argument("--rig", help="about this rig (p1/R/notice/ID); else lab-wide")
    post.add_argument("--variant", help="about this variant of the rig")
    post.add_argument("text")
    notice_sub.add_parser("list", help="the notices the lab posted")

    sub.add_parser("audit", help="who changed what and when")
    sub.add_parser("publish", help="tell every rig not yet told its schedule")
    cal = sub.add_parser("calendar", help="iCalendar: a holder's bookings, or busy rigs")
    cal.add_argument("--holder")


def _run(lab: Lab, args: argparse.Namespace) -> None:
    """Dispatch to the chosen command."""
    match args.lab_command:
        case "book":
            lab.book(args.holder, args.rig, args.start, args.days)
        case "cancel":
            lab.cancel(args.id)
        case "move":
            lab.move(args.id, args.start)
        case "extend":
            lab.extend(args.id, args.days)
        case "list":
            lab.listing(args.rig, args.holder, args.all)
        case "rigs" if args.rigs_command == "add":
            lab.rigs_add(args.rig)
        case "rigs":
            lab.rigs_list()
        case "testers" if args.testers_command == "add":
            lab.testers_add(args.holder, args.until)
        case "testers" if args.testers_command == "renew":
            lab.testers_renew(args.holder, args.until)
        case "testers" if args.testers_command in ("disable", "enable"):
            lab.testers_enable(args.holder, args.testers_command == "enable")
        case "testers" if args.testers_command == "remove":
            lab.testers_remove(args.holder)
        case "testers" if args.testers_command == "list":
            lab.testers_list()
        case "testers" if args.testers_command == "expire":
            lab.testers_expire()
        case "testers":
            lab.testers_reset_code(args.holder)
        case "notice" if args.notice_command == "post":
            noticeboard.post(lab, args.text, rig=args.rig, variant=args.variant)
        case "notice":
            noticeboard.listing(lab)
        case "audit":
            lab.audit()
        case "publish":
            lab.publish()
        case "calendar":
            lab.calendar(args.holder)


def main(args: argparse.Namespace) -> int:
    """Run one lab command; its exit code."""
    try:
        settings = load_lab_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_REFUSED
    try:
        lab = Lab(settings, now=datetime.now(UTC), out=sys.stdout, err=sys.stderr)
    except LabStoreError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        _run(lab, args)
    except LabRefusal as exc:
        print(f"lab: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (LabBrokerError, LabStoreError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_REFUSED
    finally:
        lab.close()
    return EXIT_OK
