"""The lab beside the central broker: bookings, tester and rig accounts, schedules for the rigs.

`rules` is pure (the booking rules, the clock passed in); `store` keeps the lab in SQLite;
`dynsec` talks to mosquitto's dynamic security plugin as its admin; `accounts` holds the roles;
`tell` sends each rig its schedule; `cli` is `p1-gateway lab`.
"""
