"""The multiplexer: one reader thread serves every meter port of the rig.

The thread runs an epoll loop over the descriptors of all open ports plus a wake-up pipe.
Each readiness gives one `os.read` of up to 64 KiB, timed once, fed to the port's own `Framer`;
frames and port events go to the one consumer, called in this thread. Reads are coalesced
(`gateway.mux.coalesce`): once a port has shown how long its frames take, the descriptor is
parked (epoll mask 0: only a hang-up or error still reports) after the read that begins a frame,
and read directly shortly before the frame should end, then armed again for its last bytes. Ports
whose pyserial handler has no descriptor (rfc2217://, loop://) are polled every 20 ms: the
rfc2217 handler already runs its own socket thread and queues bytes, so there is nothing to
select on, and 50 cheap polls a second cost next to nothing at P1 rates.

Opening happens off the loop, in a small thread pool: a socket:// or rfc2217:// open can wait
seconds on an unreachable host, and the other ports must not stall meanwhile. A lost port is
closed at once and reopened by its configured name with backoff (0.1 s doubling to 1 s); while
a device path is missing, its presence is checked every 50 ms so a replugged device is
reopened at once; after 30 s missing, every 0.5 s (a rig may stand with a meter unplugged for
days). Those decisions, framing, health and the events they make are each port's `PortState`
(`gateway.mux.portstate`, pure); this module is the IO around it: epoll, the pool, the locks.

`apply(configs)` may be called from any thread: the loop picks the new set up through the
wake-up pipe and touches only ports that were added, removed or changed; an unchanged port
keeps its descriptor, its framer's partial frame and its counters.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from gateway.errors import PortLostError
from gateway.mux.events import MuxEvent
from gateway.mux.health import PortHealthSnapshot
from gateway.mux.portstate import PortState, Received, Timings, Visit
from gateway.mux.profile import PortConfig
from gateway.mux.serial_io import (
    OpenPort,
    describe_open_failure,
    open_port,
    path_missing,
    poll_read,
    read_fd,
)
from gateway.threadnames import name_this_thread

log = logging.getLogger(__name__)

Consumer = Callable[[MuxEvent], None]
Opener = Callable[[PortConfig], OpenPort]

#: A parked port due within this much is read along with what woke the loop (epoll's timeout
#: has a 1 ms resolution anyway).
_PARK_SLACK_NS = 1_000_000


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    """What an `apply` changes: variant ids by what happens to them."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    version: int


@dataclass(frozen=True, slots=True)
class LoopProgress:
    """Whether the reader loop is alive and moving: what the daemon's watchdog checks."""

    running: bool
    iterations: int
    last_iteration_monotonic_ns: int
    """0 until the first iteration; the loop wakes at least every `tick_s` even when idle."""
    cpu_s: float | None
    """CPU time the reader thread has used (None when not running)."""


class _Port:
    """The loop's handle on one variant's port: its pure state, and the IO that goes with it."""

    __slots__ = ("armed", "open", "park_until_ns", "state")

    def __init__(self, state: PortState) -> None:
        self.state = state
        self.open: OpenPort | None = None
        self.armed = False
        """Whether the descriptor is registered for readability (False: parked, or none)."""
        self.park_until_ns = 0
        """When to read the parked descriptor directly; 0 when not parked."""


class Multiplexer:
    """Reads every configured port in one thread and reports frames and port events."""

    def __init__(
        self,
        consumer: Consumer,
        ports: Iterable[PortConfig] = (),
        *,
        reopen_initial_s: float = 0.1,
        reopen_max_s: float = 1.0,
        tick_s: float = 1.0,
        poll_interval_s: float = 0.02,
        presence_check_s: float = 0.05,
        presence_slow_s: float = 0.5,
        presence_slow_after_s: float = 30.0,
        read_size: int = 65536,
        coalesce: bool = True,
        coalesce_guard_s: float = 0.003,
        open_workers: int = 4,
        opener: Opener = open_port,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
        name: str = "p1-mux",
    ) -> None:
        self._consumer = consumer
        self._timings = Timings.of(
            reopen_initial_s=reopen_initial_s,
            reopen_max_s=reopen_max_s,
            poll_interval_s=poll_interval_s,
            presence_check_s=presence_check_s,
            presence_slow_s=presence_slow_s,
            presence_slow_after_s=presence_slow_after_s,
            coalesce=coalesce,
            coalesce_guard_s=coalesce_guard_s,
        )
        self._tick_ns = int(tick_s * 1e9)
        self._read_size = read_size
        self._open_workers = open_workers
        self._opener = opener
        self._mono = monotonic_ns
        self._wall = wall_ns
        self._name = name

        self._lock = threading.Lock()
        self._applied = threading.Condition(self._lock)
        self._desired: dict[str, PortConfig] = {}
        self._desired_version = 0
        self._applied_version = -1
        self._results: list[tuple[_Port, int, OpenPort | None, BaseException | None]] = []
        self._shut = False

        self._health_lock = threading.Lock()
        self._ports: dict[str, _Port] = {}
        self._attention: set[_Port] = set()
        """Ports the loop must visit without readiness: waiting to reopen, or polled."""
        self._parked: set[_Port] = set()
        """Ports whose descriptor is parked until their `park_until_ns`."""
        self._by_fd: dict[int, _Port] = {}

        self._thread: threading.Thread | None = None
        self._stopping = False
        self._iterations = 0
        self._last_iteration_ns = 0
        self._next_tick_ns = 0
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.apply(ports)

    # --- public API -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread; ports open in the background."""
        if self._thread is not None:
            raise RuntimeError("multiplexer already started")
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._open_workers, thread_name_prefix=f"{self._name}-open"
        )
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every port and end the reader thread (PortClosed 'stopped' for each open one)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            log.error("mux reader thread did not stop within %.1f s", timeout)

    def __enter__(self) -> Multiplexer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def apply(self, ports: Iterable[PortConfig], *, timeout: float | None = None) -> ApplyPlan:
        """Make `ports` the set of ports read; only added, removed or changed ones are touched.

        Thread-safe. Returns at once with the plan; with `timeout`, waits (while running) until
        the loop has acted on it (closed and started opening; not until the opens succeed).
        """
        desired: dict[str, PortConfig] = {}
        for config in ports:
            if config.variant in desired:
                raise ValueError(f"variant {config.variant} configured twice")
            desired[config.variant] = config
        with self._lock:
            old = self._desired
            plan = ApplyPlan(
                added=tuple(v for v in desired if v not in old),
                removed=tuple(v for v in old if v not in desired),
                changed=tuple(v for v in desired if v in old and old[v] != desired[v]),
                unchanged=tuple(v for v in desired if v in old and old[v] == desired[v]),
                version=self._desired_version + 1,
            )
            self._desired = desired
            self._desired_version = plan.version
        self._wake()
        if timeout is not None and self._thread is not None:
            self.wait_applied(plan, timeout)
        return plan

    def wait_applied(self, plan: ApplyPlan, timeout: float) -> bool:
        """Wait until the loop has acted on `plan` (or a later one); False on timeout."""
        with self._applied:
            return self._applied.wait_for(
                lambda: self._applied_version >= plan.version or self._shut, timeout
            )

    def snapshot(self) -> dict[str, PortHealthSnapshot]:
        """Every port's health now, frozen, keyed by variant."""
        now = self._mono()
        with self._health_lock:
            return {v: p.state.snapshot(now) for v, p in self._ports.items()}

    def progress(self) -> LoopProgress:
        """The reader loop's liveness: iterations and the time of the last one."""
        thread = self._thread
        running = thread is not None and thread.is_alive()
        cpu: float | None = None
        if running and thread is not None and thread.ident is not None:
            try:
                cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, AttributeError):
                cpu = None
        return LoopProgress(running, self._iterations, self._last_iteration_ns, cpu)

    def fileno(self, variant: str) -> int | None:
        """The descriptor a port is read through now (diagnostics and tests), None if none."""
        port = self._ports.get(variant)
        if port is None or port.open is None:
            return None
        return port.open.fd

    def framer_pending(self, variant: str) -> int:
        """How many bytes of an unfinished frame the port's framer holds (diagnostics)."""
        port = self._ports.get(variant)
        return 0 if port is None else port.state.pending

    def next_presence_check(self, variant: str) -> int | None:
        """The monotonic time a missing port's path is checked next (diagnostics), else None."""
        port = self._ports.get(variant)
        return None if port is None else port.state.next_presence_check_ns()

    def parked_until(self, variant: str) -> int | None:
        """The monotonic time a parked port is read at next (diagnostics), None if not parked."""
        port = self._ports.get(variant)
        until = 0 if port is None else port.park_until_ns
        return until or None

    @property
    def configs(self) -> dict[str, PortConfig]:
        """The port set last given to `apply`."""
        with self._lock:
            return dict(self._desired)

    # --- the loop ---------------------------------------------------------------------------

    def _wake(self) -> None:
        """Nudge the loop out of select (a full pipe already means it will wake)."""
        with self._lock:
            if self._wake_w >= 0 and not self._shut:
                with contextlib.suppress(OSError):  # full: the loop wakes anyway
                    os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        """The reader loop: wait, read, frame, emit; read parked ports due; housekeeping."""
        epoll = self._epoll
        assert epoll is not None
        name_this_thread(self._name)
        wake_r, by_fd = self._wake_r, self._by_fd
        try:
            while not self._stopping:
                ready = epoll.poll(self._timeout())
                woke = self._mono() if ready else 0
                for fd, _mask in ready:
                    if fd == wake_r:
                        self._drain_wake()
                        continue
                    port = by_fd.get(fd)
                    if port is not None:
                        if not port.armed:  # a parked descriptor reports a hang-up or error
                            self._arm(port)
                        self._read(port, ready_ns=woke)
                if self._parked:
                    self._read_parked_due()
                try:
                    self._service()
                except Exception:
                    log.exception("mux housekeeping failed; the loop goes on")
                self._iterations += 1
                self._last_iteration_ns = self._mono()
        finally:
            self._shutdown()

    def _timeout(self) -> float:
        """How long to wait: until the next tick, park deadline, retry, poll or presence check."""
        now = self._mono()
        due = self._next_tick_ns
        for port in self._parked:
            due = min(due, port.park_until_ns)
        for port in self._attention:
            wakeup = port.state.wakeup_ns()
            if wakeup is not None:
                due = min(due, wakeup)
        return max(0.0, min(due - now, self._tick_ns) / 1e9)

    def _drain_wake(self) -> None:
        """Empty the wake-up pipe."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _read(self, port: _Port, *, parked: bool = False, ready_ns: int = 0) -> None:
        """One read from a ready (or parked and due) port, framed, reported, then park or arm.

        A parked port is read without readiness: 0 bytes (or end of file, which an empty tty
        with VMIN=0 also gives) then only means "nothing yet", and the port is armed, so that a
        real end of file is reported by readiness and the next armed read, as ever.

        `ready_ns`: when epoll reported the readiness. The coalescer times a read on readiness
        by it rather than by the read itself: the bytes were there by then, and the consumer's
        work for the ports read before this one in the same round must not shift the
        prediction of when this port's frame ends.
        """
        opened = port.open
        if opened is None or opened.fd is None:
            return
        config = port.state.config
        try:
            data = read_fd(opened.fd, self._read_size, config.variant, config.url)
        except PortLostError as exc:
            if not (parked and exc.__cause__ is None):
                self._lose(port, str(exc))
                return
            data = b""  # end of file without readiness: see above
        mono, wall = (self._mono(), self._wall()) if data else (0, 0)
        with self._health_lock:
            received = port.state.received(data, mono, wall, ready_ns=ready_ns, parked=parked)
        self._deliver(port, received)
        if port.open is not opened:
            return
        if received.park_until_ns:
            self._park(port, received.park_until_ns)
        elif not port.armed:
            self._arm(port)

    def _park(self, port: _Port, until_ns: int) -> None:
        """Stop waking for the port's bytes until `until_ns` (a hang-up or error still wakes)."""
        if port.armed:
            assert self._epoll is not None and port.open is not None and port.open.fd is not None
            self._epoll.modify(port.open.fd, 0)
            port.armed = False
        port.park_until_ns = until_ns
        self._parked.add(port)

    def _arm(self, port: _Port) -> None:
        """Wake for the port's bytes again."""
        if port.park_until_ns:
            port.park_until_ns = 0
            self._parked.discard(port)
        if not port.armed and port.open is not None and port.open.fd is not None:
            assert self._epoll is not None
            self._epoll.modify(port.open.fd, select.EPOLLIN)
            port.armed = True

    def _read_parked_due(self) -> None:
        """Read every parked port whose deadline has come (or comes within the slack)."""
        limit = self._mono() + _PARK_SLACK_NS
        for port in [p for p in self._parked if p.park_until_ns <= limit]:
            if port.park_until_ns and port.park_until_ns <= limit:
                self._read(port, parked=True)

    def _deliver(self, port: _Port, received: Received) -> None:
        """Emit what a read's bytes completed; log a framer that failed on them."""
        if received.framer_error is not None:
            log.error(
                "framer failed on %s; resetting it",
                port.state.config.variant,
                exc_info=received.framer_error,
            )
        self._emit_all(port, received.events)

    def _emit(self, port: _Port, event: MuxEvent) -> None:
        """Hand one event to the consumer; its exceptions are counted, never fatal."""
        try:
            self._consumer(event)
        except Exception:
            with self._health_lock:
                n = port.state.consumer_failed()
            if n <= 3 or n % 1000 == 0:
                log.exception(
                    "consumer raised on %s event of %s (%d so far); reading goes on",
                    type(event).__name__,
                    port.state.config.variant,
                    n,
                )

    def _emit_all(self, port: _Port, events: Iterable[MuxEvent]) -> None:
        """Hand a port's events to the consumer in order."""
        for event in events:
            self._emit(port, event)

    # --- housekeeping -------------------------------------------------------------------------

    def _service(self) -> None:
        """Everything but reading: config changes, open results, polls, retries, health ticks."""
        with self._lock:
            version = self._desired_version
            desired = self._desired if version != self._applied_version else None
            results, self._results = self._results, []
        if desired is not None:
            self._reconcile(desired)
            with self._applied:
                self._applied_version = version
                self._applied.notify_all()
        for port, generation, opened, error in results:
            self._opened(port, generation, opened, error)
        now = self._mono()
        for port in list(self._attention):
            visit = port.state.visit(now)
            if visit is Visit.POLL:
                self._poll(port)
            elif visit is Visit.OPEN or (
                visit is Visit.CHECK_PRESENCE and not path_missing(port.state.config)
            ):
                self._start_open(port)
        if now >= self._next_tick_ns:
            self._next_tick_ns = self._tick(now)

    def _track(self, port: _Port) -> None:
        """Keep the port among those visited without readiness exactly while it needs it."""
        if port.state.wakeup_ns() is None:
            self._attention.discard(port)
        else:
            self._attention.add(port)

    def _tick(self, now: int) -> int:
        """Let time pass: report ports that fell silent, cut frames whose line went quiet;
        return when to tick next.

        That is `tick_s` from now (the loop's liveness), or sooner when a port would fall
        silent or a frame in progress be cut before then; a byte or a telegram meanwhile only
        makes that visit find nothing to do. A frame begun after a tick is looked at by the
        next one: a quiet line cuts it between one and two `truncate_after_s` after its last
        byte. A parked port is read first (its bytes may be waiting), then looked at again.
        """
        wall = self._wall()
        events: list[tuple[_Port, MuxEvent]] = []
        quiet: list[_Port] = []
        next_tick = now + self._tick_ns
        with self._health_lock:
            for port in self._ports.values():
                state = port.state
                cut = state.quiet_due_ns()
                if cut is not None:
                    if cut > now:
                        next_tick = min(next_tick, cut)
                    else:
                        quiet.append(port)
                due = state.silent_due_ns()
                if due is not None and due > now:
                    next_tick = min(next_tick, due)
                    continue
                silent = state.tick(now, wall)
                if silent is not None:
                    events.append((port, silent))
        for port, event in events:
            self._emit(port, event)
        for port in quiet:
            if port.park_until_ns:
                self._read(port, parked=True)
            with self._health_lock:
                expired = port.state.expire(now)
            self._emit_all(port, expired)
        return next_tick

    def _poll(self, port: _Port) -> None:
        """Read a descriptor-less port's buffered bytes."""
        assert port.open is not None
        try:
            data = poll_read(port.open, port.state.config.variant)
        except PortLostError as exc:
            self._lose(port, str(exc))
            return
        if data:
            mono, wall = self._mono(), self._wall()
            with self._health_lock:
                received = port.state.received(data, mono, wall)
            self._deliver(port, received)

    def _reconcile(self, desired: dict[str, PortConfig]) -> None:
        """Bring the open ports in line with the desired set, touching only what differs."""
        now, wall = self._mono(), self._wall()
        self._next_tick_ns = now  # expected intervals may have changed: recompute silence dues
        for variant in [v for v in self._ports if v not in desired]:
            port = self._ports[variant]
            self._close(port, "removed", now, wall)
            with self._health_lock:
                del self._ports[variant]
        for variant, config in desired.items():
            existing = self._ports.get(variant)
            if existing is None:
                port = _Port(PortState(config, self._timings, now))
                with self._health_lock:
                    self._ports[variant] = port
                self._start_open(port)
            elif existing.state.config != config:
                port = existing
                self._close(port, "changed", now, wall)
                with self._health_lock:
                    port.state.reconfigure(config)
                self._start_open(port)

    def _start_open(self, port: _Port) -> None:
        """Open the port in the pool; the loop gets the result through the wake-up pipe."""
        executor = self._executor
        assert executor is not None
        generation = port.state.begin_open()
        self._track(port)
        config = port.state.config

        def attempt() -> None:
            opened: OpenPort | None = None
            error: BaseException | None = None
            try:
                opened = self._opener(config)
            except BaseException as exc:  # handed to the loop, which decides
                error = exc
            with self._lock:
                if not self._shut:
                    self._results.append((port, generation, opened, error))
                    opened = None
            if opened is not None:
                opened.close()  # the multiplexer stopped meanwhile
            else:
                self._wake()

        executor.submit(attempt)

    def _opened(
        self, port: _Port, generation: int, opened: OpenPort | None, error: BaseException | None
    ) -> None:
        """Take the result of an open attempt: register the port, or schedule a retry."""
        state = port.state
        current = self._ports.get(state.config.variant) is port
        if not current or not state.expects(generation):
            if opened is not None:
                opened.close()
            return
        now, wall = self._mono(), self._wall()
        if opened is None:
            missing = path_missing(state.config)
            with self._health_lock:
                events = state.open_failed(now, wall, describe_open_failure(error), missing=missing)
            self._track(port)
            self._emit_all(port, events)
            return
        port.open = opened
        with self._health_lock:
            events = state.opened(
                now, wall, request_line_held=opened.request_line_held, polled=opened.fd is None
            )
            due = state.silent_due_ns()
        if opened.fd is not None:
            assert self._epoll is not None
            self._epoll.register(opened.fd, select.EPOLLIN)
            self._by_fd[opened.fd] = port
            port.armed = True
        self._track(port)
        if due is not None:
            self._next_tick_ns = min(self._next_tick_ns, due)
        self._emit_all(port, events)

    def _detach(self, port: _Port) -> None:
        """Unpark, unregister and close the port's handle."""
        opened = port.open
        port.open = None
        if port.park_until_ns:
            port.park_until_ns = 0
            self._parked.discard(port)
        port.armed = False
        if opened is not None:
            if opened.fd is not None and self._by_fd.get(opened.fd) is port:
                del self._by_fd[opened.fd]
                if self._epoll is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self._epoll.unregister(opened.fd)
            opened.close()

    def _lose(self, port: _Port, text: str) -> None:
        """The port failed while open: close it, mark it down, and retry soon."""
        now, wall = self._mono(), self._wall()
        self._detach(port)
        missing = path_missing(port.state.config)
        with self._health_lock:
            events = port.state.lost(now, wall, text, missing=missing)
        self._track(port)
        self._emit_all(port, events)

    def _close(self, port: _Port, reason: str, now: int, wall: int) -> None:
        """Close a port on purpose, in any phase, and report it (if it was open)."""
        self._detach(port)
        with self._health_lock:
            events = port.state.closed(now, wall, reason)
        self._track(port)
        self._emit_all(port, events)

    def _shutdown(self) -> None:
        """Close everything as the loop ends; late open results are closed on arrival."""
        now, wall = self._mono(), self._wall()
        for port in list(self._ports.values()):
            try:
                self._close(port, "stopped", now, wall)
            except Exception:
                log.exception("closing %s failed", port.state.config.variant)
        with self._applied:
            self._shut = True
            results, self._results = self._results, []
            self._applied.notify_all()
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        for _port, _generation, opened, _error in results:
            if opened is not None:
                opened.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._epoll is not None:
            self._epoll.close()
