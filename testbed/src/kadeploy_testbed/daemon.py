"""testbed room: the testbed daemon — every node's supervisor, the BMCs, the HTTP boot server.

It also serves the nodes' Redfish systems (sushy-tools, `redfish.py`) and a PDU
whose outlets each power a group of nodes (SNMP, `pdu.py`), over the same
supervisors as the IPMI BMCs.

Why one daemon: 32 nodes must idle cheaply, so one asyncio process emulates all
firmware and power logic (plus pyghmi's I/O and dispatch threads for every BMC),
and the nodes themselves are only their own processes (sshd, nc) in their
namespaces. `kadeploy-testbed up` starts it detached (`python -m
kadeploy_testbed.daemon --dir DIR`); the CLI talks to it over the unix socket
`<dir>/run/control.sock`, one JSON request per line, one JSON answer per line.
Imports `layout`, `state`, `supervisor`, `bmc`, `redfish`, `pdu`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from kadeploy.errors import KadeployError
from kadeploy_testbed import bmc, pdu, redfish
from kadeploy_testbed.configdir import DEPLOY_KERNEL, redfish_tls_paths
from kadeploy_testbed.layout import (BRIDGE, PREFIX_LEN, SERVER_IP, VLANS, Layout, NodeSpec, bridge_mac,
                                     outlet_groups)
from kadeploy_testbed.linkfaults import apply_link_faults
from kadeploy_testbed.state import FAULT_KINDS, TestbedState, control_socket, load_state
from kadeploy_testbed.supervisor import HTTP_PORT, NodeSupervisor, TestbedContext, run_command

log = logging.getLogger("kadeploy_testbed.daemon")
REQUEST_TIMEOUT = 60.0


class HTTPBootServer:
    """GET-only static server over the PXE repository, for iPXE (10.200.0.1:8069)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = request.split(b"\r\n", 1)[0].decode(errors="replace").split() + ["", ""]
            path = (self.root / target.split("?", 1)[0].lstrip("/")).resolve()
            if method != "GET" or not path.is_relative_to(self.root) or not path.is_file():
                writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                data = path.read_bytes()
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()


class TestbedDaemon:
    """Owns the supervisors and applies control requests (status, power, fault, vlan)."""

    __test__ = False

    def __init__(self, state: TestbedState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.layout: Layout = state.layout()
        kernel = state.path / "tftpboot" / DEPLOY_KERNEL
        context = TestbedContext(state=state, deploy_kernel_digest=hashlib.sha256(kernel.read_bytes()).hexdigest(),
                                 rng=random.Random(state.seed))
        self.supervisors = {node.index: NodeSupervisor(node, context, loop) for node in self.layout.nodes}
        self.bmcs: bmc.BMCServer | None = None
        self.redfish: redfish.RedfishService | None = None
        self.pdu: pdu.PDUAgent | None = None
        self.stopping = asyncio.Event()

    async def start(self) -> list[asyncio.AbstractServer]:
        for supervisor in self.supervisors.values():
            supervisor.open_control_fifo()
        self.bmcs = bmc.start_bmcs(
            bmc.BMCSpec(address=node.bmc_ip, power=self.supervisors[node.index], user=self.state.bmc_user,
                        password=self.state.bmc_password, name=node.bmc_hostname)
            for node in self.layout.nodes)
        self.redfish = await asyncio.to_thread(self._start_redfish)
        self.pdu = await pdu.start_pdu(pdu.PDUSpec(SERVER_IP, pdu.outlets_of(outlet_groups(self.layout),
                                                                            self.supervisors)))
        http = await asyncio.start_server(HTTPBootServer(self.state.path / "tftpboot").handle, SERVER_IP, HTTP_PORT)
        sock_path = control_socket(self.state.path)
        sock_path.unlink(missing_ok=True)
        control = await asyncio.start_unix_server(self.handle_control, path=str(sock_path))
        sock_path.chmod(0o600)
        for index in self.state.faults:
            await self.apply_fault(self.layout.nodes[int(index) - 1], None, None)
        return [http, control]

    async def stop(self) -> None:
        await asyncio.gather(*(supervisor.shutdown() for supervisor in self.supervisors.values()),
                             return_exceptions=True)
        if self.bmcs is not None:
            self.bmcs.stop()
        if self.redfish is not None:
            await asyncio.to_thread(self.redfish.stop)
        if self.pdu is not None:
            self.pdu.stop()

    def _start_redfish(self) -> redfish.RedfishService:
        """sushy-tools' emulator over the same supervisors as the IPMI BMCs (redfish.py)."""
        cert, key = redfish_tls_paths(self.state.path)
        redfish.ensure_certificate(cert, key, SERVER_IP)
        return redfish.start_redfish(redfish.RedfishSpec(
            address=SERVER_IP, systems={node.short_name: self.supervisors[node.index] for node in self.layout.nodes},
            auth_dir=self.state.path / "run", user=self.state.bmc_user, password=self.state.bmc_password,
            cert=cert, key=key))

    async def handle_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            try:
                answer: dict[str, Any] = {"ok": True, **await self.dispatch(json.loads(line))}
            except KadeployError as exc:
                answer = {"ok": False, "error": exc.message}
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    def _node(self, name: str) -> NodeSpec:
        return self.layout.find(name)

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "status":
            return {"nodes": [self.supervisors[node.index].status() for node in self.layout.nodes],
                    "vlans": self.state.vlans, "faults": self.state.faults}
        if op == "power":
            node = self._node(request["node"])
            action = request["action"]
            if action not in ("on", "off", "cycle", "reset"):
                raise KadeployError(4, f"power {action}: expected on, off, cycle or reset")
            await self.supervisors[node.index].act(action)
            return {}
        if op == "fault":
            await self.apply_fault(self._node(request["node"]), request["kind"], request["value"])
            return {}
        if op == "vlan":
            nodes = [self._node(name) for name in request["nodes"]]
            await self.set_vlan(nodes, request["vlan"])
            return {}
        if op == "stop":
            self.stopping.set()
            return {}
        raise KadeployError(4, f"unknown request {op!r}")

    async def apply_fault(self, node: NodeSpec, kind: str | None, value: str | None) -> None:
        """Record a fault (kind/value) and (re)apply every fault of `node` to the system."""
        key = str(node.index)
        if kind is None:
            await self._apply_faults(node)
            return
        if kind not in FAULT_KINDS:
            raise KadeployError(4, f"fault {kind}: expected one of {', '.join(FAULT_KINDS)}")
        before = dict(self.state.faults.get(key, {}))
        faults = dict(before)
        if value in (None, "", "off", "0", "none"):
            faults.pop(kind, None)
        else:
            faults[kind] = str(value)
        self._record_faults(key, faults)
        try:
            await self._apply_faults(node)
        except KadeployError:
            # a fault this host cannot apply is not recorded: the others stay as they were
            self._record_faults(key, before)
            await self._apply_faults(node)
            raise

    def _record_faults(self, key: str, faults: dict[str, str]) -> None:
        if faults:
            self.state.faults[key] = faults
        else:
            self.state.faults.pop(key, None)
        self.state.save()

    async def _apply_faults(self, node: NodeSpec) -> None:
        key = str(node.index)
        faults = self.state.faults.get(key, {})
        if self.bmcs is not None:
            self.bmcs.set_silent(node.bmc_ip, faults.get("bmc-silent") not in (None, "false", "no"))
        loop_device = self.state.loops.get(key)
        if loop_device:
            mode = "--setro" if faults.get("disk-fail") not in (None, "false", "no") else "--setrw"
            await run_command("blockdev", mode, loop_device)
        await apply_link_faults(node, faults, run_command)

    async def set_vlan(self, nodes: list[NodeSpec], vlan: str) -> None:
        """Move nodes to VLAN `vlan` (DEFAULT: back to the default one); the host routes to each VLAN.

        This kernel has no bridge VLAN filtering, so a VLAN is its own bridge
        `ktb0v<ID>`: a node there is cut off at layer 2 from the default VLAN, and
        the server reaches it through a /32 route, as a Grid'5000 frontend routes
        to a KaVLAN. In a VLAN the node has its VLAN address (layout), as the
        VLAN's DHCP would give it; its default address leads nowhere there.
        The address changes at once rather than at the next boot, so that a
        node moved while running is reachable under the name of where it is.
        """
        if vlan.upper() == "DEFAULT":
            vid = None
        elif vlan.isdigit() and int(vlan) in VLANS:
            vid = int(vlan)
        else:
            raise KadeployError(9, f"VLAN {vlan}: this testbed's VLANs are {', '.join(map(str, VLANS))} "
                                   "and DEFAULT")
        for node in nodes:
            key = str(node.index)
            before = self.state.vlans.get(key)
            if before is not None:
                await run_command("ip", "route", "del", f"{node.address(before)}/32")
            bridge = BRIDGE if vid is None else f"{BRIDGE}v{vid}"
            if not Path("/sys/class/net", bridge).exists():
                await self._ip("link", "add", bridge, "address", bridge_mac(vid or 0), "type", "bridge")
                await self._ip("link", "set", bridge, "up")
            await self._ip("link", "set", node.host_veth, "master", bridge)
            address = node.address(vid)
            # flush, then add: deleting a primary address would take a secondary added before with it
            await self._ip("-n", node.netns, "addr", "flush", "dev", "eth0", "scope", "global")
            await self._ip("-n", node.netns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
            if vid is None:
                self.state.vlans.pop(key, None)
            else:
                # the server's address as source: the node has no route to the host's others
                await self._ip("route", "replace", f"{address}/32", "dev", bridge, "src", SERVER_IP)
                self.state.vlans[key] = vid
        self.state.save()

    async def _ip(self, *args: str) -> None:
        status, output = await run_command("ip", *args)
        if status != 0:
            raise KadeployError(15, f"ip {' '.join(args)}: {output.strip()}")


async def serve(directory: Path) -> None:
    loop = asyncio.get_running_loop()
    state = load_state(directory)
    daemon = TestbedDaemon(state, loop)
    servers = await daemon.start()
    state.daemon_pid = os.getpid()
    state.save()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stopping.set)
    log.info("testbed daemon ready: %d nodes", len(daemon.supervisors))
    print("ready", flush=True)
    await daemon.stopping.wait()
    for server in servers:
        server.close()
    await daemon.stop()
    control_socket(directory).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kadeploy_testbed.daemon")
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args.dir))
    except KadeployError as exc:
        print(f"kadeploy-testbed daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
