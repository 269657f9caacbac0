"""The publisher's own frozen settings; the daemon maps its config onto them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.identifiers import validate_rig_id, validate_topic_prefix


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """How to reach the broker and how to publish."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    """The password itself (the daemon reads the first line of the password file)."""
    tls_ca_file: Path | None = None
    """TLS is on when set: the CA bundle that signs the broker's certificate."""
    topic_prefix: str = "p1"
    qos: int = 1
    client_id: str | None = None
    """Default `p1gw-<rig>`."""
    keepalive: int = 30
    protocol: str = "5"
    """"5" (falls back to 3.1.1 when the broker refuses v5) or "3.1.1"."""
    window: int = 16
    """Messages in flight (published, not yet acknowledged) at most."""
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 15.0

    def __post_init__(self) -> None:
        validate_topic_prefix(self.topic_prefix)
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos!r}")
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', not {self.protocol!r}")
        if not 1 <= self.window <= 1000:
            raise ValueError(f"window must be 1..1000, not {self.window!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535, not {self.port!r}")


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    """Where unacknowledged messages wait, how big the spool may grow, how often it commits."""

    dir: Path
    max_bytes: int = 256 * 1024 * 1024
    """When exceeded, the oldest messages are dropped (counted in `dropped_full`)."""
    batch_interval: float = 1.0
    """Group commit period in seconds: the most a power cut can lose."""
    filename: str = "spool.sqlite3"
    max_pending: int = 100_000
    """Uncommitted messages kept in memory at most (only reached while commits fail)."""
    max_dead: int = 10_000
    """Dead letters kept (oldest deleted first)."""
    seq_block: int = 1000
    """seq values reserved durably ahead of use; a restart skips the rest of a block."""

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if not 0 < self.batch_interval <= 60:
            raise ValueError("batch_interval must be in (0, 60] seconds")
        if self.seq_block < 1:
            raise ValueError("seq_block must be positive")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self.dir / self.filename


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Everything the publisher needs besides the slot schedule."""

    rig: str
    mqtt: MqttSettings
    spool: SpoolSettings
    require_sync: bool = True
    max_held: int = 5000
    """Receptions held at most while the clock is unsynchronised (oldest dropped, counted)."""
    end_lag: float = 2.0
    """Seconds a session's `end` waits past the slot's end for receptions read before it and
    handed over later (keep it above the longest such delay, a frame reported late)."""

    def __post_init__(self) -> None:
        validate_rig_id(self.rig)
        if not 0 <= self.end_lag <= 60:
            raise ValueError(f"end_lag must be 0..60 seconds, not {self.end_lag!r}")
