"""Built-in power drivers, usable in a cluster's remoteops instead of a command template.

* `IPMIDriver` drives a BMC with `ipmitool` (IPMI v2 over lanplus by default).
* `RedfishDriver` speaks Redfish's `ComputerSystem.Reset` over HTTPS with httpx.

Credentials come from the server's configuration only: nothing a user sends
reaches these objects. ipmitool gets the password through its environment
(`-E`, `IPMI_PASSWORD`), never on the command line where `ps` would show it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx

from kadeploy.boot.bmcsession import session_refused
from kadeploy.boot.process import run_process
from kadeploy.vocabulary import REGISTRIES, Kind

PowerAction = Literal["on", "off", "soft_off", "reset", "cycle", "graceful_restart"]
POWER_ACTIONS: tuple[str, ...] = ("on", "off", "soft_off", "reset", "cycle", "graceful_restart")


class PowerDriverError(Exception):
    """The BMC refused or did not answer; the message is what the node's error shows."""


class SessionRefused(PowerDriverError):
    """The BMC session could not be opened (busy BMC, no free slot): the action was not sent."""


class PowerDriver(Protocol):
    """What the escalation needs from a driver; `bmc` keys the per-BMC interval gate."""

    bmc: str

    async def power(self, action: PowerAction, timeout: float = 30.0) -> None: ...

    async def status(self, timeout: float = 30.0) -> str: ...


_IPMI_ACTIONS = {"on": "on", "off": "off", "soft_off": "soft", "reset": "reset", "cycle": "cycle"}


class IPMIDriver:
    """ipmitool against one BMC."""

    def __init__(
        self,
        address: str,
        user: str,
        password: str,
        interface: str = "lanplus",
        *,
        port: int | None = None,
        ipmitool: str = "ipmitool",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.interface = interface
        self.port = port
        self.ipmitool = ipmitool
        self.extra_args = tuple(extra_args)
        self.bmc = f"{address}:{port}" if port else address

    def command_line(self, *arguments: str) -> list[str]:
        """The argv of one ipmitool call (exec'ed, no shell: nothing to quote)."""
        argv = [self.ipmitool, "-I", self.interface, "-H", self.address]
        if self.port:
            argv += ["-p", str(self.port)]
        argv += ["-U", self.user, "-E", *self.extra_args, *arguments]
        return argv

    def power_command_line(self, action: PowerAction) -> list[str]:
        try:
            verb = _IPMI_ACTIONS[action]
        except KeyError:
            raise PowerDriverError(f"IPMI has no {action!r} power action") from None
        return self.command_line("chassis", "power", verb)

    async def _run(self, argv: list[str], timeout: float) -> str:
        result = await run_process(argv, timeout, env={"IPMI_PASSWORD": self.password})
        if result.timed_out:
            raise PowerDriverError(f"ipmitool on {self.bmc} timed out after {timeout:g}s")
        if result.exit_status != 0:
            message = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_status}"]
            error = SessionRefused if session_refused(result.stderr) else PowerDriverError
            raise error(f"ipmitool on {self.bmc}: {message[0]}")
        return result.stdout.strip()

    async def power(self, action: PowerAction, timeout: float = 30.0) -> None:
        await self._run(self.power_command_line(action), timeout)

    async def status(self, timeout: float = 30.0) -> str:
        return await self._run(self.command_line("chassis", "power", "status"), timeout)


_REDFISH_ACTIONS = {
    "on": "On",
    "off": "ForceOff",
    "soft_off": "GracefulShutdown",
    "reset": "ForceRestart",
    "cycle": "PowerCycle",
    "graceful_restart": "GracefulRestart",
}


class RedfishDriver:
    """Redfish `ComputerSystem.Reset` and `PowerState` of one system.

    `address` is what a cluster file gives: a BMC host (`bmc-1.site`, then
    `https://bmc-1.site` and system `system_id`), a base URL, or the URL of
    the system itself (`https://bmc.site:8443/redfish/v1/Systems/node-1`), as
    when one Redfish service (a chassis manager, sushy-tools) serves several
    nodes. `verify` is True (the system's CAs), False, or a CA file. A
    malformed address fails the node's power action with the reason, not the
    whole operation.
    """

    def __init__(
        self,
        address: str,
        user: str,
        password: str,
        system_id: str = "1",
        *,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.system_id, self.address_error = _split_redfish_address(address, system_id)
        self.user = user
        self.password = password
        self.verify = verify
        self._context: ssl.SSLContext | None = None
        self.transport = transport
        self.bmc = self.base_url

    @property
    def system_path(self) -> str:
        return f"{_SYSTEMS_PATH}/{self.system_id}"

    def _tls(self) -> bool | ssl.SSLContext:
        """`verify` as httpx takes it: a CA file becomes a context (read once, on first use)."""
        if not isinstance(self.verify, str):
            return self.verify
        if self._context is None:
            try:
                self._context = ssl.create_default_context(cafile=self.verify)
            except (OSError, ssl.SSLError) as exc:
                raise PowerDriverError(f"Redfish {self.bmc}: CA file {self.verify}: {exc}") from None
        return self._context

    def _client(self, timeout: float) -> httpx.AsyncClient:
        if self.address_error:
            raise PowerDriverError(self.address_error)
        return httpx.AsyncClient(
            base_url=self.base_url,
            auth=(self.user, self.password),
            verify=self._tls(),
            timeout=timeout,
            transport=self.transport,
        )

    async def power(self, action: PowerAction, timeout: float = 30.0) -> None:
        try:
            reset_type = _REDFISH_ACTIONS[action]
        except KeyError:
            raise PowerDriverError(f"Redfish has no {action!r} power action") from None
        url = f"{self.system_path}/Actions/ComputerSystem.Reset"
        try:
            async with self._client(timeout) as client:
                response = await client.post(url, json={"ResetType": reset_type})
        except httpx.HTTPError as exc:
            raise PowerDriverError(f"Redfish {self.bmc}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code >= 300:
            raise PowerDriverError(f"Redfish {self.bmc}: {reset_type} refused with HTTP {response.status_code}"
                                   f"{_redfish_message(response)}")

    async def status(self, timeout: float = 30.0) -> str:
        try:
            async with self._client(timeout) as client:
                response = await client.get(self.system_path)
        except httpx.HTTPError as exc:
            raise PowerDriverError(f"Redfish {self.bmc}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code >= 300:
            raise PowerDriverError(f"Redfish {self.bmc}: cannot read PowerState: HTTP {response.status_code}"
                                   f"{_redfish_message(response)}")
        try:
            return str(response.json()["PowerState"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PowerDriverError(f"Redfish {self.bmc}: cannot read PowerState ({exc.__class__.__name__})") from None


_SYSTEMS_PATH = "/redfish/v1/Systems"
# what of a Redfish error body goes into a node's error message
_MESSAGE_LIMIT = 300


def _split_redfish_address(address: str, system_id: str) -> tuple[str, str, str]:
    """(base URL, system id, error) of a cluster file's Redfish `address`."""
    text = address.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return base, system_id, f"Redfish address {address!r}: expected [https://]HOST[:PORT][{_SYSTEMS_PATH}/ID]"
    if not path or path == "/redfish/v1":
        return base, system_id, ""
    prefix = f"{_SYSTEMS_PATH}/"
    tail = path[len(prefix):] if path.startswith(prefix) else ""
    if not tail or "/" in tail:
        return base, system_id, f"Redfish address {address!r}: a path must be {_SYSTEMS_PATH}/<system id>"
    return base, tail, ""


def _redfish_message(response: httpx.Response) -> str:
    """`: <message>` from a Redfish error body (`error.message`, or its first extended info), if any."""
    try:
        error = response.json().get("error", {})
        message = error.get("message") or (error.get("@Message.ExtendedInfo") or [{}])[0].get("Message")
    except (ValueError, AttributeError, TypeError, IndexError):
        return ""
    if not isinstance(message, str) or not message.strip():
        return ""
    return f": {' '.join(message.split())[:_MESSAGE_LIMIT]}"


#: The built-in drivers a cluster file may name in `remoteops/*[i].driver`; each is
#: built as `driver(address, user, password)`.
POWER_DRIVERS = REGISTRIES[Kind.POWER_DRIVER]
POWER_DRIVERS.declare("ipmi", IPMIDriver, "ipmitool against the node's BMC (IPMI v2, lanplus)")
POWER_DRIVERS.declare("redfish", RedfishDriver, "Redfish ComputerSystem.Reset over HTTPS")
