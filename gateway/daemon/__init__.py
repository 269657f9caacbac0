"""The daemon and its commands: what only `p1-gateway run`, `status` and `check-config` need.

`service` wires the multiplexer to the publisher and runs the main loop; `statusfile` is the
status file's one schema, written by `statuswriter` and read by `status` (the technician's
table); `notify`, `logs` and `logsink` talk to systemd and journald without ever waiting on
them; `watch` notices changed config files; `observe` decides what a meter showed change
(pure) and `meternotices` stores and posts the notices; `checkconfig` validates a config. Nothing is
imported here, so each command loads only what it uses.
"""
