"""`p1-gateway run`: the daemon. Wires the multiplexer to the publisher and runs the service.

Threads: the multiplexer's reader thread frames every port and calls `Gateway.consume` inline,
which decodes each telegram and hands it to the publisher (routing, numbering, spooling and
the paho publish happen there, without blocking). paho runs its own network thread and the
publisher a spool writer. The main thread owns everything slow or rare: signals, reloads
(SIGHUP or a changed config file), the health and status ticker and the systemd watchdog.

Nothing here waits for systemd or journald: notify datagrams are sent without blocking and
log lines go through a bounded queue to a logging thread (`notify`, `logs`); the status file
is written by a thread of its own (`statuswriter`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from gateway import __version__
from gateway.config import GatewayConfig, VariantConfig, diff_variants, load_config
from gateway.daemon.logs import configure_logging, flush_logs, log_dropped
from gateway.daemon.notify import Notifier
from gateway.daemon.statuswriter import StatusWriter
from gateway.daemon.watch import FileWatcher, signatures
from gateway.errors import ConfigError, GatewayError, TelegramError
from gateway.mux import (
    FrameDropped,
    FrameReceived,
    LoopProgress,
    Multiplexer,
    MuxEvent,
    PortClosed,
    PortConfig,
    PortLost,
    PortOpened,
    PortOpenFailed,
    PortSilent,
    PortUp,
)
from gateway.p1 import DEFAULT_ZONE, decode_telegram
from gateway.publish import (
    MqttSettings,
    Publisher,
    PublisherLiveness,
    PublisherSettings,
    Slot,
    SlotSchedule,
    SpoolSettings,
    SystemClockProbe,
)

log = structlog.get_logger("p1-gateway")

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2

#: Seconds between looks at the config files' signatures (a change is applied within 5 s).
WATCH_INTERVAL_S = 1.0
#: Seconds between routine health publications (state changes go out at once).
HEALTH_INTERVAL_S = 5.0
#: A timer this close to due when the main loop wakes counts as due (a timed wait may return
#: a little early): the loop then does it now instead of waking again for it a moment later.
DUE_SLACK_S = 0.005
#: The reader loop wakes at least every 0.1 s; this much silence means it is stuck.
READER_STALL_S = 5.0
#: A status-file write that takes this long is a hung disk: the watchdog is withheld.
STATUS_STALL_S = 20.0
#: SIGTERM to exit: the whole stop, the last log lines included, fits in this (systemd's
#: TimeoutStopSec is 10 s; a tester's "offline" status and the last batch come first).
STOP_BUDGET_S = 4.5
#: How long the reader thread yields after a telegram while the publisher lags (see
#: `Publisher.lagging`): at most ~1000 telegrams/s are then read, 30 times a 32-port rig's rate.
READER_YIELD_S = 0.001
#: Settings only a restart applies (the ports and slots are applied live).
RESTART_SECTIONS = ("rig", "mqtt", "spool", "clock", "status")


# --- mapping config onto the parts -------------------------------------------------------


def port_config(variant: VariantConfig) -> PortConfig:
    """The multiplexer's view of a configured variant."""
    return PortConfig(
        variant=variant.id,
        url=variant.port,
        spec=variant.spec,
        baudrate=variant.baudrate,
        bytesize=variant.bytesize,
        parity=variant.parity,
        stopbits=variant.stopbits,
        request_line=variant.request_line,
    )


def schedule_of(cfg: GatewayConfig) -> SlotSchedule:
    """The publisher's slot schedule for a config."""
    return SlotSchedule(Slot(s.holder, s.start, s.end) for s in cfg.slots)


def publisher_settings(cfg: GatewayConfig) -> PublisherSettings:
    """The publisher's settings for a config (reads the password file)."""
    m = cfg.mqtt
    return PublisherSettings(
        rig=cfg.rig.id,
        mqtt=MqttSettings(
            host=m.host,
            port=m.port,
            username=m.username,
            password=cfg.mqtt_password(),
            tls_ca_file=m.tls_ca_file,
            topic_prefix=m.topic_prefix,
            qos=m.qos,
            client_id=m.client_id,
            keepalive=m.keepalive,
        ),
        spool=SpoolSettings(
            dir=cfg.spool.dir,
            max_bytes=cfg.spool.max_mb * 1024 * 1024,
            batch_interval=cfg.spool.batch_interval,
        ),
        require_sync=cfg.clock.require_sync,
    )


def catalogue_of(cfg: GatewayConfig) -> list[dict[str, Any]]:
    """The retained variant catalogue: id, spec, serial profile and model details."""
    entries = []
    for v in cfg.variants:
        profile = port_config(v).profile
        entries.append(
            {
                "id": v.id,
                "spec": v.spec,
                "serial": str(profile),
                "model": v.model,
                "description": v.description,
            }
        )
    return entries


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The sections whose change a reload cannot apply (they need a restart)."""
    return [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]


def watchdog_ok(
    progress: LoopProgress, liveness: PublisherLiveness, now_ns: int, status_busy_s: float = 0.0
) -> bool:
    """True while the reader loop, the MQTT side and the status writer all make progress."""
    if not progress.running or progress.last_iteration_monotonic_ns == 0:
        return False
    reader_age_s = (now_ns - progress.last_iteration_monotonic_ns) / 1e9
    return reader_age_s <= READER_STALL_S and liveness.ok() and status_busy_s <= STATUS_STALL_S


def _next_due(due: float, every: float, now: float) -> float:
    """The first time after `now` on the grid `due + k * every` (missed ticks are skipped)."""
    if every <= 0:
        return now
    return due + every * (int((now - due) // every) + 1)


def _utc_now() -> str:
    """Now, RFC 3339 UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- the daemon ---------------------------------------------------------------------------


@dataclass(slots=True)
class GatewayCounters:
    """What the daemon itself counts (the parts count the rest)."""

    telegrams: int = 0
    invalid_crc: int = 0
    undecodable: int = 0
    dropped_frames: int = 0
    reloads: int = 0
    reloads_refused: int = 0


@dataclass(slots=True)
class ReloadOutcome:
    """The last reload attempt, as the status shows it."""

    at: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)


class Gateway:
    """The running gateway: one config, one multiplexer, one publisher."""

    def __init__(self, cfg: GatewayConfig, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.counters = GatewayCounters()
        self.started_at = _utc_now()
        self.last_reload: ReloadOutcome | None = None
        self._specs = {v.id: v for v in cfg.variants}
        self._clock = SystemClockProbe()
        self.publisher = Publisher(
            publisher_settings(cfg), schedule_of(cfg), clock_synced=self._clock
        )
        self.mux = Multiplexer(self.consume, [port_config(v) for v in cfg.variants])
        self._watcher = FileWatcher.of(cfg.watched_files)
        self._status_writer = StatusWriter(cfg.status.file)
        self._status_error: str | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()  # set with each of the above and by port events
        self._health_due: set[str] = set()
        self._health_lock = threading.Lock()

    # -- the reader thread's side (hot path) --

    def consume(self, event: MuxEvent) -> None:
        """Handle one multiplexer event, in the reader thread: decode and submit telegrams."""
        if type(event) is FrameReceived:
            self._frame(event)
            if self.publisher.lagging:
                time.sleep(READER_YIELD_S)  # let the writer and the network thread catch up
        elif type(event) is FrameDropped:
            self.counters.dropped_frames += 1
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
            reason = f"crc mismatch: sent {frame.crc_given}, computed {frame.crc_computed:04X}"
        else:
            try:
                telegram = decode_telegram(
                    frame.raw, variant.spec, zone=variant.zone or DEFAULT_ZONE, crc_verified=True
                )
            except TelegramError as exc:
                self.counters.undecodable += 1
                reason = f"undecodable: {exc}"
            else:
                self.counters.telegrams += 1
                self.publisher.submit_telegram(
                    event.variant, telegram, event.received_monotonic_ns, event.received_wall_ns
                )
                return
        self.publisher.submit_invalid(
            event.variant, frame.raw, reason, event.received_monotonic_ns, event.received_wall_ns
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
        self.publisher.publish_catalogue(catalogue_of(self.cfg))
        self.mux.start()
        log.info(
            "started",
            rig=self.cfg.rig.id,
            variants=len(self.cfg.variants),
            slots=len(self.cfg.slots),
            version=__version__,
        )
        self.notifier.ready(self.summary())

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
        wake-up a second when idle.
        """
        origin = time.monotonic()
        next_watch = next_health = next_status = origin
        status_every = self.cfg.status.interval
        dog_every = self.notifier.watchdog_interval
        next_dog = origin if dog_every is not None else float("inf")
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a request made from here on wakes the next wait
            now = time.monotonic() + DUE_SLACK_S
            if self._reload.is_set():
                self._reload.clear()
                self.reload("signal")
            elif now >= next_watch:
                next_watch = _next_due(next_watch, WATCH_INTERVAL_S, now)
                changed = self._watcher.changed()
                if changed:
                    self.reload("file changed: " + ", ".join(p.name for p in changed))
            routine = now >= next_health
            if routine:
                next_health = _next_due(next_health, HEALTH_INTERVAL_S, now)
            self.publish_health(everything=routine)
            if now >= next_status:
                next_status = _next_due(next_status, status_every, now)
                self.write_status()
            if dog_every is not None and now >= next_dog:
                next_dog = _next_due(next_dog, dog_every, now)
                self.feed_watchdog()
            self.notifier.flush()  # what systemd could not take before, if it can now
            due = min(next_watch, next_health, next_status, next_dog)
            self._wake.wait(max(0.0, due - time.monotonic()))

    def stop(self, timeout: float = 4.0) -> None:
        """Stop reading, flush what can be flushed, publish offline, within `timeout` s.

        Nothing here waits for systemd or journald; a hung disk (the spool's last commit, the
        status file) gets what is left of `timeout` and no more.
        """
        deadline = time.monotonic() + timeout
        self.notifier.stopping()
        log.info("stopping")
        self.mux.stop(timeout=max(0.5, min(1.5, timeout / 3)))
        self.publisher.stop(timeout=max(0.5, deadline - time.monotonic() - 0.3))
        self._status_writer.submit(self.status(state="stopped"))
        if not self._status_writer.close(timeout=max(0.1, deadline - time.monotonic())):
            log.warning("status file not written at stop (disk hung?)")
        log.info("stopped", **self.counter_fields())

    # -- reload --

    def reload(self, why: str) -> bool:
        """Re-read the config; apply it as a diff, or refuse it whole and keep the old one."""
        self.notifier.reloading()
        self.counters.reloads += 1
        before = signatures(self.cfg.watched_files)  # before reading: a later write is news
        try:
            new = load_config(self.cfg.path)
        except ConfigError as exc:
            self.counters.reloads_refused += 1
            problems = [str(p) for p in exc.problems]
            self.last_reload = ReloadOutcome(_utc_now(), False, problems)
            log.error("config refused, still running the previous one", why=why, problems=problems)
            self._watcher.rebase(self.cfg.watched_files, before)
            self.notifier.ready("config refused; running the previous one: " + problems[0])
            return False
        diff = diff_variants(self.cfg.variants, new.variants)
        self._specs = {v.id: v for v in new.variants}
        if not diff.empty:
            self.mux.apply([port_config(v) for v in new.variants])
            for gone in diff.removed:
                self.publisher.clear_health(gone)
        if new.slots != self.cfg.slots:
            self.publisher.set_schedule(schedule_of(new))
        if catalogue_of(new) != catalogue_of(self.cfg):
            self.publisher.publish_catalogue(catalogue_of(new))
        if new.log != self.cfg.log:
            configure_logging(new.log.format, new.log.level)
        restart = restart_only_changes(self.cfg, new)
        if restart:
            log.warning("these settings take effect at the next restart", sections=restart)
        old_files = self.cfg.watched_files
        self.cfg = new
        self._watcher.rebase(set(old_files) | set(new.watched_files), before)
        self.last_reload = ReloadOutcome(_utc_now(), True, restart_needed=restart)
        log.info(
            "config reloaded",
            why=why,
            added=diff.added,
            removed=diff.removed,
            changed=diff.changed,
            unchanged=len(diff.unchanged),
            slots=len(new.slots),
        )
        self.notifier.ready(self.summary())
        return True

    # -- health, status, watchdog --

    def publish_health(self, *, everything: bool) -> None:
        """Publish the retained health of ports that changed state (or of all, routinely)."""
        with self._health_lock:
            due, self._health_due = self._health_due, set()
        if not (due or everything):
            return
        for variant, snap in self.mux.snapshot().items():
            if everything or variant in due:
                try:
                    self.publisher.publish_health(variant, snap.to_dict())
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

    def current_slot(self) -> dict[str, Any]:
        """Who holds the rig now, and until when (None outside every slot)."""
        now = datetime.now(UTC)
        for s in self.cfg.slots:
            if s.start <= now < s.end:
                return {"holder": s.holder, "until": s.end.isoformat()}
        return {"holder": None, "until": None}

    def status(self, state: str = "running") -> dict[str, Any]:
        """The status file's content: rig, broker, clock, slot, config, every port."""
        pub = self.publisher.status()
        c = pub.counters
        ports = {v: snap.to_dict() for v, snap in self.mux.snapshot().items()}
        return {
            "rig": self.cfg.rig.id,
            "state": state,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "updated_at": _utc_now(),
            "broker": {
                "connected": pub.connected,
                "protocol": pub.protocol,
                "host": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                "spooled": pub.spooled,
                "outstanding": pub.outstanding,
                "in_flight": pub.inflight,
                "acked": c.acked,
                "set_aside": pub.dead_letters,
                "dropped": c.dropped_full + c.held_dropped,
                "held_for_clock": pub.held,
                "last_error": pub.last_error,
            },
            "clock": {"synced": self._clock(), "require_sync": self.cfg.clock.require_sync},
            "slot": self.current_slot(),
            "config": {
                "file": str(self.cfg.path),
                "last_reload": None
                if self.last_reload is None
                else {
                    "at": self.last_reload.at,
                    "ok": self.last_reload.ok,
                    "problems": self.last_reload.problems,
                    "restart_needed": self.last_reload.restart_needed,
                },
            },
            "gateway": self.counter_fields(),
            "log": {"dropped": log_dropped()},
            "systemd": {
                "notify_sent": self.notifier.sent,
                "notify_blocked": self.notifier.blocked,
                "notify_dropped": self.notifier.outbox.dropped,
                "notify_last_error": self.notifier.last_error,
            },
            "ports": ports,
        }

    def counter_fields(self) -> dict[str, int]:
        """The daemon's own counters as a flat mapping."""
        c = self.counters
        return {
            "telegrams": c.telegrams,
            "invalid_crc": c.invalid_crc,
            "undecodable": c.undecodable,
            "dropped_frames": c.dropped_frames,
            "reloads": c.reloads,
            "reloads_refused": c.reloads_refused,
        }

    def write_status(self, state: str = "running") -> None:
        """Have the status file rewritten and tell systemd a one-line summary of the same reading.

        The file is written by the status writer's thread: a slow disk does not hold up this
        loop. A write error is logged once, when it first appears or changes.
        """
        status = self.status(state)
        self._status_writer.submit(status)
        error = self._status_writer.last_error
        if error != self._status_error:
            self._status_error = error
            if error is not None:
                log.warning("status file not written", file=str(self.cfg.status.file), error=error)
        if state == "running":
            self.notifier.status(self.summary(status))

    def summary(self, status: dict[str, Any] | None = None) -> str:
        """One line for `systemctl status`, from `status` (read now when not given)."""
        if status is None:
            status = self.status()
        up = sum(1 for port in status["ports"].values() if port["state"] == "up")
        broker = status["broker"]
        link = "broker connected" if broker["connected"] else "broker DISCONNECTED"
        text = f"{up}/{len(self.cfg.variants)} ports up; {link}; {broker['outstanding']} unacked"
        if self.last_reload is not None and not self.last_reload.ok:
            text += "; config REFUSED (running the previous one)"
        return text


# --- the command ----------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare run's arguments."""
    parser.add_argument("--config", required=True, help="the main TOML file")


def _install_signals(gateway: Gateway) -> None:
    """SIGTERM/SIGINT stop the daemon; SIGHUP reloads its config."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        gateway.request_stop()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        gateway.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def run(config_path: str | Path) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; return the exit code."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("p1-gateway: invalid configuration; not started", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(cfg.log.format, cfg.log.level)
    notifier = Notifier()
    gateway: Gateway | None = None
    try:
        gateway = Gateway(cfg, notifier)
        _install_signals(gateway)
        gateway.start()
    except (GatewayError, OSError) as exc:  # a spool folder we may not write, a lost file...
        log.error("cannot start", error=str(exc))
        notifier.status(f"cannot start: {exc}")
        if gateway is not None:
            with contextlib.suppress(Exception):  # release what did start, then report
                gateway.stop(timeout=2.0)
        return EXIT_FATAL
    try:
        gateway.serve()
    finally:
        stop_began = time.monotonic()
        gateway.stop(timeout=STOP_BUDGET_S - 0.6)
        flush_logs(max(0.0, STOP_BUDGET_S - (time.monotonic() - stop_began)))
        notifier.close()
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    """`p1-gateway run --config FILE`."""
    return run(args.config)
