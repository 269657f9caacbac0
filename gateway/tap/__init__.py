"""`p1-gateway tap`: the tester's side of a rig's meter, as a local TCP port or serial port.

`core` is pure (what to write, in order and once; pacing; bounded output buffers); `mqtt`,
`outputs` and `service` are the IO shells around it (paho, TCP fan-out and ptys, the IO loop);
`cli` is the command.
"""
