"""VLAN names and addresses (KaVLAN, `kadeploy3 --vlan ID`; reference 3.1 `network/vlan`).

A site that moves nodes between VLANs gives each node one more name per VLAN:
`network/vlan/hostname_suffix` (e.g. `-kavlan-VLAN_ID`) is appended to the
node's short name, `VLAN_ID` replaced by the VLAN, and that name resolves to
the node's address in the VLAN (`graphene-1.nancy.grid5000.fr` in VLAN 4 is
`graphene-1-kavlan-4.nancy.grid5000.fr`). Kadeploy3 resolves these names once,
when the request arrives, and refuses it if one does not resolve; after
`set_vlan` the nodes are reached there. This module is that computation and
that resolution, and the `set_cmd` command line; it imports only
`kadeploy.errors` and `kadeploy.templates`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shlex
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.templates import fill

#: the VLAN `set_vlan` moves nodes back to in SetDeploymentEnv (the site's default one)
DEFAULT_VLAN = "DEFAULT"
#: the placeholder of `hostname_suffix` and `set_cmd`
VLAN_ID = "VLAN_ID"
#: seconds all the names of one request may take to resolve
RESOLVE_TIMEOUT = 30.0

# A VLAN id ends up in host names and in the site's set_cmd: a name label, nothing else
# (matched whole: `$` would let a trailing newline through).
_VLAN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")

Resolver = Callable[..., Awaitable[list[tuple[Any, ...]]]]


def check_vlan_id(vlan: str) -> str:
    """`vlan` if it can name a VLAN; INVALID_VLAN otherwise."""
    if not isinstance(vlan, str) or not _VLAN_ID_PATTERN.fullmatch(vlan):
        shown = ascii(vlan[:80] if isinstance(vlan, str) else vlan)
        raise KadeployError(ErrorCode.INVALID_VLAN,
                            f"Invalid VLAN {shown}: expected a VLAN id (letters, digits and '-', "
                            f"at most 63, not starting with '-')")
    return vlan


def set_vlan_command(template: str, nodes: Sequence[str], vlan: str, user: str) -> str:
    """`network/vlan/set_cmd` for `nodes`: NODES is ` -m <node>` per node, VLAN_ID and USER quoted.

    Filled in one pass (`kadeploy.templates.fill`): a VLAN id or a user name
    can never bring a placeholder that a later substitution would fill.
    """
    check_vlan_id(vlan)
    node_args = "".join(f" -m {shlex.quote(node)}" for node in nodes)
    return fill(template, quoted={VLAN_ID: vlan, "USER": user}, raw={"NODES": node_args})


def vlan_hostname(hostname: str, suffix: str, vlan: str) -> str:
    """The name of `hostname` in VLAN `vlan`: `<short><suffix>.<domain>`, VLAN_ID replaced.

    As Kadeploy3, the replacement applies to the whole name (a suffix such as
    `-vlan.VLAN_ID` may put it in the domain part). A hostname without a
    domain gives `<short><suffix>` (Kadeploy3 appended a lone dot).
    """
    short, dot, domain = hostname.partition(".")
    name = f"{short}{suffix}.{domain}" if dot else f"{short}{suffix}"
    return fill(name, raw={VLAN_ID: vlan})


async def resolve_vlan_addresses(hostnames: Iterable[str], suffix: str, vlan: str, *,
                                 timeout: float = RESOLVE_TIMEOUT,
                                 resolver: Resolver | None = None) -> dict[str, str]:
    """hostname -> IPv4 address of each node in VLAN `vlan`; INVALID_VLAN naming what did not resolve.

    IPv4, because PXE profiles are named after it (`ip_hex`) and the node's
    firmware asks for that name. `resolver` is `loop.getaddrinfo` unless a
    test gives its own; the names are resolved concurrently, all within `timeout`.
    """
    check_vlan_id(vlan)
    names = {hostname: vlan_hostname(hostname, suffix, vlan) for hostname in hostnames}
    getaddrinfo = resolver or asyncio.get_running_loop().getaddrinfo

    async def resolve(name: str) -> str:
        answers = await getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
        for answer in answers:
            address = str(answer[4][0])
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                continue
            return address
        raise OSError(f"no IPv4 address for {name}")

    tasks = {hostname: asyncio.ensure_future(resolve(name)) for hostname, name in names.items()}
    if not tasks:
        return {}
    try:
        _, pending = await asyncio.wait(tasks.values(), timeout=timeout)
    finally:
        for task in tasks.values():
            task.cancel()  # those still waiting: the timeout, or the request was cancelled
    addresses: dict[str, str] = {}
    unresolved: list[str] = []
    for hostname, task in tasks.items():
        if task in pending:
            unresolved.append(f"{names[hostname]} (no answer within {timeout:g}s)")
        elif task.exception() is not None:
            unresolved.append(f"{names[hostname]} ({_reason(task.exception())})")
        else:
            addresses[hostname] = task.result()
    if unresolved:
        shown = ", ".join(unresolved[:5]) + (f" and {len(unresolved) - 5} more" if len(unresolved) > 5 else "")
        raise KadeployError(ErrorCode.INVALID_VLAN,
                            f"Cannot resolve the VLAN {vlan} name of {len(unresolved)} node(s): {shown}; "
                            f"the names are <node><hostname_suffix>.<domain> with "
                            f"network/vlan/hostname_suffix {suffix!r}")
    return addresses


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
