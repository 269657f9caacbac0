"""Tests use the package's private-broker tools (gateway.devkit.mosquitto)."""

from gateway.devkit.mosquitto import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    OPENSSL,
    REPO,
    TEMPLATE_DIR,
    MosquittoBroker,
    MqttProbe,
    Received,
    free_port,
    wait_until,
)

__all__ = [
    "MOSQUITTO",
    "MOSQUITTO_PASSWD",
    "OPENSSL",
    "REPO",
    "TEMPLATE_DIR",
    "MosquittoBroker",
    "MqttProbe",
    "Received",
    "free_port",
    "wait_until",
]
