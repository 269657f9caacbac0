"""The gateway's side of `[schedule] source = "mqtt"`: the lab's schedule, followed from the broker.

The MQTT link subscribes to `p1/R/schedule` on every connect and gives each message to
`handoff` on paho's network thread, which only enqueues it and wakes the main loop. The main
thread (`Gateway.serve`) then `take`s what came: each payload is judged whole by the pure
`Follower`; an accepted version that differs from the one kept on disk is written there
(atomically, in the spool's folder) first; every verdict goes back to the gateway, which applies
an accepted schedule as a diff (as a reload does) and publishes the answer on
`p1/R/schedule/applied`.

At a start the kept version is read back, so the gateway routes by it while the broker is away.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway.daemon.statusfile import ScheduleStatus
from gateway.errors import ScheduleError, ScheduleStoreError
from gateway.publish.follow import Follower, Verdict, Version, read_version
from gateway.publish.mqtt import Inbound
from gateway.publish.schedule import SlotSchedule
from gateway.publish.schedulefile import ScheduleFile

log = structlog.get_logger("p1-gateway")


class ScheduleFollowing:
    """The schedule from the broker: the inbox, the judge, the kept copy; see the module doc."""

    def __init__(self, rig: str, folder: Path, wake: Callable[[], None]):
        self.file = ScheduleFile(folder)
        self.inbox: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._wake = wake
        self.last_error: str | None = None
        """Why the kept copy could not be read or written, the last time it could not."""
        self.follower = Follower(rig, self._kept(rig))

    def _kept(self, rig: str) -> Version | None:
        """The version kept on disk, when there is a valid one."""
        try:
            payload = self.file.load()
            return None if payload is None else read_version(rig, payload)
        except (ScheduleError, ScheduleStoreError) as exc:
            self.last_error = f"{self.file.path}: {exc}"
            log.error("the kept schedule is unusable: no slots until the broker's", error=str(exc))
            return None

    @property
    def schedule(self) -> SlotSchedule:
        """The schedule applied now."""
        return self.follower.schedule

    def handoff(self, message: Inbound) -> None:
        """On paho's network thread: enqueue the message and wake the main loop, nothing more."""
        self.inbox.put(message)
        self._wake()

    def take(self) -> list[Verdict]:
        """Judge every message that came (main thread), keep each new version on disk, log;
        the verdicts, in order, for the gateway to apply and answer."""
        out: list[Verdict] = []
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return out
            verdict = self.follower.offer(message.payload)
            if verdict is None:
                log.info(
                    "the broker's schedule was cleared; the applied one stays",
                    applied=self.follower.version,
                )
                continue
            out.append(verdict)
            taken = verdict.taken
            if taken is None:
                log.error(
                    "schedule from the broker refused; the applied one stays",
                    answered=verdict.version,
                    reason=verdict.refused,
                    applied=self.follower.version,
                )
                continue
            if verdict.keep:
                try:
                    self.file.save(taken.payload)
                    self.last_error = None
                except ScheduleStoreError as exc:
                    self.last_error = str(exc)
                    log.error("schedule applied but not kept on disk", error=str(exc))
            if verdict.keep or verdict.changed:
                log.info(
                    "schedule from the broker applied",
                    version=taken.version,
                    slots=len(taken.schedule),
                    changed=verdict.changed,
                )

    def status(self) -> ScheduleStatus:
        """The status file's `schedule` section."""
        return ScheduleStatus(
            source="mqtt",
            version=self.follower.version,
            refused=self.follower.refused,
            error=self.last_error,
        )
