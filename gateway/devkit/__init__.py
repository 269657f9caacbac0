"""Tools for development, tests, the demo and the benchmarks: a private mosquitto and a probe.

Not used by the daemon itself; kept in the package so `p1-gateway bench` and `scripts/demo`
work from an installed copy, without the test tree.
"""
