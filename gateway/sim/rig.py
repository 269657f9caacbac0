"""The virtual rig: a set of simulated meters on pseudo-terminals, driven by one thread.

Used by `p1-gateway simulate`, by the tests, the demo and the end-to-end benchmark:

    with VirtualRig(link_dir=tmp) as rig:          # the default rig, one meter per kind
        print(rig.variants_toml())                 # [[variant]] entries for the gateway
        rig.meter("fluvius-t211").unplug(2.0)      # faults on demand
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType

from gateway.sim.catalogue import DEFAULT_RIG, MeterModel
from gateway.sim.meter import DEFAULT_BACKLOG_LIMIT, SimulatedMeter

_VARIANT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class VirtualRig:
    """Simulated meters, one pseudo-terminal each, emitting real telegrams on their schedule."""

    def __init__(
        self,
        models: Iterable[MeterModel] = DEFAULT_RIG,
        *,
        link_dir: Path | str | None = None,
        rate: float | str | None = None,
        line_pacing: bool = True,
        start_time: datetime | None = None,
        backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
        seed: int = 0,
        start_paused: bool = False,
    ) -> None:
        self.link_dir = None if link_dir is None else Path(link_dir)
        self._lock = threading.RLock()
        self._wake_r = self._wake_w = -1
        self.meters: dict[str, SimulatedMeter] = {}
        for n, model in enumerate(models):
            if model.id in self.meters:
                raise ValueError(f"meter id {model.id} used twice")
            if not (
                0 < len(model.id) <= 32
                and model.id[0] != "-"
                and set(model.id) <= _VARIANT_ID_CHARS
            ):
                raise ValueError(f"meter id {model.id!r} is not [a-z0-9][a-z0-9-]{{0,31}}")
            self.meters[model.id] = SimulatedMeter(
                model,
                link_dir=self.link_dir,
                rate=rate,
                line_pacing=line_pacing,
                start_time=start_time,
                backlog_limit=backlog_limit,
                seed=seed + n,
                lock=self._lock,
            )
            self.meters[model.id].notify = self._wake
            if start_paused:
                self.meters[model.id].pause()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.error: BaseException | None = None
        """What ended the rig thread, if anything did."""

    # --- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Open every meter's pty (paths are known on return) and start emitting."""
        if self._thread is not None:
            raise RuntimeError("rig already started")
        if self.link_dir is not None:
            self.link_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for meter in self.meters.values():
                meter.plug()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="p1-sim-rig", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop emitting, close every pty and remove the symlinks."""
        thread = self._thread
        if thread is None:
            return
        self._stop = True
        self._wake()
        thread.join(5.0)
        with self._lock:
            for meter in self.meters.values():
                meter.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._thread = None

    def __enter__(self) -> VirtualRig:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- control ------------------------------------------------------------------------------

    def meter(self, variant: str) -> SimulatedMeter:
        """One meter by variant id."""
        return self.meters[variant]

    def pause(self) -> None:
        """Stop emitting telegrams on every meter (queued bytes still go out)."""
        for meter in self.meters.values():
            meter.pause()

    def resume(self) -> None:
        """Emit telegrams again on every meter."""
        for meter in self.meters.values():
            meter.resume()
        self._wake()

    def set_rate(self, rate: float | str | None, *, line_pacing: bool | None = None) -> None:
        """Change every meter's rate (and pacing, when given); see `SimulatedMeter.set_rate`."""
        for meter in self.meters.values():
            meter.set_rate(rate, line_pacing=line_pacing)
        self._wake()

    def drained(self) -> bool:
        """Whether every plugged meter has written all it queued."""
        return all(
            not s.backlog and not s.noise_pending
            for s in (m.stats() for m in self.meters.values())
            if s.plugged
        )

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every queued byte is written to its pty; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.drained():
                return True
            time.sleep(0.01)
        return self.drained()

    def ports(self) -> dict[str, str]:
        """What the gateway should open for each variant (symlink, else the current pty)."""
        return {v: m.port or "" for v, m in self.meters.items()}

    def variants_toml(self) -> str:
        """The rig as the gateway's [[variant]] entries (port = the symlink or pty path)."""
        out = [
            "# Variants of a p1-gateway virtual rig (p1-gateway simulate).",
            "# Ports are symlinks re-pointed on replug when the rig was given --link-dir;",
            "# bare /dev/pts paths change on replug.",
        ]
        for variant, meter in self.meters.items():
            model = meter.model
            out += [
                "",
                "[[variant]]",
                f"id = {_toml_str(variant)}",
                f"port = {_toml_str(meter.port or '')}",
                f"spec = {_toml_str(model.spec)}",
                f"model = {_toml_str(model.description)}",
            ]
        return "\n".join(out) + "\n"

    # --- the thread ---------------------------------------------------------------------------

    def _wake(self) -> None:
        """Nudge the rig thread."""
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # a full pipe wakes it anyway
                os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        """Serve every meter: emit what is due, write what the ptys take, sleep till next."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered: set[int] = set()
        try:
            while not self._stop:
                now = time.monotonic_ns()
                wake = now + 100_000_000
                writers: set[int] = set()
                with self._lock:
                    for meter in self.meters.values():
                        due = meter.service(now)
                        if due is not None:
                            wake = min(wake, due)
                        if meter.wants_write and not meter.line_pacing:
                            writers.add(meter.master_fd)
                for fd in registered - writers:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        poller.unregister(fd)
                for fd in writers - registered:
                    poller.register(fd, select.POLLOUT)
                registered = writers
                timeout_ms = max(0.0, (wake - time.monotonic_ns()) / 1e6)
                for fd, _event in poller.poll(timeout_ms):
                    if fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self._wake_r, 4096):
                                pass
        except BaseException as exc:  # reported through .error; the rig is dead
            self.error = exc
            raise


def _toml_str(text: str) -> str:
    """A TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
