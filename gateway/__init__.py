"""p1-gateway: reads the P1 ports of a smart-meter test rig and publishes telegrams over MQTT."""

__version__ = "0.1.0"
