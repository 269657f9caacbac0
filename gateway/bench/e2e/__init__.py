"""`p1-gateway bench e2e`: the whole gateway, pseudo-terminal to subscriber, against a baseline.

One run stands up:
- a private mosquitto (`gateway.devkit.mosquitto`: the project's config and ACL, a free
  loopback port, `sys_interval 1` added so that `$SYS` counts what came in every second);
- two virtual rigs of N meters each (`gateway.sim`, default 32 pseudo-terminals over the
  default rig's models), both in this process: one for the gateway, one for the baseline;
- the gateway as a process (`python -m gateway run --config FILE`, rig `rig-a`, a slot for the
  holder `bench` covering the run, defaults otherwise);
- the baseline as a process (`python -m gateway.bench.baseline`, rig `rig-b`): one thread per
  port, pyserial, dsmr_parser's TelegramBuffer and TelegramParser, json, paho QoS 1;
- a subscriber (paho, the holder `bench`) that takes every message's arrival time.

`--baseline floor` (or `floor-decode`) runs `python -m gateway.bench.floor` as the other side
instead: not a rival but a lower bound, the least a Python bridge does a telegram (one thread,
one read a wake-up, the CRC, one hand-built PUBLISH; `floor-decode` adds the gateway's decoder and
encoder too). The gateway's CPU is then read against what no Python design goes below on the
same machine in the same run; the ratio target is only taken against the field's baseline.

Phases, each for one side while the other side's rig is paused, in rounds whose order rotates
so that machine noise weighs on both alike:
- rig load: every meter sends one telegram a second, paced at its serial line's rate, the
  meters' seconds spread evenly (real meters are not in step). Latency: from the moment the
  simulator wrote a telegram's last byte to the pty (its `on_written` hook) to the
  subscriber's receipt of the decoded message. CPU of the side's process over the phase.
- load: the same at an equal offered rate for both sides (`--load-rate` telegrams/s in total,
  default 800, unpaced): CPU per telegram side by side, and latency under load.
- flood: every meter back to back, unpaced (as fast as the pty takes bytes; or `--flood-rate`
  telegrams/s in total). Telegrams/s into mosquitto (`$SYS/broker/publish/messages/received`,
  divided by the messages per telegram: 2 for the gateway, telegram + raw, 1 for the baseline),
  out of it (the subscriber's count), the simulator's own output, CPU per telegram.
RSS (VmRSS, VmHWM) of each process is read at the end of each phase. After each phase every
telegram the simulator sent must reach the subscriber (nothing lost); a shortfall is printed.

The parts: `cli` (its options and `main`), `run` (the bench: broker, rigs, processes, phases),
`procstats` (a process's CPU, memory and threads, read from outside), `subscriber` (the
holder's MQTT client timing each arrival) and `report` (the figures pooled, the table, the
targets).
"""

from gateway.bench.e2e.cli import configure, main

__all__ = ["configure", "main"]
