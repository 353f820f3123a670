"""Testbed PDU: an SNMP agent (pysnmp) whose outlets each power a group of nodes at once.

Room: testbed. Imports pysnmp, `bmc` (the `PowerControl` protocol) and `layout`.

Why: sites reboot whole chassis or racks by their power distribution unit
when a node's BMC no longer answers, with the administrator's command
template around net-snmp's `snmpset` (Kadeploy3's grouped `very_hard`
commands, a group file naming which nodes one command powers). The testbed
gets such a PDU so that those commands, Kadeploy's group planning and the
reboot window are shown on a real SNMP exchange that really cuts the power of
every node of an outlet.

The agent speaks SNMP v1/v2c like APC's switched rack PDUs (PowerNet-MIB),
on the columns sites script against:

* `sPDUOutletCtl`  `1.3.6.1.4.1.318.1.1.4.4.2.1.3.<outlet>`, read-write INTEGER:
  set 1 (outletOn), 2 (outletOff) or 3 (outletReboot: off then on); read
  1 when every node of the outlet is on, 2 when every one is off, 4
  (outletUnknown) when they differ. Other values (the delayed variants 5-7)
  are refused with `wrongValue`: this PDU has no delays to honour.
* `sPDUOutletName` `1.3.6.1.4.1.318.1.1.4.5.2.1.3.<outlet>`, read-only
  OCTET STRING: the outlet's nodes, comma-separated short names (what
  `GROUP_SHORT` gives a group command).

Communities: `public` reads, `private` reads and writes (APC's defaults);
another community gets no answer, as from a real agent. GETNEXT is served
(snmpwalk works). The agent runs in the asyncio loop that starts it (the
testbed daemon's); the `PowerControl` calls only start the actions, as for
the BMCs.

Public API::

    OUTLET_CTL_OID; OUTLET_NAME_OID        # (the port, PDU_PORT, and the outlets, outlet_groups: layout)
    @dataclass PDUSpec(address, outlets: dict[int, list[tuple[str, PowerControl]]], port, read_community,
                       write_community)
    await start_pdu(spec) -> PDUAgent        # answering when it returns
    class PDUAgent: port, stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto.api import v2c
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.bmc import PowerControl
from kadeploy_testbed.layout import PDU_PORT, NodeSpec

log = logging.getLogger("kadeploy_testbed.pdu")

OUTLET_CTL_OID = (1, 3, 6, 1, 4, 1, 318, 1, 1, 4, 4, 2, 1, 3)
OUTLET_NAME_OID = (1, 3, 6, 1, 4, 1, 318, 1, 1, 4, 5, 2, 1, 3)
OUTLET_ON, OUTLET_OFF, OUTLET_REBOOT, OUTLET_UNKNOWN = 1, 2, 3, 4
_ACTIONS = {OUTLET_ON: "power_on", OUTLET_OFF: "power_off", OUTLET_REBOOT: "power_cycle"}
BIND_TIMEOUT_SECONDS = 5.0
# APC's default communities: reading, and reading and writing
READ_COMMUNITY, WRITE_COMMUNITY = "public", "private"
# the security names of the two communities
_READ_AREA, _WRITE_AREA = "pdu-read", "pdu-write"


@dataclass
class PDUSpec:
    """Where the agent listens, its communities, and which nodes (name, power) each outlet feeds."""

    address: str
    outlets: dict[int, list[tuple[str, PowerControl]]]
    port: int = PDU_PORT
    read_community: str = READ_COMMUNITY
    write_community: str = WRITE_COMMUNITY


@dataclass
class _Outlets(AbstractMibInstrumController):
    """The two PowerNet-MIB columns over the outlets (pysnmp's instrumentation protocol)."""

    outlets: dict[int, list[tuple[str, PowerControl]]]

    def _objects(self) -> list[tuple[tuple[int, ...], Any]]:
        rows: list[tuple[tuple[int, ...], Any]] = []
        for outlet in sorted(self.outlets):
            rows.append((OUTLET_CTL_OID + (outlet,), lambda outlet=outlet: v2c.Integer(self._state(outlet))))
        for outlet in sorted(self.outlets):
            names = ",".join(name for name, _ in self.outlets[outlet])
            rows.append((OUTLET_NAME_OID + (outlet,), lambda names=names: v2c.OctetString(names)))
        return rows

    def _state(self, outlet: int) -> int:
        states = {power.power_state() for _, power in self.outlets[outlet]}
        return OUTLET_ON if states == {True} else OUTLET_OFF if states == {False} else OUTLET_UNKNOWN

    @staticmethod
    def _in_view(view: str, name: Any, index: int, ctx: dict[str, Any]) -> bool:
        """The community's VACM view: pysnmp's access check (`acFun`), which a controller must call.

        For writes the community must also be the write one: pysnmp's VACM lets
        a security name without a write view write (seen with pysnmp 7.1), so the
        agent checks the request's security name itself.
        """
        check = ctx.get("acFun")
        if check is not None and check(view, (name, None), **dict(ctx, idx=index)):
            return False
        if view != "write":
            return True
        request = ctx["snmpEngine"].observer.get_execution_context("rfc3412.receiveMessage:request")
        return str(request["securityName"]) == _WRITE_AREA

    def read_variables(self, *var_binds: Any, **ctx: Any) -> list[tuple[Any, Any]]:
        objects = dict(self._objects())
        answer = []
        for index, (name, _) in enumerate(var_binds):
            make = objects.get(tuple(name)) if self._in_view("read", name, index, ctx) else None
            answer.append((name, make() if make else v2c.NoSuchInstance()))
        return answer

    def read_next_variables(self, *var_binds: Any, **ctx: Any) -> list[tuple[Any, Any]]:
        objects = self._objects()
        answer = []
        for index, (name, _) in enumerate(var_binds):
            following = [(oid, make) for oid, make in objects
                         if oid > tuple(name) and self._in_view("read", oid, index, ctx)]
            if following:
                oid, make = following[0]
                answer.append((v2c.ObjectIdentifier(oid), make()))
            else:
                answer.append((name, v2c.EndOfMibView()))
        return answer

    def write_variables(self, *var_binds: Any, **ctx: Any) -> list[tuple[Any, Any]]:
        plan: list[tuple[int, int]] = []
        for index, (name, value) in enumerate(var_binds):
            oid = tuple(name)
            if not self._in_view("write", name, index, ctx):
                raise smi_error.NoAccessError(name=name, idx=index)
            if oid[:-1] == OUTLET_NAME_OID and oid[-1] in self.outlets:
                raise smi_error.NotWritableError(name=name, idx=index)
            if oid[:-1] != OUTLET_CTL_OID or oid[-1] not in self.outlets:
                raise smi_error.NoCreationError(name=name, idx=index)
            if not isinstance(value, v2c.Integer):
                raise smi_error.WrongTypeError(name=name, idx=index)
            if int(value) not in _ACTIONS:
                raise smi_error.WrongValueError(name=name, idx=index)
            plan.append((oid[-1], int(value)))
        for outlet, value in plan:  # all checked first: a refused set changes nothing
            for node, power in self.outlets[outlet]:
                log.info("PDU outlet %d %s: %s", outlet, _ACTIONS[value], node)
                getattr(power, _ACTIONS[value])()
        return [(name, value) for name, value in var_binds]


class PDUAgent:
    """A running agent: its SNMP engine and the outlets it serves."""

    def __init__(self, snmp_engine: engine.SnmpEngine, outlets: _Outlets, port: int) -> None:
        self._engine = snmp_engine
        self.outlets = outlets
        self.port = port

    def stop(self) -> None:
        """Close the agent's socket; idempotent."""
        dispatcher = self._engine.transport_dispatcher
        if dispatcher is not None:
            dispatcher.close_dispatcher()


async def start_pdu(spec: PDUSpec) -> PDUAgent:
    """Start the agent in the running loop; returns once its UDP socket is bound."""
    snmp_engine = engine.SnmpEngine()
    transport = udp.UdpTransport().open_server_mode((spec.address, spec.port))
    config.add_transport(snmp_engine, udp.DOMAIN_NAME, transport)
    try:  # pysnmp binds in a task of its own (`_lport`): waiting for it is how a bind error surfaces here
        await asyncio.wait_for(asyncio.shield(transport._lport), BIND_TIMEOUT_SECONDS)
    except (OSError, asyncio.TimeoutError) as exc:
        snmp_engine.transport_dispatcher.close_dispatcher()
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"PDU agent on {spec.address}:{spec.port}: {getattr(exc, 'strerror', None) or exc}") from None
    port = transport.transport.get_extra_info("sockname")[1]
    for area, community, writable in ((_READ_AREA, spec.read_community, False),
                                      (_WRITE_AREA, spec.write_community, True)):
        config.add_v1_system(snmp_engine, area, community)
        for model in (1, 2):  # SNMPv1 and v2c
            config.add_vacm_user(snmp_engine, model, area, "noAuthNoPriv", readSubTree=(1, 3, 6),
                                 writeSubTree=(1, 3, 6) if writable else ())
    outlets = _Outlets(spec.outlets)
    snmp_context = context.SnmpContext(snmp_engine)
    snmp_context.unregister_context_name(v2c.OctetString(""))
    snmp_context.register_context_name(v2c.OctetString(""), outlets)
    for responder in (cmdrsp.GetCommandResponder, cmdrsp.SetCommandResponder, cmdrsp.NextCommandResponder,
                      cmdrsp.BulkCommandResponder):
        responder(snmp_engine, snmp_context)
    snmp_engine.transport_dispatcher.job_started(1)
    return PDUAgent(snmp_engine, outlets, port)


def outlets_of(groups: dict[int, list[NodeSpec]], powers: Mapping[int, PowerControl]
               ) -> dict[int, list[tuple[str, PowerControl]]]:
    """`PDUSpec.outlets` from `layout.outlet_groups` and each node's power (by node index)."""
    return {outlet: [(node.short_name, powers[node.index]) for node in nodes] for outlet, nodes in groups.items()}
