"""testbed/qemu room: a Redfish front to the QEMU mode's BMCs (sushy-tools over ipmi_sim).

Why: in QEMU mode the VM's power belongs to its ipmi_sim BMC (it starts and
ends the QEMU process), so a Redfish service must act through that BMC, as
the Redfish side of a real BMC that also speaks IPMI shares one power state
with it. `BMCPower` is the `PowerControl` that `kadeploy_testbed.redfish`'s
sushy-tools systems driver calls: each action is `ipmitool chassis power ...`
against the node's ipmi_sim (`bmcsim.power`), each state read `power status`.
ipmi_sim's own refusals come back as Redfish errors: it refuses a reset of a
machine that is off, so ForceRestart on an off VM is an HTTP error, not a
success that did nothing.

This module only builds the service (`start_qemu_redfish`); `kadeploy-testbed
up --mode qemu` does not start one yet (tests/qemu/test_redfish_qemu.py does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kadeploy_testbed.qemu import bmcsim
from kadeploy_testbed.redfish import RedfishService, RedfishSpec, start_redfish

# seconds for one ipmitool call inside a Redfish request (the client's own timeout is longer)
IPMI_TIMEOUT = 20.0


@dataclass(frozen=True)
class BMCPower:
    """`PowerControl` over one ipmi_sim BMC, by ipmitool (blocking: called from werkzeug's request threads)."""

    address: str
    user: str
    password: str
    port: int = bmcsim.IPMI_PORT

    def _act(self, action: str) -> None:
        bmcsim.power(self.address, self.user, self.password, action, port=self.port, timeout=IPMI_TIMEOUT)

    def power_on(self) -> None:
        self._act("on")

    def power_off(self) -> None:
        self._act("off")

    def power_cycle(self) -> None:
        self._act("cycle")

    def power_reset(self) -> None:
        self._act("reset")

    def power_state(self) -> bool:
        return bmcsim.power_status(self.address, self.user, self.password, port=self.port,
                                   timeout=IPMI_TIMEOUT) == "on"


def start_qemu_redfish(address: str, bmcs: Mapping[str, BMCPower], auth_dir: Path, *, port: int,
                       user: str, password: str, cert: Path | None = None, key: Path | None = None) -> RedfishService:
    """sushy-tools serving one system per VM (by node short name), acting through each VM's BMC."""
    return start_redfish(RedfishSpec(address, dict(bmcs), auth_dir, port=port, user=user, password=password,
                                     cert=cert, key=key))
