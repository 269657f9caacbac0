"""Publishing: slot schedule, routing, topics, payloads, the durable spool and the MQTT link.

The daemon builds a `Publisher` from `PublisherSettings` and a `SlotSchedule`, calls `start()`,
feeds it from the reader thread with `submit_telegram` / `submit_invalid`, swaps schedules with
`set_schedule`, publishes the catalogue and port health, watches `liveness()` and calls `stop()`.
"""

from gateway.publish.clock import SystemClockProbe, kernel_clock_synchronized
from gateway.publish.payload import PayloadError, encode_json
from gateway.publish.publisher import Publisher
from gateway.publish.reports import (
    PublisherCounters,
    PublisherLiveness,
    PublisherStatus,
    SubmitOutcome,
)
from gateway.publish.router import Reception, Route, Router
from gateway.publish.schedule import ScheduleError, Slot, SlotSchedule
from gateway.publish.settings import MqttSettings, PublisherSettings, SpoolSettings
from gateway.publish.topics import (
    SlotTopicKind,
    TopicBuilder,
    validate_holder,
    validate_rig_id,
    validate_topic_prefix,
    validate_variant_id,
)
from gateway.timefmt import rfc3339_utc

__all__ = [
    "MqttSettings",
    "PayloadError",
    "Publisher",
    "PublisherCounters",
    "PublisherLiveness",
    "PublisherSettings",
    "PublisherStatus",
    "Reception",
    "Route",
    "Router",
    "ScheduleError",
    "Slot",
    "SlotSchedule",
    "SlotTopicKind",
    "SpoolSettings",
    "SubmitOutcome",
    "SystemClockProbe",
    "TopicBuilder",
    "encode_json",
    "kernel_clock_synchronized",
    "rfc3339_utc",
    "validate_holder",
    "validate_rig_id",
    "validate_topic_prefix",
    "validate_variant_id",
]
