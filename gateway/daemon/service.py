"""The running daemon: one config, one multiplexer, one publisher, wired together.

Threads: the multiplexer's reader thread frames every port and calls `Gateway.consume` inline,
which decodes each telegram and hands it to the publisher (routing, numbering, spooling and
the paho publish happen there, without blocking). paho runs its own network thread and the
publisher a spool writer. The main thread (`Gateway.serve`) owns everything slow or rare:
reload requests (SIGHUP or a changed config file), the health and status ticker and the
systemd watchdog; its timers and the watchdog's verdict are `gateway.daemon.loop`'s.

Nothing here waits for systemd or journald: notify datagrams are sent without blocking and
log lines go through a bounded queue to a logging thread (`notify`, `logs`); the status file
is written by a thread of its own (`statuswriter`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import structlog

from gateway import __version__
from gateway.config import GatewayConfig, ScheduleSource, diff_variants, load_config
from gateway.daemon.adapters import (
    catalogue_of,
    port_configs,
    publisher_settings,
    restart_only_changes,
    schedule_of,
)
from gateway.daemon.evidence import (
    CRC_MISMATCH,
    UNDECODABLE,
    EvidenceBudget,
    crc_reason,
    drop_reason,
    undecodable_reason,
)
from gateway.daemon.following import ScheduleFollowing
from gateway.daemon.logs import configure_logging, log_dropped
from gateway.daemon.loop import Job, Timers, watchdog_ok
from gateway.daemon.meternotices import MeterNotices
from gateway.daemon.notify import Notifier
from gateway.daemon.publichealth import SlotCounters, next_edge_ns, public_health, run_at
from gateway.daemon.statusfile import (
    BrokerStatus,
    ClockStatus,
    ConfigStatus,
    DaemonStatus,
    GatewayCounters,
    LogStatus,
    PortEntry,
    ReloadOutcome,
    ScheduleStatus,
    SlotStatus,
    SystemdStatus,
)
from gateway.daemon.statuswriter import StatusWriter
from gateway.daemon.watch import FileWatcher, signatures
from gateway.errors import ConfigError, GatewayError, TelegramError
from gateway.mux import (
    FrameDropped,
    FrameReceived,
    Multiplexer,
    MuxEvent,
    PortClosed,
    PortLost,
    PortOpened,
    PortOpenFailed,
    PortSilent,
    PortUp,
)
from gateway.p1 import DEFAULT_ZONE, decode_telegram
from gateway.publish import Publisher, SystemClockProbe

log = structlog.get_logger("p1-gateway")

#: Seconds between looks at the config files' signatures (a change is applied within 5 s).
WATCH_INTERVAL_S = 1.0
#: Seconds between routine health publications (state changes go out at once).
HEALTH_INTERVAL_S = 5.0
#: A timer this close to due when the main loop wakes counts as due (a timed wait may return
#: a little early): the loop then does it now instead of waking again for it a moment later.
DUE_SLACK_S = 0.005
#: How long the reader thread yields after a telegram while the publisher lags (see
#: `Publisher.lagging`): at most ~1000 telegrams/s are then read, 30 times a 32-port rig's rate.
READER_YIELD_S = 0.001


def _rfc3339_seconds(moment: datetime) -> str:
    """An aware time as RFC 3339 UTC, to the second."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _utc_now() -> str:
    """Now, RFC 3339 UTC, to the second."""
    return _rfc3339_seconds(datetime.now(UTC))


class Gateway:
    """The running gateway: one config, one multiplexer, one publisher."""

    def __init__(self, cfg: GatewayConfig, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.counters = GatewayCounters()
        self.started_at = _utc_now()
        self.last_reload: ReloadOutcome | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()  # set with each of the above, by port events, schedules
        self.following: ScheduleFollowing | None = None
        """The schedule from the broker (`[schedule] source = "mqtt"`, fixed until a restart)."""
        if cfg.schedule.source == "mqtt":
            self.following = ScheduleFollowing(cfg.rig.id, cfg.spool.dir, self._wake.set)
            self.schedule = self.following.schedule
        else:
            self.schedule = schedule_of(cfg)
        """The slot schedule the publisher routes by (the status shows its current slot)."""
        self._specs = {v.id: v for v in cfg.variants}
        ports = port_configs(cfg)
        self._truncate_after_s = {p.variant: p.truncate_after_s for p in ports}
        self._evidence = EvidenceBudget()
        """How many dropped frames each port may still send (reader thread only)."""
        self._clock = SystemClockProbe()
        self.publisher = Publisher(publisher_settings(cfg), self.schedule, clock_synced=self._clock)
        if self.following is not None:  # on every connect, before the first
            topic = self.publisher.topics.rig_schedule()
            self.publisher.link.subscribe(topic, self.following.handoff)
        self.mux = Multiplexer(self.consume, ports)
        self.notices = MeterNotices(self.publisher)
        self._watcher = FileWatcher.of(cfg.watched_files)
        self._status_writer = StatusWriter(cfg.status.file)
        self._status_error: str | None = None
        self._health_due: set[str] = set()
        self._health_lock = threading.Lock()
        self._slot_counters = SlotCounters()
        """The public health's counters since the slot began (main thread only)."""

    # -- the reader thread's side (hot path) --

    def consume(self, event: MuxEvent) -> None:
        """Handle one multiplexer event, in the reader thread: decode and submit telegrams."""
        if type(event) is FrameReceived:
            self._frame(event)
            if self.publisher.lagging:
                time.sleep(READER_YIELD_S)  # let the writer and the network thread catch up
        elif type(event) is FrameDropped:
            self.counters.dropped_frames += 1
            self._dropped(event)
        else:
            self._port_event(event)

    def _frame(self, event: FrameReceived) -> None:
        """Decode a frame and submit it: as a telegram, or as invalid evidence for the tester."""
        frame = event.frame
        variant = self._specs.get(event.variant)
        if variant is None:  # removed by a reload while its bytes were in flight
            return
        if frame.crc_ok is False:
            self.counters.invalid_crc += 1
            code, reason = CRC_MISMATCH, crc_reason(frame)
        else:
            try:
                telegram = decode_telegram(
                    frame.raw, variant.spec, zone=variant.zone or DEFAULT_ZONE, crc_verified=True
                )
            except TelegramError as exc:
                self.counters.undecodable += 1
                code, reason = UNDECODABLE, undecodable_reason(exc)
            else:
                self.counters.telegrams += 1
                mono, wall = event.received_monotonic_ns, event.received_wall_ns
                self.publisher.submit_telegram(event.variant, telegram, mono, wall)
                if self.notices.telegram(event.variant, telegram, mono, wall):
                    self._wake.set()  # rare: the main loop stores and posts the notice
                return
        self.publisher.submit_invalid(
            event.variant,
            frame.raw,
            reason,
            event.received_monotonic_ns,
            event.received_wall_ns,
            reason_code=code,
        )

    def _dropped(self, event: FrameDropped) -> None:
        """Hand a frame cut short or over the size bound to the holder as invalid evidence."""
        quiet_s = self._truncate_after_s.get(event.variant)
        if quiet_s is None:  # removed by a reload while its bytes were in flight
            return
        why = drop_reason(event, quiet_s)
        if why is None:  # the gateway closed the port inside it: not the meter's doing
            return
        if not self._evidence.allow(event.variant, event.received_monotonic_ns):
            self.counters.evidence_withheld += 1  # a flood: counted in health, not sent
            if self.counters.evidence_withheld % 1000 == 1:
                log.warning(
                    "a port floods cut or oversize frames: only some go to the holder",
                    variant=event.variant,
                    withheld=self.counters.evidence_withheld,
                )
            return
        code, reason = why
        self.publisher.submit_invalid(
            event.variant,
            event.raw,
            reason,
            event.received_monotonic_ns,
            event.received_wall_ns,
            reason_code=code,
            length=event.size,
        )

    def _port_event(self, event: MuxEvent) -> None:
        """Log a port's state change and have its health published at once."""
        with self._health_lock:
            self._health_due.add(event.variant)
        self._wake.set()  # the main loop publishes it now, not at its next timer
        if isinstance(event, PortOpened):
            log.info(
                "port opened",
                variant=event.variant,
                port=event.url,
                serial=event.profile,
                reconnect=event.reconnect,
            )
        elif isinstance(event, PortOpenFailed):
            log.warning(
                "port cannot be opened",
                variant=event.variant,
                port=event.url,
                error=event.error,
                retry_in_s=event.retry_in_s,
            )
        elif isinstance(event, PortLost):
            log.warning("port lost", variant=event.variant, port=event.url, error=event.error)
        elif isinstance(event, PortSilent):
            log.warning("port silent", variant=event.variant, silent_for_s=event.silent_for_s)
        elif isinstance(event, PortUp):
            log.info("port up again", variant=event.variant)
        elif isinstance(event, PortClosed):
            log.info("port closed", variant=event.variant, reason=event.reason)

    # -- life cycle (main thread) --

    def start(self) -> None:
        """Open the spool, connect, publish the catalogue, start reading."""
        self.publisher.start()
        self.notices.open()
        self.publish_catalogue(self.cfg)
        if self.following is not None:  # what the rig runs, until the broker's schedule comes
            applied = self.publisher.topics.schedule_applied()
            self.publisher.publish_retained(applied, self.following.follower.answer())
        self.mux.start()
        log.info(
            "started",
            rig=self.cfg.rig.id,
            variants=len(self.cfg.variants),
            slots=len(self.schedule),
            schedule=self.cfg.schedule.source,
            schedule_version=None if self.following is None else self.following.follower.version,
            version=__version__,
        )
        self.notifier.ready(self.summary())

    def publish_catalogue(self, cfg: GatewayConfig) -> None:
        """The retained variant catalogue, with what each meter showed of itself."""
        self.publisher.publish_catalogue(self.notices.catalogue(catalogue_of(cfg)))

    def request_stop(self) -> None:
        """Ask the main loop to stop (signal-safe); it wakes at once."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Ask the main loop to reload the config (signal-safe); it wakes at once."""
        self._reload.set()
        self._wake.set()

    def serve(self) -> None:
        """Run the main loop until a stop is requested.

        The loop sleeps until its next timer is due (config watch, health, status file,
        watchdog) or until it is woken: by a stop or reload request, or by a port event whose
        health is to go out now. The timers keep a common origin, so the ones of equal period
        (the status file and the config watch, 1 s each by default) fall due together: one
        wake-up a second when idle. It also wakes at every slot edge (by the wall clock the
        slots are in) to publish every port's health with its slot counters restarted.
        """
        timers = Timers(
            time.monotonic(),
            {
                Job.WATCH: WATCH_INTERVAL_S,
                Job.HEALTH: HEALTH_INTERVAL_S,
                Job.STATUS: self.cfg.status.interval,
                Job.WATCHDOG: self.notifier.watchdog_interval,  # None: systemd does not watch
            },
        )
        edge = next_edge_ns(self.schedule, time.time_ns())
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a request made from here on wakes the next wait
            now = time.monotonic() + DUE_SLACK_S
            due = timers.due(now)
            looked = time.time_ns()
            at_edge = edge is not None and looked >= edge
            if self._reload.is_set():
                self._reload.clear()
                self.reload("signal")
            elif Job.WATCH in due:
                timers.done(Job.WATCH, now)
                changed = self.changed_files()
                if changed:
                    self.reload("file changed: " + ", ".join(p.name for p in changed))
            self.follow_schedule()
            if self.notices.drain():
                self.publish_catalogue(self.cfg)
            if Job.HEALTH in due:
                timers.done(Job.HEALTH, now)
                self.notices.tidy()
            self.publish_health(everything=Job.HEALTH in due or at_edge)
            if Job.STATUS in due:
                timers.done(Job.STATUS, now)
                self.write_status()
            if Job.WATCHDOG in due:
                timers.done(Job.WATCHDOG, now)
                self.feed_watchdog()
            self.notifier.flush()  # what systemd could not take before, if it can now
            wait = timers.next_wake() - time.monotonic()
            edge = next_edge_ns(self.schedule, looked)  # (the schedule may have been reloaded)
            if edge is not None:  # a slot begins or ends: the slot counters restart then
                wait = min(wait, (edge - time.time_ns()) / 1e9)
            self._wake.wait(max(0.0, wait))

    def stop(self, timeout: float = 4.0) -> None:
        """Stop reading, flush what can be flushed, publish offline, within `timeout` s.

        Nothing here waits for systemd or journald; a hung disk (the spool's last commit, the
        status file) gets what is left of `timeout` and no more.
        """
        deadline = time.monotonic() + timeout
        self.notifier.stopping()
        log.info("stopping")
        self.mux.stop(timeout=max(0.5, min(1.5, timeout / 3)))
        self.notices.drain()  # a change the reader saw last is stored before the spool closes
        self.publisher.stop(timeout=max(0.5, deadline - time.monotonic() - 0.3))
        self.notices.tidy()
        self.notices.close()
        self._status_writer.submit(self.status(state="stopped").to_json())
        if not self._status_writer.close(timeout=max(0.1, deadline - time.monotonic())):
            log.warning("status file not written at stop (disk hung?)")
        log.info("stopped", **self.counters.to_json())

    # -- the schedule from the broker --

    def follow_schedule(self) -> None:
        """Apply what the broker sent on `p1/R/schedule` (main thread): each version judged
        whole; an accepted one applied as a diff, like a reload; each answered on `applied`."""
        if self.following is None:
            return
        topic = self.publisher.topics.schedule_applied()
        for verdict in self.following.take():
            if verdict.taken is not None and verdict.changed:
                self.schedule = verdict.taken.schedule
                self.publisher.set_schedule(self.schedule)
            self.publisher.publish_retained(topic, verdict.answer)

    # -- reload --

    def reload(self, why: str) -> bool:
        """Re-read the config; apply it as a diff, or refuse it whole and keep the old one."""
        self.notifier.reloading()
        self.counters.reloads += 1
        before = signatures(self.cfg.watched_files)  # before reading: a later write is news
        try:
            # The schedule's source is the one started with, until a restart.
            source: ScheduleSource = "file" if self.following is None else "mqtt"
            new = load_config(self.cfg.path, schedule_source=source)
        except ConfigError as exc:
            self.counters.reloads_refused += 1
            problems = [str(p) for p in exc.problems]
            self.last_reload = ReloadOutcome(_utc_now(), False, tuple(problems))
            log.error("config refused, still running the previous one", why=why, problems=problems)
            self._watcher.rebase(self.cfg.watched_files, before)
            self.notifier.ready("config refused; running the previous one: " + problems[0])
            return False
        diff = diff_variants(self.cfg.variants, new.variants)
        self._specs = {v.id: v for v in new.variants}
        ports = port_configs(new)
        self._truncate_after_s = {p.variant: p.truncate_after_s for p in ports}
        if ports != port_configs(self.cfg):  # a variant, or [framing] for them all
            self.mux.apply(ports)
            for gone in diff.removed:
                self.publisher.clear_health(gone)
        if self.following is None and new.slots != self.cfg.slots:
            self.schedule = schedule_of(new)
            self.publisher.set_schedule(self.schedule)
        if catalogue_of(new) != catalogue_of(self.cfg):
            self.publish_catalogue(new)
        self.notices.reloaded(self.cfg, new)
        if new.log != self.cfg.log:
            configure_logging(new.log.format, new.log.level)
        restart = restart_only_changes(self.cfg, new)
        if restart:
            log.warning("these settings take effect at the next restart", sections=restart)
        old_files = self.cfg.watched_files
        self.cfg = new
        self._watcher.rebase(set(old_files) | set(new.watched_files), before)
        self.last_reload = ReloadOutcome(_utc_now(), True, restart_needed=tuple(restart))
        log.info(
            "config reloaded",
            why=why,
            added=diff.added,
            removed=diff.removed,
            changed=diff.changed,
            unchanged=len(diff.unchanged),
            slots=len(self.schedule),
        )
        self.notifier.ready(self.summary())
        return True

    # -- health, status, watchdog --

    def changed_files(self) -> list[Path]:
        """The config files changed since the running config was read (a reload is due)."""
        return self._watcher.changed()

    def take_health_due(self) -> set[str]:
        """The ports whose state changed since the last call: their health is to go out now."""
        with self._health_lock:
            due, self._health_due = self._health_due, set()
        return due

    def publish_health(self, *, everything: bool) -> None:
        """Publish the retained public health of ports that changed state (or of all,
        routinely, and at every slot edge): no host details, counters since the slot began."""
        due = self.take_health_due()
        if not (due or everything):
            return
        snapshots = self.mux.snapshot()
        wall = time.time_ns()
        self._slot_counters.observe(
            run_at(self.schedule, wall), wall, {v: s.counters for v, s in snapshots.items()}
        )
        for variant, snap in snapshots.items():
            if everything or variant in due:
                try:
                    self.publisher.publish_health(variant, public_health(snap, self._slot_counters))
                except GatewayError as exc:
                    log.error("health not published", variant=variant, error=str(exc))

    def feed_watchdog(self) -> None:
        """Send WATCHDOG=1 only while the reader loop and the MQTT side make progress."""
        busy = self._status_writer.busy_for()
        progress, liveness = self.mux.progress(), self.publisher.liveness()
        if watchdog_ok(progress, liveness, time.monotonic_ns(), busy):
            self.notifier.watchdog()
        else:
            log.error(
                "watchdog withheld: a loop is not making progress",
                reader=str(progress),
                publisher=str(liveness),
                status_write_s=round(busy, 1),
            )

    def status(self, state: str = "running") -> DaemonStatus:
        """The status file's content, read now: rig, broker, clock, slot, config, every port."""
        now = datetime.now(UTC)
        pub = self.publisher.status()
        c = pub.counters
        slot = self.schedule.slot_at(now)
        return DaemonStatus(
            rig=self.cfg.rig.id,
            state=state,
            pid=os.getpid(),
            version=__version__,
            started_at=self.started_at,
            updated_at=_rfc3339_seconds(now),
            broker=BrokerStatus(
                connected=pub.connected,
                protocol=pub.protocol,
                host=f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                spooled=pub.spooled,
                outstanding=pub.outstanding,
                in_flight=pub.inflight,
                acked=c.acked,
                set_aside=pub.dead_letters,
                dropped=c.dropped_full + c.held_dropped,
                held_for_clock=pub.held,
                last_error=pub.last_error,
            ),
            clock=ClockStatus(synced=self._clock(), require_sync=self.cfg.clock.require_sync),
            slot=SlotStatus() if slot is None else SlotStatus(slot.holder, slot.end.isoformat()),
            schedule=ScheduleStatus("file") if self.following is None else self.following.status(),
            config=ConfigStatus(file=str(self.cfg.path), last_reload=self.last_reload),
            gateway=dataclasses.replace(self.counters),  # a copy: the reader thread counts on
            log=LogStatus(dropped=log_dropped()),
            systemd=SystemdStatus(
                notify_sent=self.notifier.sent,
                notify_blocked=self.notifier.blocked,
                notify_dropped=self.notifier.outbox.dropped,
                notify_last_error=self.notifier.last_error,
            ),
            ports={v: cast(PortEntry, snap.to_dict()) for v, snap in self.mux.snapshot().items()},
        )

    def write_status(self, state: str = "running") -> None:
        """Have the status file rewritten and tell systemd a one-line summary of the same reading.

        The file is written by the status writer's thread: a slow disk does not hold up this
        loop. A write error is logged once, when it first appears or changes.
        """
        status = self.status(state)
        self._status_writer.submit(status.to_json())
        error = self._status_writer.last_error
        if error != self._status_error:
            self._status_error = error
            if error is not None:
                log.warning("status file not written", file=str(self.cfg.status.file), error=error)
        if state == "running":
            self.notifier.status(status.summary(len(self.cfg.variants)))

    def summary(self) -> str:
        """One line for `systemctl status`, read now."""
        return self.status().summary(len(self.cfg.variants))
