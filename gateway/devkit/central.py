"""A real central mosquitto with the dynamic security plugin, for the lab's tests and demos.

`CentralBroker` renders `config/mosquitto/central.conf.template` into a private folder, makes
the plugin's file with `mosquitto_ctrl dynsec init` (an admin, the lab's planner, and its
password), and runs mosquitto on a free loopback port, as `MosquittoBroker` does (whose life
cycle it shares: `start`, `kill`, `terminate`, `close`).
"""

from __future__ import annotations

import glob
import shutil
import string
import subprocess
from pathlib import Path

from gateway.devkit.mosquitto import TEMPLATE_DIR, MosquittoBroker

MOSQUITTO_CTRL = shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl"
DYNSEC_FILE = "dynamic-security.json"


def dynsec_plugin() -> Path | None:
    """The dynamic security plugin Debian's mosquitto ships, if it is installed."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    found += sorted(glob.glob("/usr/lib/mosquitto_dynamic_security.so"))
    return Path(found[0]) if found else None


class CentralBroker(MosquittoBroker):
    """One private central mosquitto: the plugin's file holds only its admin at first."""

    def __init__(
        self,
        admin: str = "planner",
        admin_password: str = "planner-secret",
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
    ):
        self.admin = admin
        self.admin_password = admin_password
        super().__init__(users={}, rigs=(), host=host, port=port)

    @property
    def dynsec_file(self) -> Path:
        """The plugin's JSON file (accounts, roles, salted hashes)."""
        return self.config_dir / DYNSEC_FILE

    def _render(self) -> None:
        """Write the config from the template and the plugin's file; hand them to mosquitto."""
        plugin = dynsec_plugin()
        if plugin is None:
            raise RuntimeError("mosquitto's dynamic security plugin is not installed")
        self.config_dir.mkdir()
        self.state_dir.mkdir()
        template = string.Template((TEMPLATE_DIR / "central.conf.template").read_text())
        self.conf.write_text(
            template.substitute(
                plugin=plugin,
                config_dir=self.config_dir,
                state_dir=self.state_dir,
                port=self.port,
                bind_address=self.host,
            )
        )
        subprocess.run(
            [
                MOSQUITTO_CTRL,
                "dynsec",
                "init",
                str(self.dynsec_file),
                self.admin,
                self.admin_password,
            ],
            check=True,
            capture_output=True,
        )
        (self.config_dir / "passwd").touch()  # unused here; _hand_over sets its mode
        self._hand_over()
