"""The project's benchmarks: they import the gateway, the gateway never imports them.

- `cli`: `p1-gateway bench decode|e2e|cold`, one module per benchmark;
- `decode`: our decoder against dsmr_parser's TelegramParser on the corpus;
- `e2e`: the whole gateway, pseudo-terminal to subscriber, against a baseline;
- `baseline`, `floor`: the other side of `bench e2e` (the field's bridge, the least one);
- `cold`: the same work's CPU right after its thread slept;
- `callgrind`: instructions per telegram, counted by valgrind (`python -m gateway.bench.callgrind`);
- `mux`: the multiplexer alone, throughput and recovery (`python -m gateway.bench.mux`).

Nothing is imported here: `python -m gateway.bench.floor` loads only what the floor needs.
"""
