"""Rig, tester and planner accounts in mosquitto's dynamic security plugin, and their roles.

The plugin of mosquitto 2.0 substitutes no `%u` in role ACLs, so every rig and every tester
gets a role of its own (`p1-rig-R`, `p1-tester-H`); the planner gets `p1-lab-planner` beside
the admin role `mosquitto_ctrl dynsec init` gave it. The broker's default is deny for sending,
subscribing and receiving, so a tester subscribed to `p1/#` receives only what its role lets
it read:

- tester H reads `p1/+/slot/H/#`, `p1/+/status`, `p1/+/variants`, `p1/+/health/#`,
  `p1/+/calendar`, `p1/+/notice/#` and `p1/lab/notice/#` (it may subscribe anywhere under
  `p1/#`), and writes nothing;
- rig R reads `p1/R/schedule` and writes `p1/R/#` but not `p1/R/schedule`;
- the planner reads every rig's `schedule`, `schedule/applied`, `status` and `bridge/state`,
  and writes `p1/+/schedule` and `p1/+/notice/#`.

Accounts the lab made carry a mark in their description: one left behind (a failed command,
a restored store) is made anew, whereas an account of that name the lab did not make is never
touched. A new password has 192 random bits; the plugin keeps only its salted hash.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import Any

from gateway.errors import DynsecError, LabBrokerError
from gateway.lab.dynsec import AdminLink

PLANNER_ROLE = "p1-lab-planner"
TESTER_MARK = "p1-lab tester"
RIG_MARK = "p1-lab rig"
#: The broker-wide defaults the lab needs (unsubscribing stays allowed).
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False}

Acl = dict[str, Any]


def new_password() -> str:
    """A password or access code: 192 random bits, URL-safe (no spaces, fits mosquitto.conf)."""
    return secrets.token_urlsafe(24)


def _acl(acltype: str, topic: str, allow: bool = True, priority: int = 0) -> Acl:
    """One role ACL as the plugin's JSON has it."""
    return {"acltype": acltype, "topic": topic, "allow": allow, "priority": priority}


def _read(topic: str) -> list[Acl]:
    """Subscribe to and receive `topic`."""
    return [_acl("subscribePattern", topic), _acl("publishClientReceive", topic)]


def tester_role(name: str) -> str:
    """The role of tester `name`."""
    return f"p1-tester-{name}"


def rig_role(rig: str) -> str:
    """The role of rig `rig`."""
    return f"p1-rig-{rig}"


def tester_acls(prefix: str, name: str) -> list[Acl]:
    """A tester's role: subscribe anywhere under the prefix, receive its own slot topics and
    the public ones, send nothing."""
    readable = [
        f"{prefix}/+/slot/{name}/#",
        f"{prefix}/+/status",
        f"{prefix}/+/variants",
        f"{prefix}/+/health/#",
        f"{prefix}/+/calendar",
        f"{prefix}/+/notice/#",
        f"{prefix}/lab/notice/#",
    ]
    return [_acl("subscribePattern", f"{prefix}/#")] + [
        _acl("publishClientReceive", t) for t in readable
    ]


def rig_acls(prefix: str, rig: str) -> list[Acl]:
    """A rig's role: write its own subtree but not its schedule, read its schedule."""
    return [
        _acl("publishClientSend", f"{prefix}/{rig}/schedule", allow=False, priority=10),
        _acl("publishClientSend", f"{prefix}/{rig}/#"),
        *_read(f"{prefix}/{rig}/schedule"),
    ]


def planner_acls(prefix: str) -> list[Acl]:
    """The planner's role: publish schedules and notices, read what the rigs say back."""
    return [
        _acl("publishClientSend", f"{prefix}/+/schedule"),
        _acl("publishClientSend", f"{prefix}/+/notice/#"),
        *_read(f"{prefix}/+/schedule"),
        *_read(f"{prefix}/+/schedule/applied"),
        *_read(f"{prefix}/+/status"),
        *_read(f"{prefix}/+/bridge/state"),
    ]


def _same_acls(found: Sequence[Acl], wanted: Sequence[Acl]) -> bool:
    """Whether a role's ACLs are exactly these (in any order)."""

    def key(acl: Acl) -> tuple[str, str, bool, int]:
        return (
            str(acl.get("acltype")),
            str(acl.get("topic")),
            bool(acl.get("allow")),
            int(acl.get("priority", 0)),
        )

    return sorted(map(key, found)) == sorted(map(key, wanted))


class Accounts:
    """The lab's accounts on one broker, through the planner's link."""

    def __init__(self, link: AdminLink, prefix: str):
        self.link = link
        self.prefix = prefix

    # --- reading ---------------------------------------------------------------------------

    def client(self, username: str) -> dict[str, Any] | None:
        """The plugin's client of that name, or None."""
        (answer,) = self.link.commands({"command": "getClient", "username": username})
        if "error" in answer:
            if "not found" in str(answer["error"]).lower():
                return None
            raise DynsecError("getClient", str(answer["error"]))
        client = answer.get("data", {}).get("client")
        return client if isinstance(client, dict) else None

    def made_by_lab(self, username: str, mark: str) -> bool | None:
        """None when no such client exists; else whether the lab made it (with `mark`)."""
        client = self.client(username)
        if client is None:
            return None
        return client.get("textdescription") == mark

    # --- the planner -----------------------------------------------------------------------

    def ensure_planner(self, *, again: bool = True) -> None:
        """Make the broker ready for the lab, when it is not yet: the deny defaults, the
        planner's role, and that role on the planner's own client (which makes the plugin
        close the planner's connection: the link connects again, and checks once more)."""
        me = self.link.address.username
        access, role, client = self.link.commands(
            {"command": "getDefaultACLAccess"},
            {"command": "getRole", "rolename": PLANNER_ROLE},
            {"command": "getClient", "username": me},
        )
        if "error" in access or "error" in client:
            raise DynsecError("getClient", str(access.get("error") or client.get("error")))
        now = {a.get("acltype"): a.get("allow") for a in access["data"].get("acls", [])}
        changes: list[dict[str, Any]] = []
        if any(now.get(kind) != allow for kind, allow in DEFAULT_ACCESS.items()):
            acls = [{"acltype": k, "allow": v} for k, v in DEFAULT_ACCESS.items()]
            changes.append({"command": "setDefaultACLAccess", "acls": acls})
        wanted = planner_acls(self.prefix)
        kicks: list[dict[str, Any]] = []
        if "error" in role:
            changes.append({"command": "createRole", "rolename": PLANNER_ROLE, "acls": wanted})
        elif not _same_acls(role["data"]["role"].get("acls", []), wanted):
            kicks.append({"command": "modifyRole", "rolename": PLANNER_ROLE, "acls": wanted})
        mine = [r.get("rolename") for r in client["data"]["client"].get("roles", [])]
        if PLANNER_ROLE not in mine:
            kicks.append({"command": "addClientRole", "username": me, "rolename": PLANNER_ROLE})
        for answer in self.link.commands(*changes) if changes else []:
            if "error" in answer:
                raise DynsecError(str(answer.get("command")), str(answer["error"]))
        if kicks and again:
            self.link.send_and_rejoin(*kicks)
            self.ensure_planner(again=False)
        elif kicks:
            raise LabBrokerError("the plugin did not give the planner its role")

    # --- testers and rigs ------------------------------------------------------------------

    def _ensure_role(self, rolename: str, acls: list[Acl]) -> None:
        """The role with exactly these ACLs, made or corrected."""
        (answer,) = self.link.commands({"command": "getRole", "rolename": rolename})
        if "error" in answer:
            self.link.command({"command": "createRole", "rolename": rolename, "acls": acls})
        elif not _same_acls(answer["data"]["role"].get("acls", []), acls):
            self.link.command({"command": "modifyRole", "rolename": rolename, "acls": acls})

    def _create(self, username: str, rolename: str, acls: list[Acl], mark: str) -> str:
        """A fresh client with a role of its own and a new password; the password. A client
        of that name the lab made before is deleted first: the new one starts clean."""
        if self.made_by_lab(username, mark):
            self.link.command({"command": "deleteClient", "username": username})
        self.delete_role(rolename)
        self.link.command({"command": "createRole", "rolename": rolename, "acls": acls})
        password = new_password()
        self.link.command(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "textdescription": mark,
                "roles": [{"rolename": rolename}],
            }
        )
        return password

    def create_tester(self, name: str) -> str:
        """Tester `name`'s account and role, new; its access code."""
        return self._create(name, tester_role(name), tester_acls(self.prefix, name), TESTER_MARK)

    def create_rig(self, rig: str) -> str:
        """Rig `rig`'s account and role, new; its password."""
        return self._create(rig, rig_role(rig), rig_acls(self.prefix, rig), RIG_MARK)

    def reset_tester_code(self, name: str) -> str:
        """A new access code for tester `name` (its live sessions are closed); the account
        and role are made again when the broker lost them."""
        if self.client(name) is None:
            return self.create_tester(name)
        self._ensure_role(tester_role(name), tester_acls(self.prefix, name))
        code = new_password()
        self.link.command({"command": "setClientPassword", "username": name, "password": code})
        return code

    def set_tester_enabled(self, name: str, enabled: bool) -> None:
        """Enable tester `name`'s account, or disable it: the plugin then closes its live
        sessions at once and refuses its next login. An account the broker lost stays lost
        when disabling (nothing can log in); enabling it fails (`reset-code` makes it anew)."""
        if not enabled and self.client(name) is None:
            return
        command = "enableClient" if enabled else "disableClient"
        self.link.command({"command": command, "username": name})

    def remove_tester(self, name: str) -> None:
        """Delete tester `name`'s account (its live sessions are closed) and its role."""
        if self.made_by_lab(name, TESTER_MARK):
            self.link.command({"command": "deleteClient", "username": name})
        self.delete_role(tester_role(name))

    def delete_role(self, rolename: str) -> None:
        """Delete a role if it exists."""
        (answer,) = self.link.commands({"command": "deleteRole", "rolename": rolename})
        if "error" in answer and "not found" not in str(answer["error"]).lower():
            raise DynsecError("deleteRole", str(answer["error"]))

    def undo(self, username: str, rolename: str) -> None:
        """Best effort: remove an account just made, when the store could not record it."""
        with contextlib.suppress(LabBrokerError):
            self.link.commands(
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": rolename},
            )
