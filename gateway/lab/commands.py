"""The lab's commands: each checks, changes the store (and the broker's accounts) in one
transaction, then tells the rigs.

Refusals (`LabRefusal`) are raised before anything is changed, neither the store nor the
broker. Account commands need the broker (`LabBrokerError` otherwise); booking commands do
not: when the broker cannot be reached the change is recorded, stderr says the rigs are not
told yet, and the next command (or `lab publish`) tells them.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TextIO

from gateway.errors import IdentifierError, LabBrokerError, LabRefusal
from gateway.identifiers import validate_holder, validate_rig_id
from gateway.lab import rules
from gateway.lab.accounts import RIG_MARK, TESTER_MARK, Accounts, rig_role, tester_role
from gateway.lab.dynsec import AdminLink, BrokerAddress
from gateway.lab.rules import Plan, Policy
from gateway.lab.settings import RESERVED_RIG, LabSettings
from gateway.lab.store import BookingRecord, Store, Tx
from gateway.lab.tell import RigState, pending, tell


def actor() -> str:
    """Who runs the command, for the audit trail: the user behind sudo, else the user."""
    name = os.environ.get("SUDO_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _checked(check: Callable[[str], str], value: str) -> str:
    """An identifier, or a refusal saying why not."""
    try:
        return check(value)
    except IdentifierError as exc:
        raise LabRefusal(str(exc)) from None


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers, in columns two spaces apart."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


class Lab:
    """One lab command's context: settings, store, the clock's reading, the broker link."""

    def __init__(self, settings: LabSettings, *, now: datetime, out: TextIO, err: TextIO):
        self.settings = settings
        self.now = now
        self.out = out
        self.err = err
        self.actor = actor()
        self.prefix = settings.mqtt.topic_prefix
        self.policy = Policy(
            zone=settings.zone,
            slot_hours=settings.lab.slot_hours,
            turnover_hours=settings.lab.turnover_hours,
            notice_days=settings.lab.notice_days,
        )
        self.store = Store(settings.lab.db)
        self._link: AdminLink | None = None

    def close(self) -> None:
        """Disconnect from the broker and close the store."""
        if self._link is not None:
            self._link.close()
            self._link = None
        self.store.close()

    # --- helpers ---------------------------------------------------------------------------

    def link(self) -> AdminLink:
        """The planner's link to the central broker, opened (and the broker made ready for
        the lab) on first use."""
        if self._link is None:
            mqtt = self.settings.mqtt
            address = BrokerAddress(
                mqtt.host,
                mqtt.port,
                mqtt.username,
                self.settings.mqtt_password(),
                mqtt.tls_ca_file,
                mqtt.timeout,
            )
            link = AdminLink(address).open()
            try:
                Accounts(link, self.prefix).ensure_planner()
            except BaseException:
                link.close()
                raise
            self._link = link
        return self._link

    def say(self, line: str = "") -> None:
        """A line on stdout."""
        print(line, file=self.out)

    def warn(self, line: str) -> None:
        """A line on stderr."""
        print(f"lab: {line}", file=self.err)

    def show(self, value: datetime) -> str:
        """A time on the lab's wall clock, RFC 3339."""
        return rules.local(value, self.policy.zone).isoformat()

    def rigs(self, tx: Tx) -> list[str]:
        """The bookable rigs in order: LAB.toml's, then those added with `rigs add`."""
        added = [r.name for r in tx.rigs() if r.account]
        return list(dict.fromkeys([*self.settings.lab.rigs, *added]))

    def _booking(self, tx: Tx, ident: int) -> BookingRecord:
        """A booking not cancelled, or a refusal."""
        record = tx.booking(ident)
        if record is None or record.cancelled:
            raise LabRefusal(f"unknown booking {ident}")
        return record

    def _active(self, tx: Tx) -> list[rules.Booking]:
        """Every booking not cancelled, as the rules see them."""
        return [b.booking for b in tx.bookings()]

    def _plan_line(self, verb: str, ident: int, plan: Plan) -> None:
        """`booked ID R START END` (or moved, extended), then each warning on stderr."""
        self.say(f"{verb} {ident} {plan.rig} {self.show(plan.start)} {self.show(plan.end)}")
        for warning in plan.warnings:
            self.warn(warning)

    def _detail(self, plan: Plan) -> dict[str, object]:
        """A plan as the audit trail keeps it."""
        return {
            "rig": plan.rig,
            "holder": plan.holder,
            "start": self.show(plan.start),
            "end": self.show(plan.end),
            "days": plan.days,
        }

    def tell_rigs(self, *, always: bool = False) -> list[RigState] | None:
        """Tell every rig not yet told (after a change, or `always` to look at the broker
        anyway); None, with a word on stderr, when the broker cannot be reached."""
        waiting = pending(self.store)
        if not always and not waiting:
            return None
        try:
            with self.store.read() as tx:
                names = self.rigs(tx)
            return tell(
                self.store,
                self.link(),
                prefix=self.prefix,
                policy=self.policy,
                rigs=names,
                now=self.now,
            )
        except LabBrokerError as exc:
            if waiting:
                self.warn(
                    f"the rigs are not told yet ({exc}); "
                    "`lab publish` or the next lab command tells them"
                )
            else:
                self.warn(f"cannot see the rigs on the broker ({exc})")
            return None

    # --- bookings --------------------------------------------------------------------------

    def book(self, holder: str, rig: str, start: str, days: int) -> int:
        """`lab book H --rig R|any --start T --days N`."""
        when = rules.read_time(start, self.policy.zone, self.now)
        with self.store.write() as tx:
            bookable = self.rigs(tx)
            if rig == "any":
                candidates = bookable
            else:
                candidates = [_checked(validate_rig_id, rig)]
                if rig not in bookable:
                    raise LabRefusal(
                        f"unknown rig {rig!r}: list it in LAB.toml's rigs or `lab rigs add` it"
                    )
            tester = tx.tester(holder)
            plan = rules.book(
                self.policy,
                holder=holder,
                tester=tester.rules if tester else None,
                rigs=candidates,
                start=when,
                days=days,
                bookings=self._active(tx),
                now=self.now,
            )
            assert tester is not None
            tx.ensure_rig(plan.rig, self.now)
            ident = tx.add_booking(plan, tester.id, self.now)
            tx.bump_version(plan.rig)
            tx.audit(self.now, self.actor, "book", f"booking {ident}", self._detail(plan))
        self._plan_line("booked", ident, plan)
        self.tell_rigs()
        return ident

    def cancel(self, ident: int) -> None:
        """`lab cancel ID`."""
        with self.store.write() as tx:
            record = self._booking(tx, ident)
            rules.cancel(self.policy, record.booking, self.now)
            tx.cancel_booking(ident, self.now)
            tx.bump_version(record.rig)
            detail = {"rig": record.rig, "holder": record.holder, "start": self.show(record.start)}
            tx.audit(self.now, self.actor, "cancel", f"booking {ident}", detail)
        self.say(
            f"cancelled {ident} {record.rig} {self.show(record.start)} {self.show(record.end)}"
        )
        self.tell_rigs()

    def _change(self, verb: str, ident: int, decide: Callable[[Tx, BookingRecord], Plan]) -> None:
        """Move or extend a booking: the rules decide, the store records, the rig is told."""
        with self.store.write() as tx:
            record = self._booking(tx, ident)
            plan = decide(tx, record)
            tx.change_booking(ident, plan, self.now)
            tx.bump_version(record.rig)
            detail = {
                **self._detail(plan),
                "was": f"{self.show(record.start)} to {self.show(record.end)}",
            }
            tx.audit(self.now, self.actor, verb, f"booking {ident}", detail)
        self._plan_line({"move": "moved", "extend": "extended"}[verb], ident, plan)
        self.tell_rigs()

    def move(self, ident: int, start: str) -> None:
        """`lab move ID --start T`."""
        when = rules.read_time(start, self.policy.zone, self.now)

        def decide(tx: Tx, record: BookingRecord) -> Plan:
            tester = tx.tester(record.holder)
            return rules.move(
                self.policy,
                record.booking,
                start=when,
                tester=tester.rules if tester else None,
                bookings=self._active(tx),
                now=self.now,
            )

        self._change("move", ident, decide)

    def extend(self, ident: int, days: int) -> None:
        """`lab extend ID --days N`: N more days."""

        def decide(tx: Tx, record: BookingRecord) -> Plan:
            tester = tx.tester(record.holder)
            return rules.extend(
                self.policy,
                record.booking,
                more_days=days,
                tester=tester.rules if tester else None,
                bookings=self._active(tx),
                now=self.now,
            )

        self._change("extend", ident, decide)

    def listing(self, rig: str | None, holder: str | None, everything: bool) -> None:
        """`lab list [--rig R] [--holder H] [--all]`: current and coming bookings (`--all`:
        also those ended or cancelled)."""
        with self.store.read() as tx:
            found = tx.bookings(
                rig=rig,
                holder=holder,
                ending_after=None if everything else self.now,
                cancelled=everything,
            )
        rows = []
        for b in found:
            state = "cancelled" if b.cancelled else ("ended" if b.end <= self.now else "")
            rows.append(
                [b.id, b.rig, b.holder, self.show(b.start), self.show(b.end), b.days, state]
            )
        headers = ["ID", "RIG", "HOLDER", "START", "END", "DAYS", ""]
        self.say(table(headers, rows))
        self.tell_rigs()

    def calendar(self, holder: str | None) -> None:
        """`lab calendar [--holder H]`: iCalendar on stdout."""
        from gateway.lab import calendar  # icalendar takes a tenth of a second to import

        with self.store.read() as tx:
            if holder is not None:
                _checked(validate_holder, holder)
                if tx.tester(holder) is None and not tx.bookings(holder=holder):
                    raise LabRefusal(f"unknown tester {holder!r}")
            found = [b.booking for b in tx.bookings(holder=holder)]
        if holder is None:
            text = calendar.busy_calendar(found, self.now)
        else:
            text = calendar.holder_calendar(holder, found, self.now)
        self.out.write(text.decode("utf-8"))
        self.out.flush()
        self.tell_rigs()

    # --- rigs ------------------------------------------------------------------------------

    def _not_taken(self, tx: Tx, name: str, *, by_rigs: bool) -> None:
        """Rig and tester names share the broker's user names: a new one must not be the
        planner's, a current tester's, or (for a tester) a rig's."""
        if name == self.settings.mqtt.username:
            raise LabRefusal(f"{name!r} is the planner's own account")
        if tx.tester(name) is not None:
            raise LabRefusal(f"a tester is called {name!r}")
        if by_rigs and (name in self.settings.lab.rigs or tx.rig(name) is not None):
            raise LabRefusal(f"a rig is called {name!r}")

    def _add_account(
        self,
        name: str,
        mark: str,
        check: Callable[[Tx], None],
        create: Callable[[Accounts], str],
        record: Callable[[Tx], None],
        role: str,
    ) -> str:
        """Make a broker account and record it in one store transaction, checked before and
        inside it; the account is undone when the store refuses (nothing is left half made).
        Then tell the rigs; return the account's secret (shown once)."""
        with self.store.read() as tx:
            check(tx)
        accounts = Accounts(self.link(), self.prefix)
        made = False
        try:
            with self.store.write() as tx:
                check(tx)
                if accounts.made_by_lab(name, mark) is False:
                    raise LabRefusal(f"the broker has an account {name!r} the lab did not make")
                secret = create(accounts)
                made = True
                record(tx)
        except BaseException:
            if made:
                accounts.undo(name, role)
            raise
        self.tell_rigs()
        return secret

    def rigs_add(self, rig: str) -> None:
        """`lab rigs add R`: the rig's broker account; its password last on stdout."""
        _checked(validate_rig_id, rig)
        if rig == RESERVED_RIG:
            raise LabRefusal(f"the rig id {rig!r} is reserved (the lab's own notices)")

        def check(tx: Tx) -> None:
            record = tx.rig(rig)
            if record is not None and record.account:
                raise LabRefusal(f"rig {rig!r} exists")
            self._not_taken(tx, rig, by_rigs=False)

        def record(tx: Tx) -> None:
            entry = tx.ensure_rig(rig, self.now)
            tx.set_account(rig)
            if entry.version == 0:
                tx.bump_version(rig)  # its first schedule, empty, goes out
            tx.audit(self.now, self.actor, "rigs add", f"rig {rig}", {})

        password = self._add_account(
            rig, RIG_MARK, check, lambda a: a.create_rig(rig), record, rig_role(rig)
        )
        self.say(f"rig {rig} added: it may write {self.prefix}/{rig}/# and read its schedule")
        self.say("its password (shown once; the rig's bridge uses it as remote_password):")
        self.say(password)

    def rigs_list(self) -> None:
        """`lab rigs list`: each rig, its schedule's versions, connected or not."""
        states = self.tell_rigs(always=True)
        by_name = {s.rig: s for s in states or []}
        with self.store.read() as tx:
            names = list(dict.fromkeys([*self.rigs(tx), *(r.name for r in tx.rigs())]))
            rows = []
            for name in names:
                record = tx.rig(name)
                state = by_name.get(name)
                connected = "?"
                if state is not None and state.view.connected is not None:
                    connected = "yes" if state.view.connected else "no"
                applied = "-"
                if record is not None and record.applied is not None:
                    applied = str(record.applied)
                    if record.refused:
                        applied += f" (refused: {record.refused})"
                rows.append(
                    [
                        name,
                        record.version if record else 0,
                        record.told if record else 0,
                        applied,
                        connected,
                        "yes" if record and record.account else "no",
                    ]
                )
        headers = ["RIG", "VERSION", "TOLD", "APPLIED", "CONNECTED", "ACCOUNT"]
        self.say(table(headers, rows))

    def publish(self) -> None:
        """`lab publish`: tell every rig not yet told; fails when the broker is away."""
        with self.store.read() as tx:
            names = self.rigs(tx)
        states = tell(
            self.store,
            self.link(),
            prefix=self.prefix,
            policy=self.policy,
            rigs=names,
            now=self.now,
        )
        for s in states:
            applied = "-" if s.view.applied is None else str(s.view.applied)
            if s.sent is not None:
                self.say(f"{s.rig}: told version {s.sent} (applied {applied})")
            else:
                self.say(f"{s.rig}: up to date at version {s.told} (applied {applied})")

    # --- testers ---------------------------------------------------------------------------

    def _tester(self, tx: Tx, name: str) -> None:
        """A current tester, or a refusal."""
        _checked(validate_holder, name)
        if tx.tester(name) is None:
            raise LabRefusal(f"unknown tester {name!r}")

    def testers_add(self, name: str, until: str) -> None:
        """`lab testers add H --until DATE|TIME`: its access code last on stdout."""
        _checked(validate_holder, name)
        end = rules.check_agreement_end(
            rules.read_until(until, self.policy.zone), self.now, self.policy.zone
        )

        def check(tx: Tx) -> None:
            if tx.tester(name) is not None:
                raise LabRefusal(f"tester {name!r} exists")
            self._not_taken(tx, name, by_rigs=True)

        def record(tx: Tx) -> None:
            tx.add_tester(name, end, self.now)
            tx.audit(
                self.now, self.actor, "testers add", f"tester {name}", {"until": self.show(end)}
            )

        code = self._add_account(
            name, TESTER_MARK, check, lambda a: a.create_tester(name), record, tester_role(name)
        )
        self.say(f"tester {name} added, agreement until {self.show(end)}")
        self.say("its access code (shown once):")
        self.say(code)

    def testers_renew(self, name: str, until: str) -> None:
        """`lab testers renew H --until DATE|TIME`: a new agreement end."""
        end = rules.check_agreement_end(
            rules.read_until(until, self.policy.zone), self.now, self.policy.zone
        )
        with self.store.write() as tx:
            self._tester(tx, name)
            tx.set_tester_until(name, end)
            tx.audit(
                self.now, self.actor, "testers renew", f"tester {name}", {"until": self.show(end)}
            )
            beyond = [b for b in tx.bookings(holder=name, ending_after=end)]
        self.say(f"tester {name}: agreement until {self.show(end)}")
        for b in beyond:
            self.warn(f"booking {b.id} ({b.rig}) ends {self.show(b.end)}, after the agreement")
        self.tell_rigs()

    def testers_reset_code(self, name: str) -> None:
        """`lab testers reset-code H`: a new access code, last on stdout; the old one's
        sessions are closed."""
        with self.store.read() as tx:
            self._tester(tx, name)
        accounts = Accounts(self.link(), self.prefix)
        with self.store.write() as tx:
            self._tester(tx, name)
            code = accounts.reset_tester_code(name)
            tx.audit(self.now, self.actor, "testers reset-code", f"tester {name}", {})
        self.tell_rigs()
        self.say(f"tester {name}: a new access code (shown once; the old one no longer works):")
        self.say(code)

    def testers_enable(self, name: str, enabled: bool) -> None:
        """`lab testers enable|disable H`: a disabled tester's live sessions are closed at
        once and its next login refused; an enabled one logs in again."""
        verb = "enable" if enabled else "disable"
        with self.store.read() as tx:
            self._tester(tx, name)
        accounts = Accounts(self.link(), self.prefix)
        with self.store.write() as tx:
            self._tester(tx, name)
            accounts.set_tester_enabled(name, enabled)
            tx.set_tester_enabled(name, enabled)
            tx.audit(self.now, self.actor, f"testers {verb}", f"tester {name}", {})
        self.say(f"tester {name} {verb}d")
        self.tell_rigs()

    def testers_remove(self, name: str) -> None:
        """`lab testers remove H`: its account and role go, its bookings not yet ended are
        cancelled (the rigs are told), and the name is free for a new tester."""
        with self.store.read() as tx:
            self._tester(tx, name)
        accounts = Accounts(self.link(), self.prefix)
        with self.store.write() as tx:
            self._tester(tx, name)
            coming = tx.bookings(holder=name, ending_after=self.now)
            accounts.remove_tester(name)
            for b in coming:
                tx.cancel_booking(b.id, self.now)
                tx.bump_version(b.rig)
                detail = {"rig": b.rig, "holder": name, "start": self.show(b.start)}
                tx.audit(
                    self.now, self.actor, "cancel", f"booking {b.id}", {**detail, "why": "removed"}
                )
            tx.remove_tester(name, self.now)
            tx.audit(
                self.now,
                self.actor,
                "testers remove",
                f"tester {name}",
                {"cancelled": ",".join(str(b.id) for b in coming) or "-"},
            )
        self.say(f"tester {name} removed")
        for b in coming:
            self.say(f"cancelled {b.id} {b.rig} {self.show(b.start)} {self.show(b.end)}")
        self.tell_rigs()

    def testers_list(self) -> None:
        """`lab testers list`: each tester, its agreement's end, enabled or not."""
        with self.store.read() as tx:
            testers = tx.testers()
        rows = [[t.name, self.show(t.until), "yes" if t.enabled else "no"] for t in testers]
        self.say(table(["TESTER", "UNTIL", "ENABLED"], rows))

    def testers_expire(self) -> list[str]:
        """`lab testers expire`: disable every enabled tester whose agreement has ended; their
        names."""
        with self.store.read() as tx:
            names = rules.expired([t.rules for t in tx.testers()], self.now)
        if not names:
            self.say("no agreement has ended")
            return []
        accounts = Accounts(self.link(), self.prefix)
        done = []
        with self.store.write() as tx:
            for t in tx.testers():
                if t.name not in names or not t.enabled:
                    continue
                accounts.set_tester_enabled(t.name, False)
                tx.set_tester_enabled(t.name, False)
                tx.audit(
                    self.now,
                    self.actor,
                    "testers expire",
                    f"tester {t.name}",
                    {"until": self.show(t.until)},
                )
                done.append(t.name)
                self.say(f"tester {t.name} disabled: agreement ended {self.show(t.until)}")
        self.tell_rigs()
        return done

    def audit(self) -> None:
        """`lab audit`: who changed what and when, oldest first."""
        with self.store.read() as tx:
            trail = tx.audit_trail()
        rows = [
            [
                self.show(e.at),
                e.actor,
                e.action,
                e.subject,
                " ".join(f"{k}={v}" for k, v in sorted(e.detail.items())),
            ]
            for e in trail
        ]
        self.say(table(["AT", "WHO", "WHAT", "ON", "DETAILS"], rows))
        self.tell_rigs()
